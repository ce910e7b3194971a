"""Manifests: the videos of a batch, each with its annotation, as JSON Lines or CSV.

JSON Lines (`.jsonl`; blank lines skipped), one object a line::

    {"video": "clips/dog.mp4", "annotation": "masks/dog.png"}
    {"video": "clips/cat", "annotation": "coco/cat.json", "name": "cat-1"}
    {"video": "clips/horse.mp4", "annotation": "points/horse.json", "set": {"topk": 5}}

CSV (any other name): a header naming the same columns, then a row a video (an empty cell is
an absent key; `set` holds space-separated KEY=VALUE pairs).

- `video`: a video file or a folder of frames; `annotation`: a mask image, a folder of masks
  named by frame index, a COCO or YouTube-VIS JSON file, or a colortrack keypoints JSON file.
  Relative paths are read from the manifest's folder.
- `name` (default: the video's file stem): the video's results folder under the output folder.
- `set`: tracking settings for this video alone, over the batch's (PropagationConfig keys).

Everything is checked before any work (the settings by the tracking runner): a missing file,
an unknown key, two videos with one name, or an output folder that is or holds an input is
refused with the manifest line named.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from colortrack.data.coco import is_coco
from colortrack.data.files import reason
from colortrack.data.keypoints import load_json
from colortrack.errors import ColortrackError
from colortrack.validate import resolved

KEYS = ("video", "annotation", "name", "set")


@dataclass(frozen=True)
class Entry:
    """One video of a manifest: `points` when its annotation is keypoints, not masks."""

    line: int
    video: Path
    annotation: Path
    name: str
    points: bool = False
    settings: tuple[str, ...] = ()


class _Refused(Exception):
    """A problem with one manifest line (the caller adds the file and line)."""


def read_manifest(path: str | Path, out: str | Path) -> list[Entry]:
    """Every entry of the manifest at `path`, checked against the output folder `out`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ColortrackError(f"{path}: cannot read the manifest ({reason(error)})") from None
    rows = _json_lines(path, text) if path.suffix.lower() == ".jsonl" else _csv_rows(path, text)
    entries, names = [], {}
    for line, row in rows:
        try:
            entry = _entry(path.parent, line, row)
        except _Refused as error:
            raise ColortrackError(f"{path}:{line}: {error}") from None
        if entry.name in names:
            raise ColortrackError(f"{path}:{line}: the name {entry.name!r} is line "
                                  f"{names[entry.name]}'s too; give each video its own name")
        names[entry.name] = line
        entries.append(entry)
    if not entries:
        raise ColortrackError(f"{path}: the manifest lists no videos")
    _check_outputs(path, entries, Path(out))
    return entries


def _json_lines(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ColortrackError(f"{path}:{number}: not JSON ({error.msg})") from None
        if not isinstance(row, dict):
            raise ColortrackError(f"{path}:{number}: a line must be a JSON object")
        rows.append((number, row))
    return rows


def _csv_rows(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise ColortrackError(f"{path}: the manifest is empty")
    header = [h.strip() for h in header]
    unknown = [h for h in header if h not in KEYS]
    if unknown:
        raise ColortrackError(f"{path}:1: unknown column {unknown[0]!r}; a video takes "
                              f"{', '.join(KEYS)}")
    rows = []
    for cells in reader:
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > len(header):
            raise ColortrackError(f"{path}:{reader.line_num}: {len(cells)} cells for "
                                  f"{len(header)} columns")
        row: dict[str, Any] = {k: c.strip() for k, c in zip(header, cells, strict=False)
                               if c.strip()}
        if "set" in row:
            row["set"] = row["set"].split()
        rows.append((reader.line_num, row))
    return rows


def _entry(root: Path, line: int, row: dict[str, Any]) -> Entry:
    unknown = sorted(set(row) - set(KEYS))
    if unknown:
        raise _Refused(f"unknown key {unknown[0]!r}; a video takes {', '.join(KEYS)}")
    for key in ("video", "annotation"):
        if not isinstance(row.get(key), str) or not row[key]:
            raise _Refused(f"{key!r} is required (a path)")
    video, annotation = root / row["video"], root / row["annotation"]
    for file in (video, annotation):
        if not file.exists():
            raise _Refused(f"{file}: not found")
    name = row.get("name", video.stem if video.is_file() else video.name)
    if (not isinstance(name, str) or not name or name.startswith(".") or "/" in name
            or "\\" in name):
        raise _Refused(f"name {name!r} must be a folder name (not hidden, no slashes)")
    return Entry(line, video, annotation, name, _is_points(annotation), _settings(row))


def _settings(row: dict[str, Any]) -> tuple[str, ...]:
    given = row.get("set", ())
    if isinstance(given, dict):
        given = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}"
                 for k, v in given.items()]
    if not isinstance(given, list | tuple) or not all(isinstance(p, str) for p in given):
        raise _Refused("'set' must be an object of settings (or KEY=VALUE strings)")
    return tuple(given)  # the tracking runner checks them, before any work


def _is_points(annotation: Path) -> bool:
    """Keypoints (colortrack's JSON) rather than masks (images, a folder, COCO JSON)."""
    if annotation.suffix.lower() != ".json" or not annotation.is_file():
        return False
    try:
        return not is_coco(load_json(annotation))
    except ColortrackError as error:
        raise _Refused(str(error)) from None


def _ancestors(paths: Iterable[Path]) -> dict[Path, Path]:
    """Each folder above the given paths, mapped to a path below it."""
    above = {}
    for path in paths:
        for parent in path.parents:
            above.setdefault(parent, path)
    return above


def _check_outputs(manifest: Path, entries: list[Entry], out: Path) -> None:
    """No video's folder may be an input, lie inside an input folder, or hold an input."""
    inputs = {resolved(manifest): 0}
    for entry in entries:
        for file in (entry.video, entry.annotation):
            inputs.setdefault(resolved(file), entry.line)
    folders = {p: line for p, line in inputs.items() if p.is_dir()}
    holding = _ancestors(inputs)
    for entry in entries:
        folder = resolved(out / entry.name)
        where = f"{manifest}:{entry.line}: the output {out / entry.name}"
        if folder in inputs:
            raise ColortrackError(f"{where} is an input; choose another --out or name")
        inside = next((p for p in folder.parents if p in folders), None)
        if inside is not None:
            raise ColortrackError(f"{where} lies inside the input {inside}; choose an --out "
                                  "outside it")
        if folder in holding:
            raise ColortrackError(f"{where} holds the input {holding[folder]}; choose another "
                                  "--out or name")

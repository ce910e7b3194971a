"""Keypoint files: colortrack's own JSON format and CSV tracks (BADJA, JHMDB: their modules).

The colortrack keypoint format (``colortrack-keypoints/1``) is one JSON object::

    {"format": "colortrack-keypoints/1",
     "names": ["nose", "tail"],
     "skeleton": [[0, 1]],
     "frames": [
      {"frame": 0, "points": [[312.5, 140.0, 1], [401.0, 188.25, 0]]},
      {"frame": 5, "points": [[318.0, 142.5, 1], [405.5, 190.0, 1]]}
     ]}

- ``names``: one non-empty string per point, all different, at least one point.
- ``skeleton`` (may be omitted or empty): pairs ``[i, j]`` of 0-based indices into ``names``,
  drawn as lines.
- ``frames``: at least one entry; ``frame`` is a 0-based frame index of the video (each index at
  most once) and ``points`` holds exactly one ``[x, y, visible]`` per name, in the same order.
  ``x`` (column) and ``y`` (row) are finite numbers in pixels of the video frame at its stored
  resolution; pixel (0, 0) covers [0, 1) x [0, 1). ``visible`` is 0 or 1 (true/false also read).
  A point that is not visible still needs finite coordinates (any value: they are ignored).
- No other keys are allowed, so a misspelt key is an error rather than silently ignored.

An annotation file for tracking is the same format: the entry with the smallest frame index
(usually 0) gives the points to track; later entries are corrections, which replace the tracked
points of their frames and are tracked on. Tracks are written in it too, and as CSV.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from colortrack.data.files import atomic_write_bytes
from colortrack.errors import ColortrackError

FORMAT = "colortrack-keypoints/1"
Frame = tuple[int, np.ndarray, np.ndarray]  # (frame index, xy (N, 2) float32, visible (N,) bool)
Skeleton = tuple[tuple[int, int], ...]


@dataclass(frozen=True, eq=False)
class Keypoints:
    """The points of one frame: names, (N, 2) float32 x/y pixels, (N,) bool visibility."""

    names: tuple[str, ...]
    xy: np.ndarray
    visible: np.ndarray
    skeleton: tuple[tuple[int, int], ...] = ()


class Invalid(Exception):
    """A problem inside a file, raised with its location and turned into a ColortrackError."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def finite_number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(f"{where} must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise Invalid(f"{where} must be finite, got {value}")
    return number


MAX_FRAME = 10**9  # a frame index past any video (a day at 10,000 fps)
MAX_COORDINATE = 1e6  # pixels; keeps points finite in float32 and far beyond any frame


def load_json(path: Path) -> Any:
    """Parse strictly: NaN/Infinity literals and bad UTF-8 are errors, as are absurd nestings."""
    if not path.is_file():
        raise ColortrackError(f"{path}: keypoint file not found")

    def reject(token: str) -> None:
        raise Invalid(f"{token} is not allowed in JSON")

    try:
        return json.loads(path.read_bytes().decode("utf-8"), parse_constant=reject)
    except Invalid as error:
        raise ColortrackError(f"{path}: {error}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise ColortrackError(f"{path}: not valid JSON ({error})") from None


def _parse_track(data: Any) -> tuple[tuple[str, ...], Skeleton, list[Frame]]:
    if not isinstance(data, dict):
        raise Invalid("the top level must be a JSON object")
    if data.get("format") != FORMAT:
        raise Invalid(f'"format" must be "{FORMAT}", got {data.get("format")!r}')
    unknown = sorted(set(data) - {"format", "names", "skeleton", "frames"})
    if unknown:
        raise Invalid(f"unknown keys {unknown}")
    names = data.get("names")
    if not isinstance(names, list) or not names:
        raise Invalid('"names" must be a non-empty list of strings')
    if not all(isinstance(name, str) and name for name in names):
        raise Invalid('"names" must hold non-empty strings')
    if len(set(names)) != len(names):
        raise Invalid('"names" must all be different')
    skeleton = data.get("skeleton", [])
    if not isinstance(skeleton, list):
        raise Invalid('"skeleton" must be a list of [i, j] pairs')
    for k, pair in enumerate(skeleton):
        valid = isinstance(pair, list) and len(pair) == 2 and all(map(_is_int, pair))
        if not valid or not all(0 <= i < len(names) for i in pair):
            raise Invalid(f"skeleton[{k}] must be a pair of point indices 0..{len(names) - 1}")
    frames = data.get("frames")
    if not isinstance(frames, list) or not frames:
        raise Invalid('"frames" must be a non-empty list')
    parsed = [_parse_frame(entry, k, len(names)) for k, entry in enumerate(frames)]
    indices = [frame for frame, _, _ in parsed]
    if len(set(indices)) != len(indices):
        raise Invalid("a frame index appears more than once")
    pairs = tuple((int(i), int(j)) for i, j in skeleton)
    return tuple(names), pairs, sorted(parsed, key=lambda entry: entry[0])


def _parse_frame(entry: Any, k: int, count: int) -> Frame:
    where = f"frames[{k}]"
    if not isinstance(entry, dict) or set(entry) != {"frame", "points"}:
        raise Invalid(f'{where} must be an object with exactly "frame" and "points"')
    if not _is_int(entry["frame"]) or not 0 <= entry["frame"] <= MAX_FRAME:
        raise Invalid(f"{where}.frame must be a frame index 0..{MAX_FRAME}")
    points = entry["points"]
    if not isinstance(points, list) or len(points) != count:
        raise Invalid(f"{where}.points must list {count} points, one per name")
    xy = np.zeros((count, 2), dtype=np.float32)
    visible = np.zeros(count, dtype=bool)
    for i, point in enumerate(points):
        spot = f"{where}.points[{i}]"
        if not isinstance(point, list) or len(point) != 3:
            raise Invalid(f"{spot} must be [x, y, visible]")
        x, y = finite_number(point[0], f"{spot} x"), finite_number(point[1], f"{spot} y")
        if max(abs(x), abs(y)) > MAX_COORDINATE:
            raise Invalid(f"{spot} lies beyond {MAX_COORDINATE:g} pixels")
        xy[i] = x, y
        if point[2] not in (0, 1) or isinstance(point[2], float):
            raise Invalid(f"{spot} visible must be 0 or 1, got {point[2]!r}")
        visible[i] = bool(point[2])
    return entry["frame"], xy, visible


def read_track_json(path: str | Path) -> tuple[tuple[str, ...], Skeleton, list[Frame]]:
    """Read every frame of a keypoint file: (names, skeleton, frames sorted by frame index)."""
    path = Path(path)
    try:
        return _parse_track(load_json(path))
    except Invalid as error:
        raise ColortrackError(f"{path}: {error}") from None


def read_keypoints(path: str | Path) -> tuple[int, Keypoints]:
    """The first annotated frame of a keypoint file (smallest index) and its points."""
    names, skeleton, frames = read_track_json(path)
    frame, xy, visible = frames[0]
    return frame, Keypoints(names, xy, visible, skeleton)


def check_in_image(points: Keypoints, width: int, height: int, path: str | Path) -> None:
    """Visible points must lie in the image ([0, width] x [0, height]); catches wrong scales."""
    x, y = points.xy[:, 0], points.xy[:, 1]
    outside = points.visible & ((x < 0) | (x > width) | (y < 0) | (y > height))
    if outside.any():
        i = int(np.argmax(outside))
        raise ColortrackError(
            f"{path}: visible point {points.names[i]!r} at ({x[i]:g}, {y[i]:g}) lies outside the "
            f"{width}x{height} frame ({int(outside.sum())} points outside)"
        )


def _check_frames(names: Any, skeleton: Any, frames: list[Frame]) -> None:
    for frame, xy, visible in frames:
        if np.shape(xy) != (len(names), 2) or np.shape(visible) != (len(names),):
            raise ValueError(f"frame {frame}: xy must be (N, 2) and visible (N,), N={len(names)}")
        if not np.isfinite(np.asarray(xy, dtype=np.float32)).all():
            raise ValueError(f"frame {frame}: coordinates must be finite float32 values")


def _short(value: float) -> float:
    """The shortest decimal that reads back as the same float32 (keeps files small, exact)."""
    return float(np.format_float_positional(np.float32(value), unique=True, trim="0"))


def write_track_json(path: str | Path, names: Any, skeleton: Any, frames: list[Frame]) -> None:
    """Write tracks in the colortrack keypoint format (one frame per line), atomically."""
    _check_frames(names, skeleton, frames)
    pairs = [[int(i), int(j)] for i, j in skeleton]
    head = {"format": FORMAT, "names": list(names), "skeleton": pairs}
    lines = []
    for frame, xy, visible in sorted(frames, key=lambda entry: int(entry[0])):
        points = [[_short(x), _short(y), int(v)] for (x, y), v in zip(xy, visible, strict=True)]
        lines.append(json.dumps({"frame": int(frame), "points": points}))
    text = json.dumps(head)[:-1] + ', "frames": [\n' + ",\n".join(lines) + "\n]}\n"
    try:
        _parse_track(json.loads(text))  # never write a file that read_track_json would refuse
    except Invalid as error:
        raise ValueError(f"{path}: {error}") from None
    atomic_write_bytes(path, text.encode("utf-8"))


def write_track_csv(path: str | Path, names: Any, frames: list[Frame]) -> None:
    """Write tracks as CSV, one row per point: frame,point,name,x,y,visible; atomically."""
    _check_frames(names, (), frames)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["frame", "point", "name", "x", "y", "visible"])
    for frame, xy, visible in sorted(frames, key=lambda entry: int(entry[0])):
        for i, name in enumerate(names):
            x, y = _short(xy[i][0]), _short(xy[i][1])
            writer.writerow([int(frame), i, name, x, y, int(bool(visible[i]))])
    atomic_write_bytes(path, buffer.getvalue().encode("utf-8"))



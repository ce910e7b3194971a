"""Tracking a manifest of videos: resumable, in parallel processes, and split across machines.

Each video is tracked by the same `Tracker` and written by the same `track_to_dir` /
`track_points_to_dir` as `colortrack track`, into OUT/NAME. The folder appears whole (it is
built beside OUT and renamed in), with `done.json` (settings, frames, seconds) written last
in it: a rerun skips the videos that have it and tracks the rest again, so a batch killed
half-way loses at most the videos it was tracking.

Shares are fixed by manifest order alone: share I of N takes videos I, I + N, I + 2N, ... A
process's share combines `--shard I/N` (job arrays) with torchrun's RANK and WORLD_SIZE, so a
video's results never depend on how the work was split. `workers` processes within a share
take its videos from a queue (track/workers.py), the torch threads split between them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from colortrack.config import DEFAULT_METHOD, PropagationConfig, override
from colortrack.data.files import atomic_write_bytes
from colortrack.data.manifest import Entry, read_manifest
from colortrack.errors import ColortrackError, UsageError
from colortrack.track.tracking import (
    Tracker,
    check_formats,
    make_propagator,
    track_points_to_dir,
    track_to_dir,
)
from colortrack.track.workers import run_in_processes

DONE = "done.json"
log = logging.getLogger("colortrack")


@dataclass(frozen=True)
class BatchSettings:
    """How every video of a batch is tracked and written (what `track` takes, for all)."""

    method: str = DEFAULT_METHOD
    model: str | None = None
    settings: tuple[str, ...] = ()  # KEY=VALUE tracking settings, under each video's own
    device: str = "cpu"
    formats: tuple[str, ...] = ("davis",)

    def record(self, entry: Entry) -> dict[str, Any]:
        """What done.json keeps of the settings: a rerun with others must say --overwrite."""
        return {"method": self.method, "model": self.model,
                "settings": [*self.settings, *entry.settings], "formats": list(self.formats)}


@dataclass(frozen=True)
class ClipResult:
    """One video's outcome: status 'tracked', 'done before' (skipped) or 'failed'."""

    name: str
    status: str
    frames: int = 0
    seconds: float = 0.0
    error: str = ""


@dataclass(frozen=True)
class BatchReport:
    """The videos of this process's share, in manifest order."""

    share: tuple[int, int]
    results: tuple[ClipResult, ...]

    @property
    def failed(self) -> int:
        return sum(r.status == "failed" for r in self.results)

    def format_table(self) -> str:
        width = max([5, *(len(r.name) for r in self.results)])
        lines = [f"{'video':<{width}}  {'frames':>6}  {'seconds':>8}  status"]
        for r in self.results:
            status = f"failed: {r.error}" if r.error else r.status
            lines.append(f"{r.name:<{width}}  {r.frames:>6}  {r.seconds:>8.1f}  {status}")
        counts = {s: sum(r.status == s for r in self.results)
                  for s in ("tracked", "done before", "failed")}
        lines.append(", ".join(f"{n} {s}" for s, n in counts.items()) +
                     f" (share {self.share[0]}/{self.share[1]})")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"share": list(self.share), "failed": self.failed,
                "videos": [asdict(r) for r in self.results]}


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' (0 <= I < N) as (I, N)."""
    index, sep, count = text.partition("/")
    try:
        share = (int(index), int(count))
    except ValueError:
        share = (-1, 0)
    if not sep or not 0 <= share[0] < share[1]:
        raise UsageError(f"bad shard {text!r}; give I/N with 0 <= I < N, as 0/4")
    return share


def process_share(shard: tuple[int, int] = (0, 1)) -> tuple[int, int]:
    """This process's share: the shard, split again among torchrun's ranks (RANK and
    WORLD_SIZE, or LOCAL_RANK and LOCAL_WORLD_SIZE where only those are set)."""
    env = os.environ
    rank = env.get("RANK", env.get("LOCAL_RANK", "0"))
    world = env.get("WORLD_SIZE", env.get("LOCAL_WORLD_SIZE", "1"))
    try:
        rank_, world_ = int(rank), int(world)
    except ValueError:
        raise UsageError(f"bad RANK/WORLD_SIZE in the environment: {rank!r}/{world!r}") from None
    if not 0 <= rank_ < world_:
        raise UsageError(f"RANK {rank_} is outside WORLD_SIZE {world_}")
    return shard[0] * world_ + rank_, shard[1] * world_


def rank_device(device: str) -> str:
    """Under torchrun, 'cuda' means this rank's GPU (LOCAL_RANK), as training's ranks use."""
    local = os.environ.get("LOCAL_RANK")
    if device != "cuda" or local is None:
        return device
    if not local.isdigit():
        raise UsageError(f"bad LOCAL_RANK in the environment: {local!r}")
    return f"cuda:{local}"


def _check_settings(manifest: Path, entries: Sequence[Entry], settings: BatchSettings) -> None:
    for entry in entries:
        try:
            override(PropagationConfig(), [*settings.settings, *entry.settings])
        except ColortrackError as error:
            raise UsageError(f"{manifest}:{entry.line}: {error}") from None


def _done(out: Path, entry: Entry, settings: BatchSettings, overwrite: bool
          ) -> ClipResult | None:
    """The video's earlier result where its complete results are there, from these settings."""
    try:
        record = json.loads((out / entry.name / DONE).read_text())
        frames, seconds = int(record["frames"]), float(record["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # not there, or damaged: track it
    if overwrite:
        return None
    if {k: record.get(k) for k in settings.record(entry)} != settings.record(entry):
        raise UsageError(f"{out / entry.name}: tracked with other settings ({record.get('method')}"
                         f", {record.get('settings')}, {record.get('formats')}); pass "
                         "--overwrite to track again with these")
    return ClipResult(entry.name, "done before", frames, seconds)


# One tracker per distinct settings in each process, so the model loads once per process.
_trackers: dict[tuple[BatchSettings, tuple[str, ...]], Tracker] = {}


def _tracker(settings: BatchSettings, entry: Entry) -> Tracker:
    key = (settings, entry.settings)
    if key not in _trackers:
        pairs = [*settings.settings, *entry.settings]
        propagation = override(PropagationConfig(), pairs) if pairs else None
        _trackers[key] = Tracker(make_propagator(settings.method, model=settings.model,
                                                 propagation=propagation,
                                                 device=settings.device))
    return _trackers[key]


def track_clip(out: Path, entry: Entry, settings: BatchSettings, progress: bool) -> ClipResult:
    """Track one video into OUT/NAME; an error a user can fix becomes a failed result."""
    started = time.perf_counter()
    record = settings.record(entry) | {"video": str(entry.video),
                                       "annotation": str(entry.annotation)}

    def finish(folder: Path, frames: int) -> None:
        seconds = round(time.perf_counter() - started, 3)
        done = record | {"frames": frames, "seconds": seconds}
        atomic_write_bytes(folder / DONE, (json.dumps(done, indent=2) + "\n").encode())

    options = {"overwrite": True, "progress": progress, "formats": settings.formats,
               "finish": finish}
    try:
        tracker = _tracker(settings, entry)
        if entry.points:  # YouTube-VIS holds masks only
            options["formats"] = [f for f in settings.formats if f != "youtube-vis"]
            summary = track_points_to_dir(tracker, entry.video, entry.annotation,
                                          out / entry.name, **options)
        else:
            from colortrack.data.coco import read_annotation

            masks: Any = (read_annotation(entry.annotation, entry.name)
                          if entry.annotation.suffix.lower() == ".json" else entry.annotation)
            summary = track_to_dir(tracker, entry.video, masks, out / entry.name,
                                   name=entry.name, **options)
    except (ColortrackError, OSError, RuntimeError, ValueError, MemoryError) as error:
        log.debug("%s failed", entry.name, exc_info=True)  # --debug: where
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        return ClipResult(entry.name, "failed", 0, time.perf_counter() - started, message)
    return ClipResult(entry.name, "tracked", summary.frames, summary.seconds)


def track_many(
    manifest: str | Path, out: str | Path, settings: BatchSettings = BatchSettings(), *,
    shard: tuple[int, int] = (0, 1), workers: int = 1, overwrite: bool = False,
    progress: bool = True, summary: str | None = None,
) -> BatchReport:
    """Track this process's share of the manifest into OUT/NAME folders, skipping videos
    already done (unless `overwrite`); with the youtube-vis format, OUT/youtube-vis.json once
    every video of the manifest is done. `summary` names a JSON file for the report; where
    the manifest is shared, `{share}` in it becomes the share's number."""
    manifest, out = Path(manifest), Path(out)
    if set(check_formats(settings.formats)) - {"davis"}:
        from colortrack.data.coco import mask_api

        mask_api()  # missing: say so before any video fails for it
    if workers < 1:
        raise UsageError(f"--workers {workers}: must be at least 1")
    share = process_share(shard)
    settings = dataclasses.replace(settings, device=rank_device(settings.device))
    if summary is not None and share[1] > 1 and "{share}" not in summary:
        raise UsageError(f"{summary}: {share[1]} shares would write this one file; put {{share}} "
                         "in its name (summary-{share}.json)")
    entries = read_manifest(manifest, out)
    _check_settings(manifest, entries, settings)
    mine = entries[share[0]::share[1]]
    earlier = {e.name: _done(out, e, settings, overwrite) for e in mine}
    results = {name: result for name, result in earlier.items() if result is not None}
    todo = [e for e in mine if e.name not in results]
    bar = tqdm(total=len(todo), unit="video", disable=not progress or not todo)

    def record(result: ClipResult) -> None:
        results[result.name] = result
        bar.set_postfix_str(result.name)
        bar.update()

    with bar:
        if min(workers, len(todo)) <= 1:
            for entry in todo:
                record(track_clip(out, entry, settings, progress))
        else:
            import torch

            count = min(workers, len(todo))
            run_in_processes(functools.partial(track_clip, out, settings=settings,
                                               progress=False),
                             todo, count, threads=max(1, torch.get_num_threads() // count),
                             done=record,
                             lost=lambda entry, why: ClipResult(entry.name, "failed", error=why))
    if "youtube-vis" in settings.formats:
        _merge_youtube_vis(out, entries)
    report = BatchReport(share, tuple(results[e.name] for e in mine))
    if summary is not None:
        path = Path(summary.replace("{share}", str(share[0])))
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, (json.dumps(report.to_json(), indent=2) + "\n").encode())
    return report


def _merge_youtube_vis(out: Path, entries: Sequence[Entry]) -> None:
    """OUT/youtube-vis.json from every video's own, once all are there. Each process checks
    after writing its own results, so whichever finishes last sees them all."""
    from colortrack.data.coco import merge_youtube_vis, write_json

    masks = [e for e in entries if not e.points]
    if not all((out / e.name / DONE).is_file() for e in masks):
        return
    documents = [json.loads((out / e.name / "youtube-vis.json").read_text()) for e in masks]
    write_json(out / "youtube-vis.json", merge_youtube_vis(documents))

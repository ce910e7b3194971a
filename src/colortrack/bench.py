"""Benchmarks: run a propagator over a whole dataset, write its predictions, and score them.

`bench_davis` gives J&F on DAVIS (masks); `bench_badja` gives PCK on BADJA animal joints, which
are annotated on DAVIS frames. Timings cover decoding, propagation and writing, per sequence.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from colortrack.annotations import write_mask
from colortrack.davis import DavisDataset, DavisReport, evaluate_davis
from colortrack.errors import ColortrackError
from colortrack.io_utils import shown, staged_dir
from colortrack.keypoints import (
    BADJA_JOINTS,
    BADJA_SKELETON,
    Keypoints,
    read_badja,
    write_track_json,
)
from colortrack.metrics import VOID_ID, pck
from colortrack.tracking import LabelPropagator, Tracker
from colortrack.video import read_image

log = logging.getLogger(__name__)


def _frames(paths: list[Path]) -> Iterator[np.ndarray]:
    """Decode frames one at a time, so a sequence never sits whole in memory."""
    for path in paths:
        yield read_image(path)


def _prepare(folder: Path, overwrite: bool) -> None:
    """Refuse to mix new predictions with an earlier run's unless `overwrite`.

    Outputs are then written through `staged_dir`, so an interrupted sequence leaves nothing.
    """
    if folder.is_dir() and any(map(shown, folder.iterdir())) and not overwrite:
        raise ColortrackError(f"{folder}: already holds predictions; pass --overwrite to replace")


def bench_davis(
    root: str | Path,
    out_dir: str | Path,
    propagator: LabelPropagator,
    *,
    sequences: list[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> tuple[DavisReport, dict[str, float]]:
    """Track every sequence from its first mask into OUT/<seq>/<frame>.png, then score J&F.

    Returns the report and the seconds each sequence took (frame 0, the given mask, included).
    """
    dataset = DavisDataset(root, sequences=sequences)
    out = Path(out_dir)
    for name in dataset.sequences:
        _prepare(out / name, overwrite)
    tracker = Tracker(propagator)
    paths = {name: dataset.frame_paths(name) for name in dataset.sequences}
    seconds: dict[str, float] = {}
    total = sum(len(p) for p in paths.values())
    with tqdm(total=total, unit="frame", disable=not progress) as bar:
        for name, frame_paths in paths.items():
            bar.set_description(name)
            first = dataset.first_mask(name)
            first[first == VOID_ID] = 0
            started = time.perf_counter()
            source = dataset.mask_paths(name)[0]
            run = tracker.track_frames(_frames(frame_paths), first, source=source)
            with staged_dir(out / name) as stage:
                for index, _, ids in run:
                    write_mask(stage / f"{frame_paths[index].stem}.png", ids)
                    bar.update()
            seconds[name] = time.perf_counter() - started
            log.info(
                "%s: %d frames in %.1f s (%.1f frames/s)",
                name,
                len(frame_paths),
                seconds[name],
                len(frame_paths) / max(seconds[name], 1e-9),
            )
    return evaluate_davis(root, out, sequences=dataset.sequences), seconds


def davis_frame_counts(root: str | Path, sequences: list[str]) -> dict[str, int]:
    """Frames per sequence, to turn `bench_davis` seconds into seconds per frame."""
    dataset = DavisDataset(root, sequences=sequences)
    return {name: len(dataset.frame_paths(name)) for name in sequences}


def format_timing(seconds: dict[str, float], frames: dict[str, int]) -> str:
    """One line per sequence and a total: seconds, frames, seconds per frame."""
    lines = [f"{'Sequence':<20}  {'seconds':>8}  {'frames':>6}  {'s/frame':>8}"]
    for name, value in seconds.items():
        lines.append(f"{name:<20}  {value:8.2f}  {frames[name]:6d}  {value / frames[name]:8.4f}")
    time_sum, frame_sum = sum(seconds.values()), sum(frames[n] for n in seconds)
    lines.append(f"{'Total':<20}  {time_sum:8.2f}  {frame_sum:6d}  {time_sum / frame_sum:8.4f}")
    return "\n".join(lines)


def bench_badja(
    root: str | Path,
    davis_root: str | Path,
    out_dir: str | Path,
    propagator: LabelPropagator,
    *,
    sequences: list[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    alphas: tuple[float, ...] = (0.1, 0.2),
) -> dict[str, Any]:
    """Track BADJA joints from their first annotated frame and score PCK on the later ones.

    Frames are DAVIS 480p JPEGs from `davis_root` (joints are scaled to their size); sequences
    without frames there are skipped with a warning. PCK uses the longer side of the visible
    joints' box as the reference size. Joints hidden on the first annotated frame cannot be
    tracked and score as misses when they appear. Writes OUT/<seq>/points.json. The overall
    score is the mean over sequences.
    """
    files = _badja_files(Path(root), sequences)
    image_dir = Path(davis_root) / "JPEGImages" / "480p"
    tracker = Tracker(propagator)
    results: dict[str, Any] = {"sequences": {}, "seconds": {}}
    for name, path in tqdm(files.items(), unit="seq", disable=not progress):
        frame_paths = sorted((image_dir / name).glob("*.jpg"))
        if not frame_paths:
            log.warning("%s: no DAVIS frames in %s; skipped", name, image_dir / name)
            continue
        size = read_image(frame_paths[0]).shape[1::-1]
        annotated = {frame: (xy, seen) for frame, xy, seen in read_badja(path, image_size=size)}
        start = min(annotated)
        points = Keypoints(BADJA_JOINTS, *annotated[start], BADJA_SKELETON)
        _prepare(Path(out_dir) / name, overwrite)
        started = time.perf_counter()
        run = tracker.track_points_frames(_frames(frame_paths), points, start=start, source=path)
        track = [(index, xy, visible) for index, _, xy, visible in run]
        results["seconds"][name] = time.perf_counter() - started
        with staged_dir(Path(out_dir) / name) as stage:
            write_track_json(stage / "points.json", BADJA_JOINTS, BADJA_SKELETON, track)
        scored = [i for i in sorted(annotated) if start < i < start + len(track)]
        if not scored:
            log.warning("%s: no annotated frame after the first; skipped", name)
            continue
        pred = np.stack([track[i - start][1] for i in scored])
        gt = np.stack([annotated[i][0] for i in scored])
        seen = np.stack([annotated[i][1] for i in scored])
        results["sequences"][name] = pck(pred, gt, seen, alphas, reference="box")
    if not results["sequences"]:
        raise ColortrackError(f"{root}: no BADJA sequence could be scored with {image_dir}")
    for key in next(iter(results["sequences"].values())):
        results[key] = float(np.mean([s[key] for s in results["sequences"].values()]))
    return results


def _badja_files(root: Path, sequences: list[str] | None) -> dict[str, Path]:
    """BADJA annotation files by sequence name, from ROOT/joint_annotations/ or ROOT itself."""
    folder = root / "joint_annotations" if (root / "joint_annotations").is_dir() else root
    if not folder.is_dir():
        raise ColortrackError(f"{root}: BADJA folder not found")
    files = {p.stem: p for p in sorted(folder.glob("*.json"))}
    missing = sorted(set(sequences or ()) - set(files))
    if missing:
        raise ColortrackError(f"{folder}: no annotations for {', '.join(missing)}")
    if not files:
        raise ColortrackError(f"{folder}: no BADJA .json annotation files")
    return {name: files[name] for name in sequences} if sequences else files


def format_pck(results: dict[str, Any]) -> str:
    """A text table of PCK per sequence and the mean, in percent."""
    keys = [k for k in results if k.startswith("PCK@")]
    lines = [f"{'Sequence':<20}" + "".join(f"  {k:>8}" for k in keys)]
    for name, scores in results["sequences"].items():
        lines.append(f"{name:<20}" + "".join(f"  {scores[k]:8.1f}" for k in keys))
    lines.append(f"{'Mean':<20}" + "".join(f"  {results[k]:8.1f}" for k in keys))
    return "\n".join(lines)

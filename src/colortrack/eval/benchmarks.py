"""Benchmarks: run a propagator over a whole dataset, write its predictions, and score them.

`bench_davis` gives J&F on DAVIS (masks); `bench_badja` gives PCK on BADJA animal joints, which
are annotated on DAVIS frames; `bench_jhmdb` gives PCK on JHMDB human joints (the keypoint
benchmark of Vondrick et al. and CRW). Timings cover decoding, propagation and writing, per
sequence.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from colortrack.data.annotations import read_mask, write_mask
from colortrack.data.badja import BADJA_JOINTS, BADJA_SKELETON, badja_files, read_badja
from colortrack.data.davis import DavisDataset, DavisReport, evaluate_davis
from colortrack.data.jhmdb import JHMDB_JOINTS, JHMDB_SKELETON, jhmdb_clips, read_jhmdb
from colortrack.data.keypoints import Keypoints, write_track_json
from colortrack.data.outputs import output_folder
from colortrack.data.video import read_image
from colortrack.errors import ColortrackError, UsageError
from colortrack.eval.metrics import VOID_ID, pck
from colortrack.track.tracking import LabelPropagator, Tracker

log = logging.getLogger(__name__)


def _frames(paths: list[Path]) -> Iterator[np.ndarray]:
    """Decode frames one at a time, so a sequence never sits whole in memory."""
    for path in paths:
        yield read_image(path)


def _predictions(out: Path, names: list[str], overwrite: bool) -> contextlib.AbstractContextManager:
    """OUT whole or not at all: a failed or stopped benchmark leaves OUT as it was. Earlier
    predictions of these sequences need `overwrite`; other entries of OUT are kept."""
    return output_folder(out, overwrite=overwrite, ours=set(names).__contains__,
                         what="predictions")


def bench_davis(
    root: str | Path,
    out_dir: str | Path,
    propagator: LabelPropagator,
    *,
    sequences: list[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    annotated: tuple[str, ...] = ("0",),
) -> tuple[DavisReport, dict[str, float]]:
    """Track every sequence from its first mask into OUT/<seq>/<frame>.png, then score J&F.

    `annotated` frames (indices, or "mid" and "last") are given their true masks as well, as a
    user correcting the tracker would; they are scored like the others. Returns the report and
    the seconds each sequence took (frame 0, the given mask, included).
    """
    dataset = DavisDataset(root, sequences=sequences)
    out = Path(out_dir)
    tracker = Tracker(propagator)
    paths = {name: dataset.frame_paths(name) for name in dataset.sequences}
    seconds: dict[str, float] = {}
    total = sum(len(p) for p in paths.values())
    with (_predictions(out, dataset.sequences, overwrite) as stage,
          tqdm(total=total, unit="frame", disable=not progress) as bar):
        for name, frame_paths in paths.items():
            bar.set_description(name)
            given = {}
            for index in annotated_indices(annotated, len(frame_paths)):
                mask = read_mask(dataset.mask_paths(name)[index])
                mask[mask == VOID_ID] = 0
                given[index] = mask
            started = time.perf_counter()
            source = dataset.mask_paths(name)[0]
            run = tracker.track_frames(_frames(frame_paths), given, source=source)
            (stage / name).mkdir()
            for index, _, ids in run:
                write_mask(stage / name / f"{frame_paths[index].stem}.png", ids)
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


def annotated_indices(names: tuple[str, ...], frames: int) -> list[int]:
    """Frame indices of "0", "12", "mid" (frames // 2), "last" in a sequence of `frames`."""
    named = {"mid": frames // 2, "last": frames - 1}
    try:
        indices = sorted({named[n] if n in named else int(n) for n in ("0", *names)})
    except ValueError:
        raise UsageError(f"annotated frames: {', '.join(names)} (use indices, mid or last)"
                         ) from None
    if indices[0] < 0 or indices[-1] >= frames:
        raise UsageError(f"annotated frame {indices[-1] if indices[0] >= 0 else indices[0]} is "
                         f"outside a sequence of {frames} frames")
    return indices


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
    files = badja_files(Path(root), sequences)
    image_dir = Path(davis_root) / "JPEGImages" / "480p"
    tracker = Tracker(propagator)
    results: dict[str, Any] = {"sequences": {}, "seconds": {}}
    with _predictions(Path(out_dir), list(files), overwrite) as stage:
        for name, path in tqdm(files.items(), unit="seq", disable=not progress):
            frame_paths = sorted((image_dir / name).glob("*.jpg"))
            if not frame_paths:
                log.warning("%s: no DAVIS frames in %s; skipped", name, image_dir / name)
                continue
            size = read_image(frame_paths[0]).shape[1::-1]
            annotated = {frame: (xy, seen) for frame, xy, seen in read_badja(path, image_size=size)}
            start = min(annotated)
            points = Keypoints(BADJA_JOINTS, *annotated[start], BADJA_SKELETON)
            started = time.perf_counter()
            run = tracker.track_points_frames(_frames(frame_paths), points, start=start,
                                              source=path)
            track = [(index, xy, visible) for index, _, xy, visible in run]
            results["seconds"][name] = time.perf_counter() - started
            (stage / name).mkdir()
            write_track_json(stage / name / "points.json", BADJA_JOINTS, BADJA_SKELETON, track)
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


def format_pck(results: dict[str, Any], rows: str = "sequences", total: str = "Mean") -> str:
    """A text table of PCK per sequence (or clip: `rows`) and the overall score, in percent."""
    keys = [k for k in results if k.startswith("PCK@")]
    width = max([20, *map(len, results[rows])])
    lines = [f"{rows[:-1].title():<{width}}" + "".join(f"  {k:>8}" for k in keys)]
    for name, scores in results[rows].items():
        lines.append(f"{name:<{width}}" + "".join(f"  {scores[k]:8.1f}" for k in keys))
    lines.append(f"{total:<{width}}" + "".join(f"  {results[k]:8.1f}" for k in keys))
    lines.append("(percent, 0-100)")
    return "\n".join(lines)


def bench_jhmdb(
    root: str | Path,
    out_dir: str | Path,
    propagator: LabelPropagator,
    *,
    clips: list[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Track JHMDB's 15 joints from frame 0 and score PCK@0.1..0.5 on frames 1..T-1.

    JHMDB marks no joint hidden, so all are tracked and scored. A joint annotated outside the
    frame (JHMDB places cut-off limbs there) starts from the nearest pixel, since its heatmap
    must lie in the image, and is still scored at its true place. The reference size is 0.6 x
    the diagonal of the true joints' box (CRW's eval_pck.py); the overall score pools the frames
    of all clips per joint, then averages over joints, as CRW does. Writes OUT/<clip>/points.json.
    """
    found = jhmdb_clips(Path(root), clips)
    out = Path(out_dir)
    tracker = Tracker(propagator)
    results: dict[str, Any] = {"clips": {}, "seconds": {}, "frames": {}}
    preds, gts = [], []
    with _predictions(out, list(found), overwrite) as stage:
        for name, (mat, frame_paths) in tqdm(found.items(), unit="clip", disable=not progress):
            gt = read_jhmdb(mat)
            count = min(len(gt), len(frame_paths))
            if len(gt) != len(frame_paths):
                log.warning(
                    "%s: %d annotated frames but %d images; scoring the first %d",
                    name, len(gt), len(frame_paths), count,
                )  # fmt: skip
            if count < 2:
                log.warning("%s: no frame to score after the first; skipped", name)
                continue
            height, width = read_image(frame_paths[0]).shape[:2]
            xy0 = np.clip(gt[0], 0, [width - 1, height - 1]).astype(np.float32)
            points = Keypoints(JHMDB_JOINTS, xy0, np.ones(len(xy0), dtype=bool), JHMDB_SKELETON)
            started = time.perf_counter()
            run = tracker.track_points_frames(_frames(frame_paths[:count]), points, source=mat)
            track = [(index, xy, visible) for index, _, xy, visible in run]
            results["seconds"][name] = time.perf_counter() - started
            results["frames"][name] = len(track)
            (stage / name).mkdir()
            write_track_json(stage / name / "points.json", JHMDB_JOINTS, JHMDB_SKELETON, track)
            preds.append(np.stack([xy for _, xy, _ in track[1:]]))
            gts.append(gt[1:count])
            results["clips"][name] = _jhmdb_pck(preds[-1], gts[-1])
        if not preds:
            raise ColortrackError(f"{root}: no JHMDB clip could be scored")
    return _jhmdb_pck(np.concatenate(preds), np.concatenate(gts)) | results


def _jhmdb_pck(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """PCK@0.1..0.5 with every joint visible (JHMDB has no visibility flags)."""
    return pck(pred, gt, np.ones(gt.shape[:2], dtype=bool), reference="jhmdb")



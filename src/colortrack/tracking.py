"""Tracking by label propagation: the propagator interface and the API users call.

A propagator turns the soft labels of frame 0 into soft labels for every later frame; `Tracker`
wraps one to track masks (one-hot ids) and keypoints (Gaussian heatmaps), and `track_to_dir` /
`track_points_to_dir` write the results (palette PNGs, JSON/CSV tracks, an overlay video).
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import itertools
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from colortrack.annotations import read_mask, write_mask
from colortrack.config import PropagationConfig
from colortrack.errors import ColortrackError, UsageError
from colortrack.keypoints import (
    Keypoints,
    check_in_image,
    read_keypoints,
    write_track_csv,
    write_track_json,
)
from colortrack.video import VideoReader, VideoWriter
from colortrack.visualize import draw_points, overlay_mask

METHODS = ("model", "identity", "flow", "pixels", "random")
Video = str | Path | Iterable[np.ndarray]


class LabelPropagator(Protocol):
    """What every tracker method implements: the baselines and the learned model alike.

    `propagate` gets RGB uint8 (H, W, 3) frames from frame 0 and the (K, H, W) float32 soft
    labels of frame 0 (one-hot ids with channel 0 = background, or a background channel and one
    heatmap per keypoint). It yields (K, H, W) float32 labels for frames 1, 2, ... at the input
    size, lazily, with memory that does not grow with the video's length.
    """

    name: str

    def propagate(
        self, frames: Iterable[np.ndarray], first_labels: np.ndarray
    ) -> Iterator[np.ndarray]: ...


def make_propagator(
    method: str,
    *,
    model: str | Path | None = None,
    propagation: PropagationConfig | None = None,
    device: str = "cpu",
) -> LabelPropagator:
    """Build a propagator by name; the learned one is imported only when asked for (torch)."""
    if method not in METHODS:
        raise UsageError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if method in ("identity", "flow"):
        if model is not None or propagation is not None:
            raise UsageError(
                f"a model and propagation settings only apply to method 'model', not {method!r}"
            )
        from colortrack.baselines import FlowPropagator, IdentityPropagator

        return IdentityPropagator() if method == "identity" else FlowPropagator()
    try:
        learned = importlib.import_module("colortrack.learned")
    except ModuleNotFoundError as error:
        if error.name != "colortrack.learned":
            raise
        raise ColortrackError(
            "the learned model is not available in this installation (colortrack.learned is "
            "missing); use --method identity or --method flow"
        ) from None
    if method == "pixels":
        return learned.LearnedPropagator.pixels(propagation, device)
    if method == "random":
        return learned.LearnedPropagator.random(propagation, device)
    return learned.LearnedPropagator.from_checkpoint(model, propagation, device)


@contextlib.contextmanager
def _open(video: Video) -> Iterator[Iterable[np.ndarray]]:
    """Frames of a video file, a frame folder, or any iterable of RGB arrays."""
    if isinstance(video, str | Path):
        with VideoReader(video) as reader:
            yield reader
    else:
        yield video


class Tracker:
    """Tracks objects and points through a video from their first-frame annotation.

    `sigma` is the width in pixels of each keypoint's Gaussian heatmap (one feature cell of the
    stride-8 encoder, so a point survives downsampling); a point is visible while its heatmap
    peak stays above `visible_threshold`.
    """

    def __init__(
        self, propagator: LabelPropagator, *, sigma: float = 8.0, visible_threshold: float = 0.1
    ) -> None:
        self.propagator = propagator
        self.sigma = sigma
        self.visible_threshold = visible_threshold

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path | None = None,
        *,
        method: str = "model",
        propagation: PropagationConfig | None = None,
        device: str = "cpu",
    ) -> Tracker:
        """The shipped model (path None), a checkpoint, or a baseline ('identity', 'flow')."""
        return cls(make_propagator(method, model=path, propagation=propagation, device=device))

    def _propagate(
        self, video: Video, labels_of: Callable[[np.ndarray], np.ndarray]
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Yield (index, frame, soft labels) for every frame; labels_of(frame 0) gives frame 0's.

        Propagators may read ahead (a temporal head needs the next frame), so frames wait in
        `pending` until their labels come out: the i-th prediction goes with the i-th frame read.
        """
        pending: collections.deque[np.ndarray] = collections.deque()

        def record(frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
            for frame in frames:
                pending.append(frame)
                yield frame

        with _open(video) as frames:
            iterator = record(frames)
            first = next(iterator, None)
            if first is None:
                raise ColortrackError("the video has no frames (from the annotated frame on)")
            if first.ndim != 3 or first.shape[2] != 3 or first.dtype != np.uint8:
                raise ColortrackError(f"frames must be (H, W, 3) uint8 RGB, got {first.shape}")
            labels = labels_of(pending.popleft())
            yield 0, first, labels
            stream = itertools.chain([first], iterator)
            for index, soft in enumerate(self.propagator.propagate(stream, labels), start=1):
                if soft.shape != labels.shape:
                    raise RuntimeError(f"{self.propagator.name!r} gave labels {soft.shape}")
                yield index, pending.popleft(), soft

    def track_frames(
        self, video: Video, first_mask: np.ndarray | str | Path
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Like `track`, also yielding each frame: (index, frame, (H, W) uint8 ids)."""
        ids = np.asarray(
            read_mask(first_mask) if isinstance(first_mask, str | Path) else first_mask
        )
        source = str(first_mask) if isinstance(first_mask, str | Path) else "first mask"
        if ids.ndim != 2 or ids.dtype != np.uint8:
            raise ColortrackError(
                f"{source}: a mask must be a 2-D uint8 id map, got {ids.shape} {ids.dtype}"
            )
        present = np.unique(ids)
        lookup = np.concatenate([[0], present[present != 0]]).astype(np.uint8)
        if len(lookup) == 1:
            raise ColortrackError(f"{source}: the first mask is empty (no object pixels)")

        def labels_of(frame: np.ndarray) -> np.ndarray:
            if frame.shape[:2] != ids.shape:
                raise ColortrackError(
                    f"{source}: mask is {ids.shape[1]}x{ids.shape[0]} but the video frames are "
                    f"{frame.shape[1]}x{frame.shape[0]}"
                )
            return (ids[None] == lookup[:, None, None]).astype(np.float32)

        for index, frame, soft in self._propagate(video, labels_of):
            yield index, frame, ids if index == 0 else lookup[soft.argmax(0)]

    def track(
        self, video: Video, first_mask: np.ndarray | str | Path
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (index, (H, W) uint8 ids) for frame 0 (the given mask) and every later frame."""
        for index, _, ids in self.track_frames(video, first_mask):
            yield index, ids

    def track_points_frames(
        self, video: Video, points: Keypoints, *, start: int = 0
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """(index, frame, xy, visible) from frame `start` (the annotated one) on."""
        xy0 = np.asarray(points.xy, dtype=np.float32).reshape(-1, 2)
        visible0 = np.asarray(points.visible, dtype=bool).reshape(-1)

        def labels_of(frame: np.ndarray) -> np.ndarray:
            check_in_image(points, frame.shape[1], frame.shape[0], "keypoints")
            return heatmaps(xy0, visible0, frame.shape[:2], self.sigma)

        with _open(video) as frames:
            rest = itertools.islice(frames, start, None)
            for index, frame, soft in self._propagate(rest, labels_of):
                decoded = decode_heatmaps(soft, self.visible_threshold, fallback=xy0)
                xy, visible = (xy0, visible0) if index == 0 else decoded
                yield start + index, frame, xy, visible

    def track_points(
        self, video: Video, points: Keypoints | str | Path
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Yield (index, xy (N, 2), visible (N,)) from the annotated frame on.

        Points read from a file start at the frame the file names; earlier frames are skipped.
        """
        start, points = _load_points(points)
        for index, _, xy, visible in self.track_points_frames(video, points, start=start):
            yield index, xy, visible


def _load_points(points: Keypoints | str | Path) -> tuple[int, Keypoints]:
    if isinstance(points, str | Path):
        return read_keypoints(points)
    return 0, points


def heatmaps(
    xy: np.ndarray, visible: np.ndarray, shape: tuple[int, int], sigma: float
) -> np.ndarray:
    """(N+1, H, W) labels: channel 0 background, then one Gaussian (peak 1) per visible point."""
    xy = np.asarray(xy, dtype=np.float32).reshape(-1, 2)
    gx = np.exp(-((np.arange(shape[1], dtype=np.float32) - xy[:, :1]) ** 2) / (2 * sigma**2))
    gy = np.exp(-((np.arange(shape[0], dtype=np.float32) - xy[:, 1:]) ** 2) / (2 * sigma**2))
    maps = gy[:, :, None] * gx[:, None, :] * np.asarray(visible, dtype=np.float32)[:, None, None]
    background = 1.0 - maps.max(axis=0, initial=0.0)
    return np.concatenate([background[None], maps]).astype(np.float32)


def decode_heatmaps(
    labels: np.ndarray, threshold: float, *, fallback: np.ndarray, top: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Point locations as the heat-weighted mean of each map's `top` hottest pixels (CRW).

    The hottest pixels lie in the `top` rows with the highest maxima, so only those rows are
    searched (argpartition over whole maps is slow on their many equal zeros). A point whose
    map is empty keeps its `fallback` position; visibility is peak > threshold.
    """
    maps = labels[1:]
    n, h, w = maps.shape
    row_max = maps.max(axis=2)
    rows = np.argpartition(row_max, -min(top, h), axis=1)[:, -min(top, h) :]
    candidates = np.take_along_axis(maps, rows[:, :, None], axis=1).reshape(n, -1)
    best = np.argpartition(candidates, -top, axis=1)[:, -top:]
    weights = np.clip(np.take_along_axis(candidates, best, axis=1), 0.0, None)
    total = weights.sum(axis=1)
    weights = weights / np.where(total > 0, total, 1.0)[:, None]
    x = (weights * (best % w)).sum(axis=1)
    y = (weights * np.take_along_axis(rows, best // w, axis=1)).sum(axis=1)
    xy = np.where((total > 0)[:, None], np.stack([x, y], axis=1), fallback).astype(np.float32)
    return xy, row_max.max(axis=1) > threshold


@dataclass(frozen=True)
class TrackSummary:
    """What a tracking run wrote, for the CLI's final line."""

    out_dir: Path
    frames: int
    seconds: float


_OUTPUTS = re.compile(r"^(\d{5}\.png|overlay\.mp4|points\.json|points\.csv)$")


@contextlib.contextmanager
def _writing(
    video: Video, out_dir: str | Path, overwrite: bool, progress: bool
) -> Iterator[tuple[Path, Video, Any, tqdm]]:
    """Open the video (for its rate and length), then the output folder, overlay and progress.

    Earlier outputs are only replaced with `overwrite`; a folder this call created is removed
    again if the run fails before writing anything into it.
    """
    out, created = Path(out_dir), False
    try:
        with contextlib.ExitStack() as stack:
            fps, total = 24.0, None
            if isinstance(video, str | Path):
                video = stack.enter_context(VideoReader(video))
                fps, total = video.info.fps or fps, video.info.num_frames
            if out.exists() and not out.is_dir():
                raise ColortrackError(f"{out}: exists and is not a folder")
            ours = sorted(p.name for p in out.glob("*") if _OUTPUTS.match(p.name))
            if ours and not overwrite:
                raise ColortrackError(
                    f"{out}: already holds tracking outputs ({ours[0]}, ...); "
                    "pass --overwrite (overwrite=True) to replace them"
                )
            created = not out.exists()
            out.mkdir(parents=True, exist_ok=True)
            writer = stack.enter_context(VideoWriter(out / "overlay.mp4", fps))
            bar = stack.enter_context(tqdm(total=total, unit="frame", disable=not progress))
            yield out, video, writer, bar
    except BaseException:
        if created and not any(out.iterdir()):
            out.rmdir()
        raise


def track_to_dir(
    tracker: Tracker,
    video: Video,
    first_mask: np.ndarray | str | Path,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> TrackSummary:
    """Write OUT/<00000>.png palette masks at the input size and OUT/overlay.mp4."""
    started, count = time.perf_counter(), 0
    with _writing(video, out_dir, overwrite, progress) as (out, frames, writer, bar):
        for index, frame, ids in tracker.track_frames(frames, first_mask):
            write_mask(out / f"{index:05d}.png", ids)
            writer.write(overlay_mask(frame, ids))
            count += 1
            bar.update()
    return TrackSummary(out, count, time.perf_counter() - started)


def track_points_to_dir(
    tracker: Tracker,
    video: Video,
    points: Keypoints | str | Path,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> TrackSummary:
    """Write OUT/points.json, OUT/points.csv and OUT/overlay.mp4 with the skeleton drawn."""
    start, points = _load_points(points)
    started, track = time.perf_counter(), []
    with _writing(video, out_dir, overwrite, progress) as (out, frames, writer, bar):
        for index, frame, xy, visible in tracker.track_points_frames(frames, points, start=start):
            track.append((index, xy, visible))
            writer.write(draw_points(frame, xy, visible, points.skeleton))
            bar.update()
    write_track_json(out / "points.json", points.names, points.skeleton, track)
    write_track_csv(out / "points.csv", points.names, track)
    return TrackSummary(out, len(track), time.perf_counter() - started)

"""Tracking by label propagation: the propagator interface and the API users call.

A propagator turns the soft labels of frame 0 into soft labels for every later frame; `Tracker`
wraps one to track masks (one-hot ids) and keypoints (Gaussian heatmaps), and `track_to_dir` /
`track_points_to_dir` write the results (palette PNGs, JSON/CSV tracks, an overlay video).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from colortrack.config import DEFAULT_METHOD, METHODS, PropagationConfig
from colortrack.data.annotations import mask_files, read_masks, write_mask
from colortrack.data.keypoints import (
    Keypoints,
    check_in_image,
    read_track_json,
    write_track_csv,
    write_track_json,
)
from colortrack.data.outputs import output_folder, write_behind
from colortrack.data.video import VideoReader, prefetch
from colortrack.data.video_writer import VideoWriter
from colortrack.errors import ColortrackError, UsageError
from colortrack.stages import stage
from colortrack.track.corrections import PastEnd, two_way
from colortrack.track.heatmaps import decode_heatmaps, heatmaps
from colortrack.track.protocol import LabelPropagator
from colortrack.track.visualize import draw_points, overlay_mask

log = logging.getLogger(__name__)

Video = str | Path | Iterable[np.ndarray]


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
        from colortrack.track.baselines import FlowPropagator, IdentityPropagator

        return IdentityPropagator() if method == "identity" else FlowPropagator()
    from colortrack.track import propagator as learned

    if method == "pixels":
        return learned.LearnedPropagator.pixels(propagation, device)
    if method == "random":
        return learned.LearnedPropagator.random(propagation, device)
    if method == "model+pixels":
        return learned.LearnedPropagator.model_and_pixels(model, propagation, device)
    return learned.LearnedPropagator.from_checkpoint(model, propagation, device)


@contextlib.contextmanager
def _open(video: Video) -> Iterator[Iterable[np.ndarray]]:
    """Frames of a video file, a frame folder, or any iterable of RGB arrays."""
    if isinstance(video, str | Path):
        with VideoReader(video) as reader:
            yield reader
    else:
        yield video


def argmax_channels(soft: np.ndarray) -> np.ndarray:
    """`soft.argmax(0)` for (K, H, W) as uint8, 2-3x faster: NumPy reduces the outer axis
    with strided reads, this runs K contiguous comparisons. Ties go to the first channel."""
    best, index = soft[0].copy(), np.zeros(soft.shape[1:], dtype=np.uint8)
    for k in range(1, len(soft)):
        better = soft[k] > best
        index[better] = k
        np.maximum(best, soft[k], out=best)
    return index


@dataclass(frozen=True)
class TrackedFrame:
    """A frame, its object ids, and how sure the copy is of them (`corrections.confidence`:
    1 for a given mask; the least sure frame is the one to correct next)."""

    index: int
    frame: np.ndarray
    ids: np.ndarray
    confidence: float


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
        method: str = DEFAULT_METHOD,
        propagation: PropagationConfig | None = None,
        device: str = "cpu",
    ) -> Tracker:
        """The shipped model (path None) or a checkpoint, with raw color beside it by default
        (`method='model'` for the embedding alone), or a baseline ('identity', 'flow')."""
        return cls(make_propagator(method, model=path, propagation=propagation, device=device))

    def _propagate(
        self, video: Video, labels_of: Callable[[np.ndarray], np.ndarray], empty: str,
        given: Mapping[int, np.ndarray] | None = None,
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray, float]]:
        """Yield (index, frame, soft labels, confidence) for every frame; labels_of(frame 0)
        gives frame 0's and `given` those of later frames, which replace their predictions and
        are tracked from in both directions (track.corrections).

        Propagators may read ahead (a temporal head needs the next frame), so frames wait in
        `pending` until their features come out: the i-th features go with the i-th frame read.
        `empty` is the error message for a video without frames.
        """
        pending: collections.deque[np.ndarray] = collections.deque()

        def record(frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
            for frame in frames:
                pending.append(frame)
                yield frame

        with _open(video) as frames, contextlib.closing(prefetch(frames)) as decoded:
            iterator = record(decoded)
            first = next(iterator, None)
            if first is None:
                raise ColortrackError(empty)
            if first.ndim != 3 or first.shape[2] != 3 or first.dtype != np.uint8:
                raise ColortrackError(f"frames must be (H, W, 3) uint8 RGB, got {first.shape}")
            labels = labels_of(pending.popleft())
            yield 0, first, labels, 1.0
            features = self.propagator.features(itertools.chain([first], iterator))
            first_features = next(features)
            items = ((pending.popleft(), f) for f in features)
            # `given` may be filled by labels_of (points: heatmaps need the frame's size).
            run = two_way(self.propagator, items, (labels, first_features), given or {})
            for index, frame, soft, sure in run:
                if soft.shape != labels.shape:
                    raise RuntimeError(f"{self.propagator.name!r} gave labels {soft.shape}")
                yield index, frame, soft, sure

    def track_masks(
        self, video: Video, masks: np.ndarray | str | Path | Mapping[int, np.ndarray], *,
        source: str | Path = "",
    ) -> Iterator[TrackedFrame]:
        """Every frame with its (H, W) uint8 ids and the copy's confidence in them.

        `masks` is frame 0's mask (an id map or its file), or masks by frame index (a mapping,
        or a folder of PNGs named by frame index) that must include frame 0: each replaces the
        prediction of its frame and is tracked from, forwards and backwards (corrections).
        `source` names masks given as arrays in error messages (their file, say).
        """
        path = isinstance(masks, str | Path)
        given = read_masks(masks) if path else (
            dict(masks) if isinstance(masks, Mapping) else {0: np.asarray(masks)})
        source = str(masks) if path else str(source or "first mask")
        for ids in given.values():
            if ids.ndim != 2 or ids.dtype != np.uint8:
                raise ColortrackError(
                    f"{source}: a mask must be a 2-D uint8 id map, got {ids.shape} {ids.dtype}"
                )
        if 0 not in given:
            raise ColortrackError(f"{source}: frame 0's mask is required")
        ids = given[0]
        present = np.unique(np.concatenate([np.unique(m) for m in given.values()]))
        lookup = np.concatenate([[0], present[present != 0]]).astype(np.uint8)
        if not (ids != 0).any():
            raise ColortrackError(f"{source}: the first mask is empty (no object pixels)")

        def one_hot(mask: np.ndarray) -> np.ndarray:
            return (mask[None] == lookup[:, None, None]).astype(np.float32)

        def labels_of(frame: np.ndarray) -> np.ndarray:
            if any(m.shape != frame.shape[:2] for m in given.values()):
                raise ColortrackError(
                    f"{source}: mask is {ids.shape[1]}x{ids.shape[0]} but the video frames are "
                    f"{frame.shape[1]}x{frame.shape[0]}"
                )
            return one_hot(ids)

        later = {i: one_hot(m) for i, m in given.items() if i > 0}
        empty = f"{_name(video)}: the video has no frames"
        try:
            for index, frame, soft, sure in self._propagate(video, labels_of, empty, later):
                with stage("argmax"):
                    ids = given[index] if index in given else lookup[argmax_channels(soft)]
                yield TrackedFrame(index, frame, ids, sure)
        except PastEnd as error:
            raise _past_end(masks if path else source, error.index, error.length) from None

    def track_frames(
        self, video: Video, masks: np.ndarray | str | Path | Mapping[int, np.ndarray], *,
        source: str | Path = "",
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Like `track`, also yielding each frame: (index, frame, (H, W) uint8 ids)."""
        for tracked in self.track_masks(video, masks, source=source):
            yield tracked.index, tracked.frame, tracked.ids

    def track(
        self, video: Video, masks: np.ndarray | str | Path | Mapping[int, np.ndarray]
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (index, (H, W) uint8 ids) for frame 0 (the given mask) and every later frame;
        `masks` as `track_frames` takes them."""
        for index, _, ids in self.track_frames(video, masks):
            yield index, ids

    def track_points_frames(
        self, video: Video, points: Keypoints, *, start: int = 0, source: str | Path = "keypoints",
        later: Mapping[int, Keypoints] | None = None,
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """(index, frame, xy, visible) from frame `start` (the annotated one) on.

        `later` points (by frame index, after `start`) replace those frames' predictions and are
        tracked on, as later masks are. `source` names the points (their file) in errors.
        """
        xy0 = np.asarray(points.xy, dtype=np.float32).reshape(-1, 2)
        visible0 = np.asarray(points.visible, dtype=bool).reshape(-1)
        later = {i - start: p for i, p in (later or {}).items()}
        given: dict[int, np.ndarray] = {}  # their heatmaps, once frame 0 gives the size

        def labels_of(frame: np.ndarray) -> np.ndarray:
            for keypoints in (points, *later.values()):
                check_in_image(keypoints, frame.shape[1], frame.shape[0], source)
            given.update({i: heatmaps(p.xy, p.visible, frame.shape[:2], self.sigma)
                          for i, p in later.items()})
            return heatmaps(xy0, visible0, frame.shape[:2], self.sigma)

        empty = f"{source}: annotates frame {start} but {_name(video)} has no frame {start}"
        with _open(video) as frames:
            rest = itertools.islice(frames, start, None)
            for index, frame, soft, _ in self._propagate(rest, labels_of, empty, given):
                if index == 0 or index in later:
                    chosen = points if index == 0 else later[index]
                    xy, visible = (np.asarray(chosen.xy, np.float32).reshape(-1, 2),
                                   np.asarray(chosen.visible, bool).reshape(-1))
                else:
                    xy, visible = decode_heatmaps(soft, self.visible_threshold, fallback=xy0)
                yield start + index, frame, xy, visible

    def track_points(
        self, video: Video, points: Keypoints | str | Path
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Yield (index, xy (N, 2), visible (N,)) from the annotated frame on.

        Points read from a file start at the frame the file names; earlier frames are skipped.
        """
        start, keypoints, later = _load_points(points)
        source = points if isinstance(points, str | Path) else "keypoints"
        run = self.track_points_frames(video, keypoints, start=start, source=source, later=later)
        for index, _, xy, visible in run:
            yield index, xy, visible


def _load_points(points: Keypoints | str | Path) -> tuple[int, Keypoints, dict[int, Keypoints]]:
    """The first annotated frame and its points, and the points of later annotated frames."""
    if not isinstance(points, str | Path):
        return 0, points, {}
    names, skeleton, frames = read_track_json(points)
    (start, xy, visible), rest = frames[0], frames[1:]
    return (start, Keypoints(names, xy, visible, skeleton),
            {i: Keypoints(names, p, v, skeleton) for i, p, v in rest})


def _name(video: Video) -> str:
    """A video's path for error messages (frames given as arrays have none)."""
    path = getattr(video, "path", video)
    return str(path) if isinstance(path, str | Path) else "the video"


@dataclass(frozen=True)
class TrackSummary:
    """What a tracking run wrote, for the CLI's final line."""

    out_dir: Path
    frames: int
    seconds: float
    vanished: int | None = None  # the first frame of an empty tail, after a non-empty frame 0


# The overlay is a preview written beside the masks: x264's superfast preset, tuned for zero
# latency (no B-frames, no lookahead), takes half the CPU of veryfast (VideoWriter's default)
# for a file about 20 % larger at the same quality.
OVERLAY = {"preset": "superfast", "tune": "zerolatency"}

_OUTPUTS = re.compile(r"^(\d{5}\.png|overlay\.mp4|points\.json|points\.csv|confidence\.csv|"
                      r"coco\.json|youtube-vis\.json|points\.coco\.json|done\.json)$")


def _past_end(source: object, index: int, length: int) -> ColortrackError:
    """The error for a mask of a frame the video does not have, naming the mask's file."""
    name = mask_files(source).get(index) if isinstance(source, Path | str) and Path(
        source).is_dir() else source
    return ColortrackError(f"{name}: a mask for frame {index}, past the video's end "
                           f"(frames 0-{length - 1})")


# What `formats` may name: DAVIS palette PNGs (always written), and the COCO and YouTube-VIS
# files beside them (data/coco.py; points get COCO keypoints).
FORMATS = ("davis", "coco", "youtube-vis")


def check_formats(formats: Iterable[str]) -> tuple[str, ...]:
    """The formats, checked: an unknown one is a usage error."""
    formats = tuple(formats)
    for name in formats:
        if name not in FORMATS:
            raise UsageError(f"unknown format {name!r}; choose from {', '.join(FORMATS)}")
    return formats


def is_tracking_output(name: str) -> bool:
    """Whether a file name is one that tracking writes into its output folder."""
    return bool(_OUTPUTS.match(name))


@contextlib.contextmanager
def _writing(
    video: Video, out_dir: str | Path, overwrite: bool, progress: bool, annotation: object
) -> Iterator[tuple[Path, Video, Any, Callable[..., None], tqdm]]:
    """Open the video (for its rate and length), then a staging folder, the overlay, a
    background thread for the writes (`write_behind`) and progress.

    Outputs go to a hidden folder beside OUT that replaces it only when the whole run
    succeeds, so a failed or interrupted run leaves OUT as it was. Earlier outputs are only
    replaced with `overwrite`; other files in OUT are kept, and an input (the video, the
    `annotation` file) is never written.
    """
    out = Path(out_dir)
    for item in (video, annotation):
        path = Path(item).resolve() if isinstance(item, str | Path) else None
        here = path is not None and path.parent == out.resolve() and _OUTPUTS.match(path.name)
        if here or path == out.resolve():
            raise ColortrackError(f"{item}: is an input; choose an --out that holds no inputs")
    with contextlib.ExitStack() as stack:
        fps, total = 24.0, None
        if isinstance(video, str | Path):
            video = stack.enter_context(VideoReader(video))
            fps, total = video.info.fps or fps, video.info.num_frames
        staging = stack.enter_context(output_folder(
            out, overwrite=overwrite, ours=is_tracking_output,
            what="tracking outputs"))
        writer = stack.enter_context(VideoWriter(staging / "overlay.mp4", fps, **OVERLAY))
        submit = stack.enter_context(write_behind())
        # leave=None: kept alone, gone when shown under track-many's bar of videos
        bar = stack.enter_context(tqdm(total=total, unit="frame", disable=not progress,
                                       leave=None))
        yield staging, video, writer, submit, bar


Finish = Callable[[Path, int], None]  # (folder being written, frames): the last file in it


def track_to_dir(
    tracker: Tracker,
    video: Video,
    masks: np.ndarray | str | Path | Mapping[int, np.ndarray],
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    formats: Iterable[str] = ("davis",),
    name: str | None = None,
    finish: Finish | None = None,
) -> TrackSummary:
    """Write OUT/<00000>.png palette masks at the input size, OUT/overlay.mp4 and
    OUT/confidence.csv (how sure the copy is of each frame: the lowest is the one to correct),
    and with `formats` OUT/coco.json and OUT/youtube-vis.json (the video called `name`, by
    default OUT's name). `finish` writes last into the folder before it appears. Warns when
    the mask vanishes (every frame empty from some frame to the end)."""
    formats = check_formats(formats)
    started, sure, last_seen = time.perf_counter(), [], 0
    recorder = None
    if {"coco", "youtube-vis"} & set(formats):
        from colortrack.data.coco import Recorder

        recorder = Recorder()

    def write(index: int, folder: Path, frame: np.ndarray, ids: np.ndarray,
              writer: VideoWriter) -> None:
        with stage("write"):
            write_mask(folder / f"{index:05d}.png", ids)
            if recorder is not None:
                recorder.add(index, ids)
        with stage("overlay"):
            writer.write(overlay_mask(frame, ids))

    with _writing(video, out_dir, overwrite, progress, masks) as (
            stage_dir, frames, writer, submit, bar):
        for tracked in tracker.track_masks(frames, masks):
            submit(write, tracked.index, stage_dir, tracked.frame, tracked.ids, writer)
            sure.append(f"{tracked.index},{tracked.confidence:.4f}\n")
            last_seen = tracked.index if tracked.ids.any() else last_seen
            bar.update()
        (stage_dir / "confidence.csv").write_text("frame,confidence\n" + "".join(sure))
        submit(_finish, stage_dir, recorder, formats, name or Path(out_dir).name, len(sure),
               finish)
    count = len(sure)
    vanished = last_seen + 1 if last_seen + 1 < count else None
    if vanished is not None:
        log.warning("warning: the mask is empty from frame %d to the end (%d of %d frames): the "
                    "object was lost; a model of your own may need more training (colortrack "
                    "train reports its score on the demo clip)", vanished, count - vanished, count)
    return TrackSummary(Path(out_dir), count, time.perf_counter() - started, vanished)


def _finish(folder: Path, recorder: Any, formats: tuple[str, ...], name: str, frames: int,
            finish: Finish | None) -> None:
    """The files made from all the masks, then the caller's (after every frame's write)."""
    from colortrack.data.coco import write_json

    if "coco" in formats:
        write_json(folder / "coco.json", recorder.coco())
    if "youtube-vis" in formats:
        write_json(folder / "youtube-vis.json", recorder.youtube_vis(name))
    if finish is not None:
        finish(folder, frames)


def track_points_to_dir(
    tracker: Tracker,
    video: Video,
    points: Keypoints | str | Path,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    formats: Iterable[str] = ("davis",),
    finish: Finish | None = None,
) -> TrackSummary:
    """Write OUT/points.json, OUT/points.csv and OUT/overlay.mp4 with the skeleton drawn, and
    with the `coco` format OUT/points.coco.json. `finish` writes last into the folder."""
    formats = check_formats(formats)
    if "youtube-vis" in formats:
        raise UsageError("YouTube-VIS holds masks, not points; points take --format coco")
    start, keypoints, later = _load_points(points)
    source = points if isinstance(points, str | Path) else "keypoints"
    started, track = time.perf_counter(), []

    def draw(frame: np.ndarray, xy: np.ndarray, visible: np.ndarray, writer: VideoWriter) -> None:
        with stage("overlay"):
            writer.write(draw_points(frame, xy, visible, keypoints.skeleton))

    with _writing(video, out_dir, overwrite, progress, points) as (
            stage_dir, frames, writer, submit, bar):
        run = tracker.track_points_frames(frames, keypoints, start=start, source=source,
                                          later=later)
        size = (0, 0)
        for index, frame, xy, visible in run:
            track.append((index, xy, visible))
            size = (frame.shape[1], frame.shape[0])
            submit(draw, frame, xy, visible, writer)
            bar.update()
        write_track_json(stage_dir / "points.json", keypoints.names, keypoints.skeleton, track)
        write_track_csv(stage_dir / "points.csv", keypoints.names, track)
        if "coco" in formats:
            from colortrack.data.coco import coco_keypoints, write_json

            write_json(stage_dir / "points.coco.json",
                       coco_keypoints(keypoints.names, keypoints.skeleton, track, size))
        if finish is not None:
            submit(finish, stage_dir, len(track))
    return TrackSummary(Path(out_dir), len(track), time.perf_counter() - started)

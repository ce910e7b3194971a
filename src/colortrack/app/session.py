"""The app's one session: a video's frames, the user's masks or points, and what tracking made.

Every change goes through a method that checks its input and raises UsageError with a message
for the page. Opening, propagating and exporting are activities: one at a time, and while one
runs the others (and edits) are refused with a message, so a video's masks never land on
another video's frames. Propagation runs in a thread (`propagate` starts it, `_run_masks` and
`_run_points` do the work) and reports progress through `state()`.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from colortrack.app.paths import Roots
from colortrack.bounds import check_memory
from colortrack.data.annotations import write_mask
from colortrack.data.files import shown
from colortrack.data.keypoints import Keypoints, write_track_csv, write_track_json
from colortrack.data.outputs import output_folder
from colortrack.data.video import VideoReader
from colortrack.data.video_writer import VideoWriter
from colortrack.errors import ColortrackError, UsageError
from colortrack.track.interactive import MaskCorrections
from colortrack.track.tracking import LabelPropagator, Tracker, is_tracking_output
from colortrack.track.visualize import draw_points, overlay_mask

MAX_FRAMES = 20_000  # JPEGs in memory: about 40 KB each at 480p
MAX_POINTS = 100  # each point is a heatmap channel in every context frame
MAX_OBJECTS = 32  # each object is a label channel in every context frame
CONTEXT = 40  # recent frames a tracker holds, above any preset's context


def png(ids: np.ndarray) -> bytes:
    """Object ids as a grayscale PNG (value = id): lossless, and what the page reads back."""
    _, data = cv2.imencode(".png", ids)
    return data.tobytes()


def _ids(png: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)


def _rgb(jpeg: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]


class _Frames(Sequence[np.ndarray]):
    """The session's JPEGs as RGB frames, decoded when read."""

    def __init__(self, jpegs: list[bytes]) -> None:
        self.jpegs = jpegs

    def __len__(self) -> int:
        return len(self.jpegs)

    def __getitem__(self, index: int) -> np.ndarray:  # type: ignore[override]
        return _rgb(self.jpegs[index])


@dataclass
class Progress:
    """How far the current (or last) propagation got; `started` is a monotonic time."""

    running: bool = False
    done: int = 0
    total: int = 0
    started: float = 0.0
    error: str | None = None
    frame: int | None = None  # the last frame whose labels came out

    def report(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self.started if self.running else 0.0
        eta = (elapsed / self.done * (self.total - self.done)
               if self.running and self.done > 1 else None)  # frame 0 is given, not tracked
        return {"running": self.running, "done": self.done, "total": self.total,
                "frame": self.frame,
                "error": self.error, "eta_s": None if eta is None else round(eta, 1)}


@dataclass
class Session:
    """One video being annotated: what the page shows and what tracking produced."""

    propagator: LabelPropagator
    roots: Roots
    video: Path | None = None
    frames: list[bytes] = field(default_factory=list)  # JPEG per frame
    size: tuple[int, int] = (0, 0)  # width, height
    fps: float = 24.0
    masks: dict[int, np.ndarray] = field(default_factory=dict)  # the user's, by frame
    points: list[tuple[float, float]] = field(default_factory=list)  # clicked on frame 0
    results: dict[int, bytes] = field(default_factory=dict)  # tracked ids (PNG) by frame
    confidence: dict[int, float] = field(default_factory=dict)  # the copy's, by tracked frame
    corrections: MaskCorrections | None = None  # the video's embeddings and tracked runs
    tracks: list[tuple[int, np.ndarray, np.ndarray]] = field(default_factory=list)
    progress: Progress = field(default_factory=Progress)
    activity: str | None = None  # "opening", "propagating" or "exporting"
    lock: threading.Lock = field(default_factory=threading.Lock)

    @contextlib.contextmanager
    def _doing(self, what: str) -> Iterator[None]:
        """Run an activity, refused while another runs."""
        self._begin(what)
        try:
            yield
        finally:
            self.activity = None

    def _begin(self, what: str) -> None:
        with self.lock:
            self._idle()
            self.activity = what

    def _idle(self) -> None:
        if self.activity is not None:
            raise UsageError(f"{self.activity} is running; wait for it to finish")

    def open(self, typed: str) -> dict[str, Any]:
        """Open a video or frame folder the path rule allows (see `Roots`)."""
        return self.open_path(self.roots.readable(typed))

    def open_path(self, path: Path) -> dict[str, Any]:
        """Decode a video (or frame folder) for the page; an unreadable one is a clear error."""
        with self._doing("opening"):
            frames = []
            with VideoReader(path) as reader:
                fps = reader.info.fps or 24.0
                for frame in reader:
                    if len(frames) == MAX_FRAMES:
                        raise UsageError(f"{path}: more than {MAX_FRAMES} frames; cut the video")
                    _, data = cv2.imencode(".jpg", frame[..., ::-1],
                                           [cv2.IMWRITE_JPEG_QUALITY, 90])
                    frames.append(data.tobytes())
            if not frames:
                raise ColortrackError(f"{path}: the video has no frames")
            height, width = _rgb(frames[0]).shape[:2]
            with self.lock:
                self.video, self.frames, self.size, self.fps = path, frames, (width, height), fps
                self.masks, self.points, self.results, self.tracks = {}, [], {}, []
                self.confidence, self.corrections = {}, None
                self.progress = Progress()
        self.roots.forget_uploads(keep=path)
        return self.state()

    def state(self) -> dict[str, Any]:
        with self.lock:
            return {"video": str(self.video) if self.video else None, "frames": len(self.frames),
                    "width": self.size[0], "height": self.size[1], "fps": self.fps,
                    "method": self.propagator.name, "activity": self.activity,
                    "annotated": sorted(self.masks), "points": self.points,
                    "tracked": bool(self.results or self.tracks),
                    "confidence": [self.confidence.get(i) for i in range(len(self.frames))],
                    "progress": self.progress.report()}

    def frame_jpeg(self, index: int) -> bytes:
        self.check_frame(index)
        return self.frames[index]

    def frame(self, index: int) -> np.ndarray:
        """Frame `index` as (H, W, 3) RGB, from its JPEG."""
        return _rgb(self.frame_jpeg(index))

    def check_frame(self, index: int) -> None:
        if not self.frames:
            raise UsageError("open a video first")
        if not 0 <= index < len(self.frames):
            raise UsageError(f"frame {index} is outside the video (0-{len(self.frames) - 1})")

    def set_mask(self, index: int, ids: np.ndarray) -> None:
        """Make `ids` (H, W) the user's mask of frame `index`; an empty one removes it."""
        with self.lock:
            self._idle()
            self.check_frame(index)
            if ids.shape != (self.size[1], self.size[0]):
                raise UsageError(f"mask is {ids.shape[1]}x{ids.shape[0]}, the video "
                                 f"{self.size[0]}x{self.size[1]}")
            if int(ids.max(initial=0)) > MAX_OBJECTS:
                raise UsageError(f"object ids go up to {MAX_OBJECTS}")
            if ids.any():
                self.masks[index] = ids.astype(np.uint8)
            else:
                self.masks.pop(index, None)

    def set_points(self, points: list[tuple[float, float]]) -> None:
        """The points clicked on frame 0, to track."""
        with self.lock:
            self._idle()
            if not self.frames:
                raise UsageError("open a video first")
            if len(points) > MAX_POINTS:
                raise UsageError(f"at most {MAX_POINTS} points can be tracked at once")
            width, height = self.size
            if not all(0 <= x < width and 0 <= y < height for x, y in points):
                raise UsageError("points must lie inside the frame")
            self.points = list(points)

    def mask(self, index: int) -> np.ndarray | None:
        """The user's mask of a frame, else the tracked one, else None."""
        self.check_frame(index)
        if index in self.masks:
            return self.masks[index]
        tracked = self.results.get(index)
        return None if tracked is None else _ids(tracked)

    def tracked_points(self, index: int) -> list[list[float | bool]]:
        found = [t for t in self.tracks if t[0] == index]
        if not found:
            return []
        _, xy, visible = found[0]
        return [[float(x), float(y), bool(v)] for (x, y), v in zip(xy, visible, strict=True)]

    def grabcut(self, index: int, box: tuple[float, float, float, float], obj: int) -> None:
        """Replace object `obj` in frame `index`'s mask by OpenCV's GrabCut proposal in `box`."""
        self.check_frame(index)
        if not 1 <= obj <= MAX_OBJECTS:
            raise UsageError(f"object ids go from 1 to {MAX_OBJECTS}")
        width, height = self.size
        x0, x1 = sorted(min(max(0, round(v)), width) for v in box[0::2])
        y0, y1 = sorted(min(max(0, round(v)), height) for v in box[1::2])
        if x1 - x0 < 4 or y1 - y0 < 4:
            raise UsageError("draw a box of at least 4x4 pixels around the object")
        if x1 - x0 >= width - 1 and y1 - y0 >= height - 1:
            raise UsageError("draw the box around the object, leaving some background outside")
        image = np.ascontiguousarray(self.frame(index)[..., ::-1])
        proposal = np.zeros(image.shape[:2], np.uint8)
        models = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        try:
            cv2.grabCut(image, proposal, (x0, y0, x1 - x0, y1 - y0), *models, 5,
                        cv2.GC_INIT_WITH_RECT)
        except cv2.error:  # too little background or foreground to model
            raise UsageError("GrabCut found no object in this box; draw a larger box, or use "
                             "the brush") from None
        found = (proposal == cv2.GC_FGD) | (proposal == cv2.GC_PR_FGD)
        current = self.mask(index)
        ids = np.zeros(image.shape[:2], np.uint8) if current is None else current.copy()
        ids[ids == obj] = 0
        ids[found] = obj
        self.set_mask(index, ids)

    def propagate(self, mode: str) -> None:
        """Track masks (from every annotated frame) or points (from frame 0), in a thread."""
        if mode not in ("masks", "points"):
            raise UsageError(f"unknown mode {mode!r}")
        with self.lock:
            self._idle()
            if not self.frames:
                raise UsageError("open a video first")
            if mode == "masks" and 0 not in self.masks:
                raise UsageError("frame 0 has no mask: draw the object on the first frame")
            if mode == "points" and not self.points:
                raise UsageError("click at least one point on frame 0")
            if mode == "masks":
                channels = len(np.unique(np.concatenate([m.ravel() for m in self.masks.values()])))
            else:
                channels = len(self.points) + 1
            self._check_memory(channels)
            self.activity = "propagating"
            self.progress = Progress(True, 0, len(self.frames), time.monotonic())
            masks, points = dict(self.masks), list(self.points)
        run = self._run_masks if mode == "masks" else self._run_points
        threading.Thread(target=self._run, args=(run, masks, points), daemon=True).start()

    def _check_memory(self, channels: int) -> None:
        """Refuse before starting what would not fit, as the command line does: float32 label
        maps at a quarter of the frame's width and height for the frames the tracker holds
        (the annotated ones and up to CONTEXT recent ones), and the results."""
        width, height = self.size
        held = len(self.masks) + CONTEXT
        needed = (width * height // 16 * 4 * channels * held
                  + len(self.frames) * width * height // 4)
        check_memory(needed, f"tracking {channels - 1} objects or points in {width}x{height}",
                     "use fewer objects or points, or a smaller video")

    def _run(self, run: Any, masks: dict[int, np.ndarray],
             points: list[tuple[float, float]]) -> None:
        try:
            run(masks, points)
        except Exception as error:  # shown on the page; the session stays usable
            self.progress.error = str(error) or type(error).__name__
        finally:
            self.progress.running = False
            self.activity = None

    def _run_masks(self, masks: dict[int, np.ndarray], _: list) -> None:
        """Propagate the user's masks through the video, both ways from each; results show as
        they come. The video's embeddings and each mask's runs are kept, so after a
        correction only the frames between its neighbouring masks are tracked again."""
        if self.corrections is None:
            self.corrections = MaskCorrections(self.propagator, _Frames(self.frames))
        self.corrections.set_masks(masks)
        self.tracks = []
        self.progress.total = self.corrections.work()
        for done, (index, ids, sure) in enumerate(self.corrections.run(), start=1):
            if ids is not None:
                self.results[index], self.confidence[index] = png(ids), sure
                self.progress.frame = index
            self.progress.done = done

    def _run_points(self, _: dict, points: list[tuple[float, float]]) -> None:
        """Track the points clicked on frame 0 through the video."""
        xy = np.array(points, np.float32)
        names = tuple(f"point{i + 1}" for i in range(len(xy)))
        tracks = []
        run = Tracker(self.propagator).track_points_frames(
            _Frames(self.frames), Keypoints(names, xy, np.ones(len(xy), bool)))
        for index, _frame, xy, visible in run:
            tracks.append((index, xy, visible))
            self.progress.done = index + 1
        self.results, self.tracks, self.confidence = {}, tracks, {}
        self.corrections = None  # its runs no longer match the results shown

    def export(self, typed: str, overwrite: bool) -> str:
        """Masks as DAVIS palette PNGs (or points as JSON and CSV) and the overlay MP4, into
        a folder the path rule allows, whole or not at all; one holding files is replaced
        only with `overwrite`, and then only the files an export wrote."""
        out = self.roots.writable(typed)
        with self._doing("exporting"):
            if not (self.results or self.tracks):
                raise UsageError("nothing to export yet: propagate first")
            if self.video is not None and out in (self.video, *self.video.parents):
                raise UsageError(f"{typed}: holds the video; choose another export folder")
            if out.is_dir() and any(map(shown, out.iterdir())) and not overwrite:
                raise UsageError(f"{typed}: already holds files; tick 'overwrite' to replace "
                                 "them")
            try:
                self._write(out, overwrite)
            except ColortrackError as error:  # name the folder as the user typed it
                raise type(error)(str(error).replace(str(out), typed)) from None
        count = len(self.tracks) or len(self.frames)
        return f"exported {count} frames to {typed}"

    def _write(self, out: Path, overwrite: bool) -> None:
        with (output_folder(out, overwrite=overwrite, ours=is_tracking_output) as stage,
              VideoWriter(stage / "overlay.mp4", self.fps) as writer):
            if self.tracks:
                names = tuple(f"point{i + 1}" for i in range(len(self.points)))
                write_track_json(stage / "points.json", names, (), self.tracks)
                write_track_csv(stage / "points.csv", names, self.tracks)
                for index, xy, visible in self.tracks:
                    writer.write(draw_points(self.frame(index), xy, visible, ()))
            else:
                for index in range(len(self.frames)):
                    ids = self.mask(index)
                    write_mask(stage / f"{index:05d}.png", ids)
                    writer.write(overlay_mask(self.frame(index), ids))


def finite(value: Any, what: str) -> float:
    """A JSON number that is a finite float (not a string, bool, NaN or 1e400)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UsageError(f"{what} must be a finite number")
    return float(value)

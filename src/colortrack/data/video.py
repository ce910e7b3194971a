"""Streaming video I/O through PyAV: video files or folders of frames in, H.264 MP4 out.

Frames are (H, W, 3) uint8 RGB arrays decoded one at a time. Any failure to read is a
ColortrackError naming the file and the problem. FFmpeg conceals the damage it can (a truncated
file just ends early; a container's frame count may overstate what decodes); a decode error it
cannot conceal stops reading with a ColortrackError naming the file and the frame index, however
many frames came before, as silently skipped frames would skew training clips and evaluation.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import queue
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import av
import cv2
import numpy as np
from PIL import Image

from colortrack.data.files import IMAGE_ERRORS, reason, shown, upright
from colortrack.errors import ColortrackError, UsageError

VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    ".mp4 .avi .mkv .mov .mpg .mpeg .webm .m4v .wmv .flv .ts .mts .m2ts .3gp .ogv .y4m".split()
)
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png"})

AV_ERRORS = (av.FFmpegError, OSError, ValueError, EOFError)
_INTER = {True: cv2.INTER_AREA, False: cv2.INTER_LINEAR}
Timed = tuple[Fraction, av.VideoFrame]


@dataclass(frozen=True)
class VideoInfo:
    """What a reader yields: frame size after resizing, rate and count after resampling."""

    path: Path
    width: int
    height: int
    fps: float | None
    num_frames: int | None


def natural_key(name: str) -> tuple[list[Any], str]:
    """Sort key putting 'f2' before 'f10': runs of ASCII digits compare as numbers, the rest
    case-folded, then the name itself (so 'f01' and 'f1' still have one order).

    Only ASCII digits count: `str.isdigit` is also true of '²' or '١', which `int` refuses or
    reads differently, and any Unicode name must sort without an error.
    """
    parts = re.split(r"([0-9]+)", name)  # odd positions hold the digit runs
    return [int(p) if i % 2 else p.casefold() for i, p in enumerate(parts)], name


def _frame_files(folder: Path) -> list[Path]:
    """Image files of a folder in natural order; dot files (unfinished writes) are skipped."""
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and shown(p)]
    return sorted((p for p in files if p.is_file()), key=lambda p: natural_key(p.name))


def read_image(path: Path) -> np.ndarray:
    """One RGB frame from an image file, upright by its EXIF orientation; any failure is a
    ColortrackError naming it."""
    try:
        with Image.open(path) as image:
            return np.asarray(upright(image).convert("RGB"))
    except IMAGE_ERRORS as error:
        raise ColortrackError(f"{path}: cannot read image ({reason(error)})") from None


def _quarter_turns(frame: av.VideoFrame) -> int:
    """Counter-clockwise quarter turns that show a frame as displayed: phones record sideways
    and store the turn in the stream's display matrix."""
    return round((frame.rotation or 0) / 90) % 4


def _rgb(frame: av.VideoFrame) -> np.ndarray:
    """A decoded frame as an upright (H, W, 3) RGB array."""
    image = frame.to_ndarray(format="rgb24")
    turns = _quarter_turns(frame)
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def _output_size(width: int, height: int, size: Any, short_side: int | None) -> tuple[int, int]:
    if size is not None:
        return int(size[0]), int(size[1])
    if short_side is not None:
        scale = short_side / min(width, height)
        return max(1, round(width * scale)), max(1, round(height * scale))
    return width, height


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    shrink = width * height < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=_INTER[shrink])


def exact(value: float) -> Fraction:
    """A frame rate as a small fraction, so 29.97 and 30000/1001 keep exact frame times."""
    return Fraction(value).limit_denominator(1001)


def _open_container(path: Path) -> Any:
    if not path.is_file():
        raise ColortrackError(f"{path}: {'not a file' if path.exists() else 'no such file'}")
    try:
        # absolute, so that a name like "pipe:1.mp4" is a file and never an FFmpeg protocol
        container = av.open(str(path.absolute()), metadata_errors="ignore")
    except AV_ERRORS as error:
        raise ColortrackError(f"{path}: not a readable video ({reason(error)})") from None
    if not container.streams.video:
        container.close()
        raise ColortrackError(f"{path}: no video stream")
    container.streams.video[0].thread_type = "AUTO"
    return container


def _period(stream: Any) -> Fraction:
    """Source frame period in seconds (1/25 when the container gives no rate)."""
    rate = stream.average_rate or stream.guessed_rate
    return 1 / Fraction(rate) if rate else Fraction(1, 25)


def _decoded(path: Path, container: Any) -> Iterator[Timed]:
    """Yield (timestamp in seconds, frame) in presentation order; errors become ColortrackError."""
    stream = container.streams.video[0]
    period, index = _period(stream), 0
    try:
        for frame in container.decode(stream):
            known = frame.pts is not None and frame.time_base is not None
            yield (frame.pts * Fraction(frame.time_base) if known else index * period), frame
            index += 1
    except AV_ERRORS as error:
        raise ColortrackError(f"{path}: decode error at frame {index} ({reason(error)})") from None


def _nearest(
    frames: Iterator[Timed], start: Fraction | None, step: Fraction, period: Fraction, unique: bool
) -> Iterator[av.VideoFrame]:
    """For times start, start + step, ...: the frame nearest each (ties go to the earlier one).

    `start` None means the first frame's time. With `unique` no frame is yielded twice, so a
    step shorter than the source period keeps the source rate instead of upsampling. The last
    frame still serves times up to one source `period` after it.
    """
    target, previous, emitted = start, None, None
    for ts, frame in frames:
        target = ts if target is None else target
        while ts >= target:
            pick = previous if previous and target - previous[0] <= ts - target else (ts, frame)
            if not (unique and pick[0] == emitted):
                emitted = pick[0]
                yield pick[1]
            target += step
        previous = (ts, frame)
    while previous and target is not None and target < previous[0] + period:
        if not (unique and previous[0] == emitted):
            emitted = previous[0]
            yield previous[1]
        target += step


class VideoReader:
    """Iterate the frames of a video file or a folder of frames, resized and resampled.

    `size` (width, height) or `short_side` (aspect kept) resizes; `fps` keeps the frame nearest
    each time k / fps (never more frames than the source has). For a folder, `fps` only labels it.
    Each iteration starts from the first frame.
    """

    def __init__(
        self,
        source: str | Path,
        *,
        size: tuple[int, int] | None = None,
        short_side: int | None = None,
        fps: float | None = None,
    ) -> None:
        if size is not None and short_side is not None:
            raise UsageError("give either size or short_side, not both")
        if (size is not None and min(size) < 1) or (short_side is not None and short_side < 1):
            raise UsageError("frame size must be positive")
        if fps is not None and not (math.isfinite(fps) and fps > 0):
            raise UsageError(f"fps must be a positive number, got {fps}")
        self.path = Path(source)
        self._size, self._short_side = size, short_side
        self._container: Any = None
        self._pending: Iterator[Timed] | None = None
        self._step: Fraction | None = None
        self._files = _frame_files(self.path) if self.path.is_dir() else []
        self.info = self._probe_folder(fps) if self.path.is_dir() else self._probe_file(fps)

    def _probe_folder(self, fps: float | None) -> VideoInfo:
        if not self._files:
            raise ColortrackError(f"{self.path}: folder holds no .jpg/.png frames")
        self._source_size = read_image(self._files[0]).shape[1::-1]
        width, height = _output_size(*self._source_size, self._size, self._short_side)
        return VideoInfo(self.path, width, height, fps, len(self._files))

    def _probe_file(self, fps: float | None) -> VideoInfo:
        """Open the file and decode its first frame, kept for the first iteration."""
        self._container = _open_container(self.path)
        stream = self._container.streams.video[0]
        decoded = _decoded(self.path, self._container)
        try:
            first = next(decoded)
        except StopIteration:
            self.close()
            raise ColortrackError(f"{self.path}: no decodable video frames") from None
        except ColortrackError:
            self.close()
            raise
        self._pending = itertools.chain([first], decoded)
        size = (first[1].width, first[1].height)
        if _quarter_turns(first[1]) % 2:  # displayed turned: width and height trade places
            size = size[::-1]
        width, height = _output_size(*size, self._size, self._short_side)
        rate = stream.average_rate or stream.guessed_rate
        source_fps = Fraction(rate) if rate else None
        self._period = _period(stream)
        count = stream.frames or None
        if count is None and source_fps and stream.duration and stream.time_base:
            count = round(stream.duration * Fraction(stream.time_base) * source_fps) or None
        if fps is not None and (source_fps is None or exact(fps) < source_fps):
            self._step = 1 / exact(fps)
            if count is not None and source_fps:
                count = math.ceil(count * exact(fps) / source_fps)
            source_fps = exact(fps)
        return VideoInfo(self.path, width, height, source_fps and float(source_fps), count)

    def __iter__(self) -> Iterator[np.ndarray]:
        return self._iter_folder() if self._files else self._iter_file()

    def _iter_folder(self) -> Iterator[np.ndarray]:
        for file in self._files:
            image = read_image(file)
            if image.shape[1::-1] != self._source_size:
                (w, h), (w0, h0) = image.shape[1::-1], self._source_size
                message = f"{file}: frame size {w}x{h} differs from {w0}x{h0} of the first frame"
                raise ColortrackError(message)
            yield _resize(image, self.info.width, self.info.height)

    def _iter_file(self) -> Iterator[np.ndarray]:
        frames, self._pending = self._pending, None
        if frames is None:
            self.close()
            self._container = _open_container(self.path)
            frames = _decoded(self.path, self._container)
        if self._step is not None:
            frames = ((None, f) for f in _nearest(frames, None, self._step, self._period, True))
        for _, frame in frames:
            yield _resize(_rgb(frame), self.info.width, self.info.height)

    def close(self) -> None:
        """Release the decoder; safe to call twice."""
        self._pending = None
        if self._container is not None:
            with contextlib.suppress(*AV_ERRORS):
                self._container.close()
            self._container = None

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


T = TypeVar("T")
_END = object()


def prefetch(items: Iterable[T], depth: int = 4) -> Iterator[T]:
    """Yield `items` while a background thread produces the next `depth` of them: JPEG and
    PyAV decoding release the GIL, so decoding overlaps the model. Errors are re-raised here;
    the thread stops when the consumer does."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[Any, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                ready.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_END, None))
        except BaseException as error:  # handed to the consumer, which raises it
            put((_END, error))

    worker = threading.Thread(target=produce, name="colortrack-decode", daemon=True)
    worker.start()
    try:
        while True:
            item, error = ready.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        worker.join()


def probe(source: str | Path) -> VideoInfo:
    """Size, rate and frame count of a video or frame folder, decoding only its first frame."""
    with VideoReader(source) as reader:
        return reader.info


def read_clip(
    path: str | Path, start: float, count: int, step: float, *, short_side: int | None = None
) -> list[np.ndarray]:
    """Seek to `start` seconds and decode `count` frames spaced `step` seconds apart.

    Each output is the frame nearest its time (start + i * step seconds after the stream's
    start time); a clip running past the end of the video is a ColortrackError.
    """
    path = Path(path)
    if count < 1 or not step > 0 or not start >= 0:
        raise UsageError(f"bad clip request: start={start} count={count} step={step}")
    container = _open_container(path)
    try:
        stream = container.streams.video[0]
        origin = Fraction(0)
        if stream.start_time is not None:
            origin = stream.start_time * Fraction(stream.time_base)
        first, backoff = origin + Fraction(start), Fraction(0)
        while True:  # a seek lands on a keyframe, and in some formats after the time asked for
            position = max(Fraction(0), first - backoff)
            container.seek(int(position / Fraction(stream.time_base)), stream=stream)
            frames = _decoded(path, container)
            head = next(frames, None)
            if head is None or head[0] <= first or position == 0:
                break
            backoff = max(Fraction(1), 2 * backoff)
        frames = itertools.chain([head] if head else [], frames)
        picked = _nearest(frames, first, Fraction(step), _period(stream), False)
        clip = [_rgb(frame) for frame in itertools.islice(picked, count)]
    except AV_ERRORS as error:
        raise ColortrackError(f"{path}: cannot seek to {start:.3f} s ({reason(error)})") from None
    finally:
        with contextlib.suppress(*AV_ERRORS):
            container.close()
    if len(clip) < count:
        raise ColortrackError(
            f"{path}: clip of {count} frames from {start:.3f} s every {step:.3f} s "
            "runs past the end of the video"
        )
    width, height = _output_size(clip[0].shape[1], clip[0].shape[0], None, short_side)
    return [_resize(image, width, height) for image in clip]


def _is_video_file(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS and shown(path)


def list_videos(root: str | Path) -> list[Path]:
    """Every video under `root`, recursively and sorted; a folder of frames counts as one video.

    A folder is a frame folder when it holds images and none of its subfolders holds videos.
    Names starting with '.' (such as unfinished atomic writes) are skipped.
    """
    root = Path(root)
    if not root.exists():
        raise ColortrackError(f"{root}: no such file or folder")
    if root.is_file():
        return [root] if _is_video_file(root) else []
    entries = [p for p in root.rglob("*") if all(map(shown, [p, *p.relative_to(root).parents]))]
    found = [p for p in entries if _is_video_file(p) and p.is_file()]
    folders = sorted([root, *(p for p in entries if p.is_dir())], key=lambda p: -len(p.parts))
    for folder in folders:  # deepest first, so frame folders inside count as videos
        if _frame_files(folder) and not any(folder in video.parents for video in found):
            found.append(folder)
    return sorted(found, key=lambda p: natural_key(str(p)))

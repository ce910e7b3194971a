"""H.264 MP4 output through PyAV, written atomically: the file appears only when it is whole."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import av
import numpy as np

from colortrack.data.files import atomic_path, reason
from colortrack.data.video import AV_ERRORS, exact
from colortrack.errors import ColortrackError, UsageError


class VideoWriter:
    """H.264 (libx264, yuv420p) MP4 writer; the file appears only when close() succeeds.

    x264's `preset` trades encoding time for size at the same quality (`crf`). The default,
    veryfast, encodes DAVIS 480p in 8 ms a frame on 2 cores against medium's 21 (x264's own
    default), a file 5% smaller at CRF 23. `tune` is x264's (zerolatency: no B-frames or
    lookahead, which a preview does without).
    """

    def __init__(self, path: str | Path, fps: float, *, crf: int = 23,
                 preset: str = "veryfast", tune: str | None = None) -> None:
        if not (math.isfinite(fps) and fps > 0):
            raise UsageError(f"fps must be a positive number, got {fps}")
        self.path, self._fps = Path(path), exact(fps)
        self._options = {"crf": str(crf), "preset": preset} | ({"tune": tune} if tune else {})
        if not self.path.parent.is_dir():
            raise ColortrackError(f"{self.path}: output folder does not exist")
        if self.path.is_dir():
            raise ColortrackError(f"{self.path}: is a folder; name the output video file")
        self._atomic = atomic_path(self.path)
        self._tmp = self._atomic.__enter__()
        self._container: Any = None
        self._shape: tuple[int, ...] | None = None
        self._count, self._finished = 0, False

    def write(self, frame: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame; odd sizes are padded to even by edge copies."""
        if self._finished:
            raise UsageError(f"{self.path}: writer is closed")
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frame must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
        if self._shape not in (None, frame.shape):
            raise ValueError(f"frame shape {frame.shape} differs from the first {self._shape}")
        self._shape = frame.shape
        frame = np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)), "edge")
        try:
            if self._container is None:
                options = {"movflags": "+faststart"}
                self._container = av.open(str(self._tmp.absolute()), "w", format="mp4",
                                          options=options)
                stream = self._container.add_stream("libx264", rate=self._fps)
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.options = self._options
            out = av.VideoFrame.from_ndarray(frame, format="rgb24")
            out.pts, out.time_base = self._count, 1 / self._fps
            self._container.mux(self._container.streams.video[0].encode(out))
        except AV_ERRORS as error:
            self._fail(f"cannot encode frame {self._count}", error)
        self._count += 1

    def _fail(self, what: str, error: Exception) -> None:
        self.abort()
        raise ColortrackError(f"{self.path}: {what} ({reason(error)})") from None

    def close(self) -> None:
        """Flush the encoder and move the finished file into place; safe to call twice."""
        if self._finished:
            return
        if self._container is None:
            self.abort()
            raise ColortrackError(f"{self.path}: no frames were written")
        try:
            self._container.mux(self._container.streams.video[0].encode(None))
            self._container.close()
        except AV_ERRORS as error:
            self._fail("cannot finish the video", error)
        self._finished = True
        self._atomic.__exit__(None, None, None)

    def abort(self) -> None:
        """Drop the unfinished file; a no-op after close()."""
        if self._finished:
            return
        self._finished = True
        if self._container is not None:
            with contextlib.suppress(*AV_ERRORS):
                self._container.close()
        self._atomic.__exit__(ColortrackError, ColortrackError("aborted"), None)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        self.close() if exc_type is None else self.abort()

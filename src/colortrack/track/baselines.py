"""Reference propagators that learn nothing: they bound what the learned embedding must beat.

`identity` repeats the first labels (the score of a tracker that never moves); `flow` warps the
previous prediction with dense optical flow, the classical baseline of Vondrick et al. (2018).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import cv2
import numpy as np

from colortrack.errors import ColortrackError
from colortrack.stages import stage


class FullSizeLabels:
    """Baselines copy labels at the frame's own size; `propagate` runs forward from frame 0."""

    def to_cells(self, labels: np.ndarray) -> np.ndarray:
        return np.asarray(labels, dtype=np.float32)

    def to_pixels(self, cells: np.ndarray, height: int, width: int) -> np.ndarray:
        return cells

    def propagate(self, frames: Iterable[np.ndarray], first_labels: np.ndarray
                  ) -> Iterator[np.ndarray]:
        """Labels of frames 1, 2, ... from frame 0's."""
        yield from self.copy(self.features(frames), self.to_cells(first_labels))  # type: ignore[attr-defined]


class IdentityPropagator(FullSizeLabels):
    """Predicts that nothing moves: every frame gets the labels of the annotated frame."""

    name = "identity"

    def features(self, frames: Iterable[np.ndarray]) -> Iterator[None]:
        for _ in frames:
            yield None

    def copy(self, features: Iterable[None], cells: np.ndarray) -> Iterator[np.ndarray]:
        """The first frame's labels for every later frame."""
        iterator = iter(features)
        next(iterator, None)  # the first frame carries the given labels, so it gets no prediction
        for _ in iterator:
            yield np.array(cells, dtype=np.float32)


class FlowPropagator(FullSizeLabels):
    """Warps the previous soft labels into each new frame with OpenCV DIS optical flow.

    Flow is computed backward, from frame t to frame t-1, so every pixel of frame t knows where
    it came from and pulls its label from there (`cv2.remap`, bilinear, border replicate): no holes
    or collisions, unlike pushing labels forward. Errors accumulate because each frame is warped
    from the previous prediction, as in the paper's baseline.

    `scale` < 1 computes the flow on downscaled gray frames and upsamples it (faster, coarser).
    At 854x480 the DIS MEDIUM preset takes about 40 ms per frame on one CPU core, so the default
    is full resolution.
    """

    name = "flow"

    def __init__(self, *, scale: float = 1.0, preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM):
        if not 0.0 < scale <= 1.0:
            raise ValueError(f"scale must be in (0, 1], got {scale}")
        self.scale = scale
        self.preset = preset

    def _gray(self, frame: np.ndarray) -> np.ndarray:
        gray = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
        if self.scale < 1.0:
            gray = cv2.resize(gray, self._size(*gray.shape), interpolation=cv2.INTER_AREA)
        return gray

    def _size(self, height: int, width: int) -> tuple[int, int]:
        """(width, height) of the gray frames the flow is computed on."""
        if self.scale == 1.0:
            return width, height
        return max(1, round(width * self.scale)), max(1, round(height * self.scale))

    def _flow(self, dis: cv2.DISOpticalFlow, gray: np.ndarray, prev: np.ndarray, shape):
        """Backward flow at full size: frame_t(p) ~ frame_{t-1}(p + flow(p))."""
        flow = dis.calc(gray, prev, None)
        h, w = shape
        if flow.shape[:2] != (h, w):
            sy, sx = h / flow.shape[0], w / flow.shape[1]
            flow = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR)
            flow[..., 0] *= sx
            flow[..., 1] *= sy
        return flow

    def features(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Gray frames, at `scale` of the frame's size."""
        for frame in frames:
            with stage("flow"):
                yield self._gray(frame)

    def copy(self, features: Iterable[np.ndarray], cells: np.ndarray) -> Iterator[np.ndarray]:
        """Labels warped from frame to frame, starting from the first frame's."""
        labels = np.asarray(cells, dtype=np.float32)
        iterator = iter(features)
        prev = next(iterator, None)
        if prev is None:
            return
        h, w = labels.shape[1:]
        if prev.shape != self._size(h, w)[::-1]:
            raise ColortrackError(f"labels are {w}x{h} but frames are of another size")
        dis = cv2.DISOpticalFlow_create(self.preset)
        grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        for gray in iterator:
            with stage("flow"):
                flow = self._flow(dis, gray, prev, (h, w))
                map_x, map_y = grid_x + flow[..., 0], grid_y + flow[..., 1]
                labels = np.stack([cv2.remap(c, map_x, map_y, cv2.INTER_LINEAR,
                                             borderMode=cv2.BORDER_REPLICATE) for c in labels])
            prev = gray
            yield labels

"""Reference propagators that learn nothing: they bound what the learned embedding must beat.

`identity` repeats the first labels (the score of a tracker that never moves); `flow` warps the
previous prediction with dense optical flow, the classical baseline of Vondrick et al. (2018).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import cv2
import numpy as np

from colortrack.errors import ColortrackError
from colortrack.stages import stage


class IdentityPropagator:
    """Predicts that nothing moves: every frame gets the labels of frame 0."""

    name = "identity"

    def propagate(
        self, frames: Iterable[np.ndarray], first_labels: np.ndarray,
        given: Mapping[int, np.ndarray] | None = None,
    ) -> Iterator[np.ndarray]:
        """Frame 0's labels, or from each frame in `given` on, that frame's."""
        labels, given = np.asarray(first_labels, dtype=np.float32), given or {}
        iterator = iter(frames)
        next(iterator, None)  # frame 0 carries the given labels, so it gets no prediction
        for index, _ in enumerate(iterator, start=1):
            if index in given:
                labels = np.asarray(given[index], dtype=np.float32)
            yield labels.copy()


class FlowPropagator:
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
            h, w = gray.shape
            size = (max(1, round(w * self.scale)), max(1, round(h * self.scale)))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        return gray

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

    def propagate(
        self, frames: Iterable[np.ndarray], first_labels: np.ndarray,
        given: Mapping[int, np.ndarray] | None = None,
    ) -> Iterator[np.ndarray]:
        """Warped labels of frames 1, 2, ...; from each frame in `given` on, warped from that
        frame's labels."""
        labels, given = np.asarray(first_labels, dtype=np.float32), given or {}
        iterator = iter(frames)
        first = next(iterator, None)
        if first is None:
            return
        h, w = first.shape[:2]
        if labels.shape[1:] != (h, w):
            raise ColortrackError(
                f"labels are {labels.shape[2]}x{labels.shape[1]} but frames are {w}x{h}"
            )
        dis = cv2.DISOpticalFlow_create(self.preset)
        grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        prev = self._gray(first)
        for index, frame in enumerate(iterator, start=1):
            with stage("flow"):
                gray = self._gray(frame)
            if index in given:
                labels, prev = np.asarray(given[index], dtype=np.float32), gray
                yield labels
                continue
            with stage("flow"):
                flow = self._flow(dis, gray, prev, (h, w))
                map_x, map_y = grid_x + flow[..., 0], grid_y + flow[..., 1]
                labels = np.stack([cv2.remap(c, map_x, map_y, cv2.INTER_LINEAR,
                                             borderMode=cv2.BORDER_REPLICATE) for c in labels])
            prev = gray
            yield labels

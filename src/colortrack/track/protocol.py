"""What every tracker method implements: the baselines and the learned model alike."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import numpy as np


class LabelPropagator(Protocol):
    """What every tracker method implements: the baselines and the learned model alike.

    `features` turns RGB uint8 (H, W, 3) frames, in video order, into what the method matches
    (an embedding, a gray frame), lazily, with memory that does not grow with the video's
    length. `copy` takes the features of a run of frames, in the order labels travel (forwards
    or backwards in time), and the first one's labels as `to_cells` gives them, and yields the
    labels of the others. `to_pixels` returns labels to (K, H, W) float32 at the
    frame's size: one-hot ids with channel 0 = background, or a background channel and one
    heatmap per keypoint. `propagate` is the plain forward run from frame 0.
    """

    name: str

    def features(self, frames: Iterable[np.ndarray]) -> Iterator[Any]: ...

    def copy(self, features: Iterable[Any], cells: Any) -> Iterator[Any]: ...

    def to_cells(self, labels: np.ndarray) -> Any: ...

    def to_pixels(self, cells: Any, height: int, width: int) -> np.ndarray: ...

    def propagate(self, frames: Iterable[np.ndarray], first_labels: np.ndarray
                  ) -> Iterator[np.ndarray]: ...

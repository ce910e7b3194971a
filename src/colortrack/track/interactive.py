"""Masks corrected again and again on one video: what the app and the simulated user run.

`MaskCorrections` turns a user's masks (object ids by frame) into the one-hot labels that
`Corrections` tracks both ways, keeps the embeddings of the video, and after each change tracks
only the frames between the changed mask's neighbouring masks.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from colortrack.track.corrections import Corrections
from colortrack.track.protocol import LabelPropagator
from colortrack.track.tracking import argmax_channels


class MaskCorrections:
    """Object ids tracked through `frames` from the masks given so far."""

    def __init__(self, propagator: LabelPropagator, frames: Sequence[np.ndarray],
                 features: Sequence[Any] | None = None) -> None:
        self.propagator, self.frames = propagator, frames
        self.lookup = np.zeros(1, np.uint8)  # channel -> object id (channel 0: background)
        self.masks: dict[int, np.ndarray] = {}
        self.session = Corrections(propagator, frames, features)

    def set_masks(self, masks: Mapping[int, np.ndarray]) -> None:
        """The user's masks by frame (frame 0's required); only the changed ones are new."""
        if 0 not in masks:
            raise ValueError("frame 0's mask is required")
        present = np.unique(np.concatenate([np.unique(m) for m in masks.values()]))
        lookup = np.concatenate([[0], present[present != 0]]).astype(np.uint8)
        if not np.array_equal(lookup, self.lookup):  # other objects: every label changes
            features = self.session.features
            self.session = Corrections(self.propagator, self.frames, features)
            self.lookup, self.masks = lookup, {}
        for index in set(self.masks) - set(masks):
            self.session.forget(index)
            del self.masks[index]
        for index, ids in sorted(masks.items()):
            if index not in self.masks or not np.array_equal(ids, self.masks[index]):
                self.masks[index] = ids.copy()
                self.session.give(index, self.one_hot(ids))

    def one_hot(self, ids: np.ndarray) -> np.ndarray:
        return (ids[None] == self.lookup[:, None, None]).astype(np.float32)

    def work(self) -> int:
        """Frames to embed and frames to track before `run` is done: for progress."""
        embed = len(self.frames) if self.session.features is None else 0
        return embed + len(self.session.stale())

    def run(self) -> Iterator[tuple[int, np.ndarray | None, float]]:
        """Embed the video if not yet done, yielding (index, None, 0.0) per frame, then track
        what changed, yielding (index, ids, confidence) per frame."""
        for index in self.session.embed():
            yield index, None, 0.0
        for index in self.session.update():
            yield index, self.ids(index), self.session.confidence[index]

    def least_confident(self) -> int | None:
        """The tracked frame the copy is least sure of: the one to correct next."""
        return self.session.least_confident()

    def ids(self, index: int) -> np.ndarray:
        """A frame's object ids: the given mask, or the tracked one."""
        if index in self.masks:
            return self.masks[index]
        return self.lookup[argmax_channels(self.session.labels(index))]

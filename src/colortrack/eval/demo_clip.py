"""The bundled demo clip and its J&F: what `colortrack demo` shows and what training checks
each checkpoint against.

The clip is DAVIS-2016 `dog`, frames 0-29 (CC BY 4.0), with a ground-truth mask per frame; it
ships inside the package, so scoring on it needs no data and no network.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from colortrack.data.annotations import read_mask
from colortrack.data.video import VideoReader
from colortrack.eval.metrics import evaluate_sequence
from colortrack.track.tracking import LabelPropagator, Tracker


def demo_clip() -> tuple[Path, list[Path]]:
    """The bundled clip and its ground-truth masks, one per frame."""
    folder = Path(str(resources.files("colortrack") / "assets" / "demo"))
    return folder / "dog.mp4", sorted((folder / "masks").glob("*.png"))


def score(predictions: Path, truth: list[Path]) -> tuple[float, float]:
    """Mean J and F (percent) of the predicted PNGs against the ground truth (DAVIS protocol)."""
    gt = np.stack([read_mask(p) for p in truth])
    pred = np.stack([read_mask(predictions / p.name) for p in truth])
    return score_ids(gt, pred)


def score_ids(gt: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """Mean J and F (percent) of (T, H, W) predicted ids against the truth (DAVIS protocol)."""
    scores = evaluate_sequence(gt, pred)
    return 100 * float(np.mean(scores.j)), 100 * float(np.mean(scores.f))


@dataclass(frozen=True)
class DemoScore:
    """J&F (percent) on the demo clip of a tracker, and of copying the first mask."""

    tracker: float
    identity: float

    @property
    def beats_identity(self) -> bool:
        return self.tracker > self.identity


class DemoClip:
    """The clip's first `frames` frames and masks, decoded once, to score trackers on."""

    def __init__(self, frames: int | None = None) -> None:
        video, truth = demo_clip()
        with VideoReader(video) as reader:
            self.frames = list(reader)[:frames]
        self.truth = np.stack([read_mask(p) for p in truth[:len(self.frames)]])
        j, f = score_ids(self.truth, np.broadcast_to(self.truth[0], self.truth.shape))
        self.identity = (j + f) / 2

    def score(self, propagator: LabelPropagator) -> DemoScore:
        """Track the clip from its first mask with `propagator`; its J&F beside identity's."""
        tracked = Tracker(propagator).track_frames(iter(self.frames), self.truth[0])
        j, f = score_ids(self.truth, np.stack([ids for _, _, ids in tracked]))
        return DemoScore((j + f) / 2, self.identity)

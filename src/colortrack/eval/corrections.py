"""A simulated user correcting the tracker: J&F as a function of the number of corrections.

As in the DAVIS Interactive benchmark (Caelles et al. 2018), after each propagation the user
gives the true mask of one frame and the tracker propagates again. The user picks the frame the
tracker is least confident of (what a real user of the app is shown), or, as an oracle reported
apart, the frame with the worst J. Scores cover the frames not given, frames 1 to T-2 as the
DAVIS protocol scores them, so 0 corrections is the plain benchmark.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from colortrack.data.davis import DavisDataset
from colortrack.data.video import read_image
from colortrack.eval.metrics import VOID_ID, evaluate_sequence
from colortrack.track.interactive import MaskCorrections
from colortrack.track.protocol import LabelPropagator

USERS = ("confidence", "oracle")


def simulate(propagator: LabelPropagator, frames: Sequence[np.ndarray], truth: np.ndarray,
             corrections: int, user: str, features: Sequence[Any] | None = None
             ) -> tuple[list[dict[str, float]], list[int]]:
    """Scores after 0, 1, ..., `corrections` corrections, and the frames the user gave, with
    the app's own `MaskCorrections` (only what a correction changes is tracked again).

    `truth` is the (T, H, W) ground truth (255 = void, given as background). Each score is
    {"J", "F"} in percent, averaged over objects, each object's over the frames scored and not
    given.
    """
    if user not in USERS:
        raise ValueError(f"user must be one of {USERS}, got {user!r}")
    clean = np.where(truth == VOID_ID, 0, truth).astype(np.uint8)
    session = MaskCorrections(propagator, frames, features)
    session.set_masks({0: clean[0]})
    scores, picked = [], []
    for step in range(corrections + 1):
        for _ in session.run():
            pass
        result = evaluate_sequence(truth, np.stack([session.ids(t) for t in range(len(frames))]))
        open_ = [t for t in range(1, len(frames) - 1) if t not in session.masks]
        columns = [t - 1 for t in open_]
        scores.append({"J": 100 * float(result.j[:, columns].mean(1).mean()),
                       "F": 100 * float(result.f[:, columns].mean(1).mean())})
        if step == corrections or not open_:
            break
        if user == "oracle":
            pick = min(open_, key=lambda t: (result.j[:, t - 1].mean(), t))
        else:
            pick = session.least_confident()
        assert pick is not None
        picked.append(pick)
        session.set_masks({**session.masks, pick: clean[pick]})
    return scores, picked


def curve(per_sequence: dict[str, list[dict[str, float]]]) -> list[float]:
    """Mean J&F over sequences after 0, 1, ... corrections (sequences with fewer frames to
    correct keep their last score)."""
    steps = max(len(s) for s in per_sequence.values())
    return [float(np.mean([(s[min(k, len(s) - 1)]["J"] + s[min(k, len(s) - 1)]["F"]) / 2
                           for s in per_sequence.values()])) for k in range(steps)]


def area(values: list[float]) -> float:
    """Area under the J&F curve over corrections 0..K, divided by K (trapezoids): its mean."""
    if len(values) < 2:
        return values[0]
    return float((sum(values) - (values[0] + values[-1]) / 2) / (len(values) - 1))


def format_curves(curves: dict[str, list[float]]) -> str:
    """A row per user: J&F (0-100) after each number of corrections, and the area."""
    steps = max(len(v) for v in curves.values())
    lines = [f"{'corrections (J&F, 0-100)':<26}" + "".join(f"{k:>7}" for k in range(steps))
             + f"{'area':>8}"]
    for user, values in curves.items():
        lines.append(f"{user:<26}" + "".join(f"{v:>7.1f}" for v in values)
                     + f"{area(values):>8.1f}")
    return "\n".join(lines)


def bench_corrections(root: str | Path, propagator: LabelPropagator, corrections: int, *,
                      sequences: list[str] | None = None, progress: bool = True
                      ) -> dict[str, Any]:
    """Both users on every DAVIS sequence: the mean J&F curves, their areas, and per sequence
    the scores and the frames given. Embeddings are computed once per sequence."""
    dataset = DavisDataset(root, sequences=sequences)
    results: dict[str, dict[str, Any]] = {user: {} for user in USERS}
    picks: dict[str, dict[str, list[int]]] = {user: {} for user in USERS}
    for name in tqdm(dataset.sequences, unit="sequence", disable=not progress):
        frames = [read_image(p) for p in dataset.frame_paths(name)]
        features = list(propagator.features(frames))
        truth = dataset.masks(name)
        for user in USERS:
            scores, given = simulate(propagator, frames, truth, corrections, user, features)
            results[user][name], picks[user][name] = scores, given
    curves = {user: curve(results[user]) for user in USERS}
    return {"corrections": curves["confidence"], "corrections_oracle": curves["oracle"],
            "corrections_area": area(curves["confidence"]),
            "corrections_oracle_area": area(curves["oracle"]),
            "corrections_sequences": {user: {name: {"scores": results[user][name],
                                                    "given": picks[user][name]}
                                             for name in dataset.sequences} for user in USERS}}

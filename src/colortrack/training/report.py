"""What a training run says about itself: whether its model tracks.

At each checkpoint the model tracks the bundled demo clip (`--method model`, as `colortrack
track --model RUN --method model` would) beside copying the first mask; the colorization loss
alone cannot tell a usable model from one that loses the object after three frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from colortrack.eval.demo_clip import DemoClip, DemoScore
from colortrack.model.network import Encoder
from colortrack.track.propagator import LearnedPropagator

# The shipped model on the demo clip with --method model (`colortrack demo`), and its recipe
# (docs/training.md): what a run that tracks reaches.
SHIPPED_DEMO_JF = 88.2
SHIPPED_RECIPE = "6,000 steps of batch 16 on about 8 minutes of video"


def score_on_demo(clip: DemoClip, encoder: Encoder, device: torch.device) -> DemoScore:
    """The encoder's J&F on the demo clip, tracking as `--method model` does (on a copy: the
    training model is left as it was)."""
    return clip.score(LearnedPropagator(encoder, device=device))


def loss_text(loss: float | None, val: dict[str, float] | None) -> str:
    """The held-out colorization loss beside the color prior's, else the training loss."""
    if val is not None:
        return f"held-out loss {val['val_loss']:.3f} (color prior {val['prior_loss']:.3f})"
    return "training loss " + ("-" if loss is None else f"{loss:.3f}")


def checkpoint_line(step: int, demo: DemoScore, loss: float | None,
                    val: dict[str, float] | None) -> str:
    return (f"step {step}: demo clip J&F {demo.tracker:.1f} (copying the first mask "
            f"{demo.identity:.1f}), {loss_text(loss, val)}")


@dataclass(frozen=True)
class TrainSummary:
    """How a run ended: its folder, last step, time, video, losses and demo-clip score."""

    out: Path
    steps: int
    seconds: float
    video_minutes: float  # of training video
    loss: float | None  # the last step's training loss; None when no step ran
    val: dict[str, float] | None  # the last held-out validation, with holdout videos
    demo: DemoScore | None  # None on the processes that do not write the run

    def text(self) -> str:
        """The closing lines: loss and time, demo-clip J&F, how to use the model, and a
        warning when it tracks no better than copying the first mask."""
        minutes, seconds = divmod(round(self.seconds), 60)
        lines = [f"trained {self.steps} steps into {self.out} in {minutes} min {seconds} s, "
                 f"final {loss_text(self.loss, self.val)}"]
        if self.demo is None:
            return lines[0]
        lines.append(f"demo clip J&F {self.demo.tracker:.1f} with --method model (copying the "
                     f"first mask {self.demo.identity:.1f}, the shipped model "
                     f"{SHIPPED_DEMO_JF:.1f})")
        if not self.demo.beats_identity:
            lines.append(
                "warning: this model tracks no better than copying the first mask; more steps "
                f"and more video usually fix it (this run: {self.steps:,} steps on "
                f"{self.video_minutes:.1f} minutes of video; the shipped model: {SHIPPED_RECIPE})")
        lines += [f"track with it: colortrack track VIDEO --mask FIRST.png --out RESULT "
                  f"--model {self.out}",
                  f"or see it on the demo clip: colortrack demo --model {self.out}"]
        return "\n".join(lines)

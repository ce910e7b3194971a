"""Profiler labels for the stages of tracking, so benchmarks can time them without patching.

`stage("copy")` is torch.profiler.record_function("colortrack.copy") where PyTorch is loaded,
and nothing where it is not (the baselines never load it). With no profiler running a label
costs a few microseconds, against tens of milliseconds per 480p frame. The labels: encode,
copy, upsample (the model), flow (the flow baseline), argmax, write (palette PNG), overlay
(drawing and encoding the overlay video).
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any


def stage(name: str) -> contextlib.AbstractContextManager:
    """Label the work inside as colortrack.<name> for torch.profiler."""
    torch = sys.modules.get("torch")
    if torch is None:
        return contextlib.nullcontext()
    return torch.profiler.record_function(f"colortrack.{name}")


def stage_seconds(profile: Any) -> dict[str, float]:
    """Seconds spent in each stage label of a finished torch.profiler.profile, by stage name."""
    return {e.key.removeprefix("colortrack."): e.cpu_time_total / 1e6
            for e in profile.key_averages() if e.key.startswith("colortrack.")}

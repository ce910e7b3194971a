"""Stage labels for tracking, so benchmarks can time the stages without patching the library.

`with stage("copy"):` labels the work inside in two ways: as colortrack.copy for torch.profiler
where PyTorch is loaded (the baselines never load it), and, while `timed()` runs, on a clock
that sums each stage's wall seconds over every thread. The clock is what benchmarks read: the
learned tracker embeds frames on a thread of its own, which torch.profiler does not see. The
labels: encode, copy, upsample (the model), flow (the flow baseline), argmax, write (palette
PNG), overlay (drawing and encoding the overlay video). Outside `timed()` a label costs a few
microseconds, against tens of milliseconds per 480p frame.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator

_lock = threading.Lock()
_totals: dict[str, float] | None = None  # while `timed()` runs


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Label the work inside as the stage `name`."""
    torch = sys.modules.get("torch")
    label = (torch.profiler.record_function(f"colortrack.{name}") if torch is not None
             else contextlib.nullcontext())
    with label:
        started = time.perf_counter()
        try:
            yield
        finally:
            with _lock:
                if _totals is not None:
                    _totals[name] = _totals.get(name, 0.0) + time.perf_counter() - started


@contextlib.contextmanager
def timed() -> Iterator[dict[str, float]]:
    """Sum every stage's wall seconds, in every thread, while inside: yields the totals by
    stage name, filled in as stages end. One at a time per process."""
    global _totals
    with _lock:
        if _totals is not None:
            raise RuntimeError("stages are already being timed")
        _totals = totals = {}
    try:
        yield totals
    finally:
        with _lock:
            _totals = None

"""Limits on settings and inputs, checked before anything is allocated.

A number outside its range, or settings whose buffers would not fit in this machine's available
memory, is a UsageError that names the setting and the limit, instead of an allocator failure,
an overflow or a division by zero deep inside a run.
"""

from __future__ import annotations

import os
from typing import Any

from colortrack.errors import UsageError

# (lowest, highest) usable value of each setting; far beyond any preset in both directions.
# Learning rates have none: a divergent one stops training with its own message.
TRAIN_LIMITS: dict[str, tuple[float, float]] = {
    "size": (8, 4096), "refs": (1, 64), "batch": (1, 65536), "fps": (0.01, 1000),
    "max_gap": (1, 1000), "steps": (1, 10**12),
    "lr_drop_step": (0, 10**12), "temperature": (1e-4, 1e4), "radius": (0, 1024),
    "cache_short_side": (0, 4096), "workers": (0, 256), "kmeans_pixels": (1, 10**8),
    "val_clips": (1, 10**5), "log_every": (1, 10**12), "val_every": (1, 10**12),
    "checkpoint_every": (1, 10**12), "preview_every": (1, 10**12),
}  # fmt: skip
PROPAGATION_LIMITS: dict[str, tuple[float, float]] = {
    "context": (0, 1000), "topk": (1, 65536), "radius": (0, 1024),
    "temperature": (1e-4, 1e4), "color_temperature": (1e-4, 1e6),
}  # fmt: skip


def check_ranges(settings: Any, limits: dict[str, tuple[float, float]], what: str) -> None:
    """Refuse any setting of `settings` outside its (lowest, highest) limits."""
    problems = []
    for name, (lowest, highest) in limits.items():
        value = getattr(settings, name)
        if value is not None and not lowest <= value <= highest:
            problems.append(f"{name}={value} (limit {lowest:g}..{highest:g})")
    if problems:
        raise UsageError(f"bad {what} setting: {'; '.join(problems)}")


def available_memory() -> int:
    """Bytes this machine can still allocate without swapping (MemAvailable on Linux)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def gib(size: float) -> str:
    return f"{size / 2**30:.1f} GiB"


def check_memory(needed: int, what: str, advice: str) -> None:
    """Refuse work whose buffers alone (`needed` bytes) exceed the available memory."""
    available = available_memory()
    if needed > available:
        raise UsageError(f"{what} needs at least {gib(needed)} of memory but {gib(available)} "
                         f"is available; {advice}")

"""colortrack: tracking that emerges from learning to colorize video."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Tracker", "__version__"]


def __getattr__(name: str) -> Any:
    """Import `Tracker` on first use, so `import colortrack` stays light (no numpy, no torch)."""
    if name == "Tracker":
        from colortrack.track.tracking import Tracker

        return Tracker
    raise AttributeError(f"module 'colortrack' has no attribute {name!r}")

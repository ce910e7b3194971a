"""colortrack: tracking that emerges from learning to colorize video."""

__version__ = "0.1.0"

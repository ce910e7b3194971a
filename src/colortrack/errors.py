"""Errors a user can act on: the CLI prints their message on one line, without a traceback."""


class ColortrackError(Exception):
    """Bad data or a failed operation (exit code 1). The message names the file and the problem."""


class UsageError(ColortrackError):
    """Wrong usage of a command or API: a missing or conflicting option (exit code 2)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, unwound like Ctrl-C so that a stopped run cleans up what it half-wrote."""

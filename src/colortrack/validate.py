"""Checks every command runs before any work: outputs never land in or over an input, and every
message a user sees fits on one line.

Paths are compared resolved, so symbolic links and `..` count: an output that is an input, lies
inside an input folder, or is a folder holding an input is refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from colortrack.errors import ColortrackError


def resolved(path: str | Path) -> Path:
    """The absolute path with every link followed; a link loop is an error naming the path."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError) as error:  # RuntimeError: a loop, before Python 3.13
        raise ColortrackError(f"{path}: cannot resolve the path ({error})") from None


def check_paths(inputs: Iterable[str | Path | None], folders: Iterable[str | Path | None] = (),
                files: Iterable[str | Path | None] = ()) -> None:
    """Refuse output `folders` and `files` that would write into or over an input."""
    ins = [(p, resolved(p)) for p in inputs if p is not None]
    outs = [(p, resolved(p), True) for p in folders if p is not None]
    outs += [(p, resolved(p), False) for p in files if p is not None]
    for out, out_real, is_folder in outs:
        for given, real in ins:
            if out_real == real:
                raise ColortrackError(f"{out}: is an input of this command; choose another output")
            if real in out_real.parents and real.is_dir():
                raise ColortrackError(f"{out}: lies inside the input {given}; choose an output "
                                 "outside it")
            if is_folder and out_real in real.parents:
                raise ColortrackError(f"{given}: is an input, inside the output folder {out}; "
                                 "choose another output folder")
    reals = [real for _, real, _ in outs]
    if len(set(reals)) < len(reals):
        raise ColortrackError("two outputs of this command are one path; choose different ones")


def printable(text: str) -> str:
    """`text` on one line: control characters escaped, undecodable file name bytes shown as
    escapes instead of failing to print."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)

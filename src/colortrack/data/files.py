"""Safe file writing: outputs appear whole or not at all, and inputs are never touched.

A failed write names the file the user asked for (not a temporary name) and leaves nothing
behind; the CLI prints it as one line.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, ImageOps

from colortrack.errors import ColortrackError

# What Pillow raises on damaged or hostile image files (broken PNG chunks raise SyntaxError).
# MemoryError: a damaged header can claim a size that Pillow then fails to allocate.
IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, MemoryError,
                Image.DecompressionBombError)


_ORIENTATION = 0x0112  # the EXIF tag of how a camera held the picture


def upright(image: Image.Image) -> Image.Image:
    """The image as viewers show it: turned by its EXIF orientation (phones store it sideways)."""
    if image.getexif().get(_ORIENTATION, 1) == 1:
        return image
    return ImageOps.exif_transpose(image)


def reason(error: BaseException) -> str:
    """An OS error's reason without the errno and file name (the caller names the file); an
    error without a message (MemoryError) by its kind."""
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    except OSError as error:
        raise ColortrackError(f"{path}: cannot write ({reason(error)})") from None
    try:
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(error, OSError):  # a full disk, a folder in the way: name the real file
            raise ColortrackError(f"{path}: cannot write ({reason(error)})") from None
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def shown(path: Path) -> bool:
    """Whether a name is not hidden; dot names are unfinished writes (ours or other tools')."""
    return not path.name.startswith(".")


def check_new_file(path: str | Path, overwrite: bool, inputs: tuple[str | Path, ...] = ()) -> None:
    """Refuse an output path that cannot or should not be written, before any work is done."""
    path = Path(path)
    if any(Path(p).resolve() == path.resolve() for p in inputs):
        raise ColortrackError(f"{path}: is an input of this command; choose another output")
    if path.is_dir():
        raise ColortrackError(f"{path}: is a folder; name the output file")
    if path.exists() and not overwrite:
        raise ColortrackError(f"{path}: already exists; pass --overwrite to replace it")
    if not path.parent.is_dir():
        raise ColortrackError(f"{path}: output folder does not exist")

"""What the app's page may read and write: the path rule.

The page may open videos and frame folders under the folder the app was started in, under the
folder of the video given on the command line, and files uploaded through the page; it may
export into new or existing folders under the first two (not those folders themselves). Paths
are checked after resolving `..` and symbolic links, and a refused path gets the same message
whether or not it exists, so the page cannot learn what lies outside. Uploads live in a private
temporary folder: each is deleted when another video is opened and all when the server stops.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
from pathlib import Path

from colortrack.errors import UsageError

_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}$")


class Roots:
    """The folders the page may use, and the uploads folder."""

    def __init__(self, base: str | Path, video: str | Path | None = None) -> None:
        self.base = Path(os.path.realpath(base))
        folders = [self.base]
        if video is not None:
            source = Path(os.path.realpath(video))
            folders.append(source if source.is_dir() else source.parent)
        self.folders = tuple(dict.fromkeys(folders))
        self.uploads = Path(tempfile.mkdtemp(prefix="colortrack-app-"))  # mode 0700
        self._count = 0
        self._lock = threading.Lock()

    def describe(self) -> str:
        return " and ".join(str(f) for f in self.folders)

    def _resolve(self, typed: str) -> Path:
        if not typed.strip():
            raise UsageError("type a path")
        try:
            return Path(os.path.realpath(self.base / Path(typed).expanduser()))
        except (ValueError, OSError, RuntimeError):  # a NUL byte, a link loop
            raise UsageError(f"{typed}: not a usable path") from None

    def _outside(self, typed: str) -> UsageError:
        return UsageError(f"{typed}: outside the folders this app may use ({self.describe()}); "
                          "start `colortrack app` in the folder that holds your videos")

    def readable(self, typed: str) -> Path:
        """The resolved path of a video or frame folder the page may open."""
        path = self._resolve(typed)
        if not any(path.is_relative_to(f) for f in (*self.folders, self.uploads)):
            raise self._outside(typed)
        return path

    def writable(self, typed: str) -> Path:
        """The resolved path of a folder the page may export into."""
        path = self._resolve(typed)
        if path in self.folders or not any(path.is_relative_to(f) for f in self.folders):
            raise self._outside(typed) if path not in self.folders else UsageError(
                f"{typed}: name a folder inside {path} for the export")
        return path

    def new_upload(self, filename: str) -> Path:
        """A fresh path in the uploads folder, keeping a short plain suffix of `filename`."""
        suffix = _SUFFIX.search(Path(filename).name)
        with self._lock:
            self._count += 1
            return self.uploads / f"upload-{self._count}{suffix.group() if suffix else ''}"

    def forget_uploads(self, keep: Path | None = None) -> None:
        """Delete every upload but `keep` (the video now open, if it is one)."""
        try:
            found = list(self.uploads.iterdir())
        except FileNotFoundError:  # closed: the server is stopping
            return
        for path in found:
            if path != keep:
                path.unlink(missing_ok=True)

    def close(self) -> None:
        """Delete the uploads folder and what it holds."""
        shutil.rmtree(self.uploads, ignore_errors=True)

"""Output folders that appear whole or not at all, with one writer at a time.

A command builds its results in a hidden folder beside the target, `.<name>.colortrack-*.tmp`,
and swaps it in with directory renames only when everything is written: an error, Ctrl-C or
SIGTERM before that leaves the target as it was; old results stay until the new ones are
complete. Entries of the target that the command does not write (a user's notes) are carried
into the new folder as hard links, so nothing the run did not write is ever lost.

The new folder keeps the old one's mode (setgid bit included), owner, group and extended
attributes (ACLs among them), as far as the system lets this user set them. A manifest,
`.colortrack-manifest`, lists the entries the command wrote: `--overwrite` removes only those
of an earlier run, never a user's file or folder that happens to bear a name the command uses.

An advisory lock (`flock` on `.<name>.colortrack-lock` beside the target) keeps a second
writer out with a one-line error instead of letting two runs interleave.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import queue
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from colortrack.data.files import reason
from colortrack.errors import ColortrackError

_RENAME_EXCHANGE = 2  # renameat2 flag: swap two paths in one step (Linux 3.15+)
_AT_FDCWD = -100
_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)


def _hidden(target: Path, kind: str) -> str:
    return f".{target.name}.colortrack-{kind}"


@contextlib.contextmanager
def locked(target: str | Path) -> Iterator[None]:
    """Hold the advisory lock of an output file or folder; a second holder gets an error.

    The lock file is removed on release; a holder re-checks after locking that the file it
    locked is still the one at that name, so removal cannot let two writers in.
    """
    target = Path(target)
    path = target.parent / _hidden(target, "lock")
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as error:
            raise ColortrackError(f"{target}: cannot use as output ({reason(error)})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ColortrackError(f"{target}: in use by another colortrack command; wait for it "
                                  "or choose another output") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed it between our open and our lock
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block is done: a swap half done is worse than a late
    stop."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically; False where the system or file system cannot."""
    if _renameat2 is None:
        return False
    result = _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _link_tree(source: Path, destination: Path) -> None:
    """Carry a file or folder into the new results without copying data where links work."""
    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    if source.is_dir() and not source.is_symlink():
        shutil.copytree(source, destination, symlinks=True, copy_function=link)
    elif source.is_symlink():
        os.symlink(os.readlink(source), destination)
    else:
        link(str(source), str(destination))


def swap_in(stage: Path, target: Path) -> None:
    """Make `stage` the folder at `target`, then remove what was there, signals held."""
    with _signals_deferred():
        if not target.exists() and not target.is_symlink():
            os.rename(stage, target)
            return
        if _exchange(stage, target):
            shutil.rmtree(stage, ignore_errors=True)  # now the old results
            return
        old = Path(tempfile.mkdtemp(prefix=_hidden(target, "old-"), suffix=".tmp",
                                    dir=target.parent))
        os.rmdir(old)
        os.rename(target, old)
        try:
            os.rename(stage, target)
        except OSError:
            os.rename(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)


MANIFEST = ".colortrack-manifest"


def _manifest(folder: Path) -> set[str]:
    """The entries an earlier run recorded writing into `folder` (none if it has no record)."""
    try:
        return set((folder / MANIFEST).read_text(encoding="utf-8").splitlines())
    except (OSError, UnicodeError):
        return set()


def _keep_attributes(old: Path | None, new: Path) -> None:
    """Give `new` the mode, owner, group and extended attributes of `old` (where this user may
    set them), or, for a first output, the usual mode (and the setgid bit a parent passed on)."""
    made = os.stat(new)
    if old is None:
        os.chmod(new, (0o777 & ~_umask()) | (made.st_mode & stat.S_ISGID))
        return
    was = os.stat(old)
    if (was.st_uid, was.st_gid) != (made.st_uid, made.st_gid):
        with contextlib.suppress(OSError):  # a group this user is not in, another owner
            os.chown(new, was.st_uid, was.st_gid)
    os.chmod(new, stat.S_IMODE(was.st_mode))  # after chown, which clears the setgid bit
    try:
        names = os.listxattr(old)
    except OSError:  # the file system has none
        return
    for name in names:
        with contextlib.suppress(OSError):  # e.g. security.* needing privileges
            os.setxattr(new, name, os.getxattr(old, name))


def _stale(target: Path) -> list[Path]:
    """Staging folders of runs that were killed outright (only called under the lock)."""
    prefix = _hidden(target, "")
    return [p for p in target.parent.iterdir()
            if p.name.startswith(prefix) and p.name.endswith(".tmp") and p.is_dir()]


@contextlib.contextmanager
def output_folder(
    target: str | Path, *, overwrite: bool, ours: Callable[[str], bool], what: str = "results"
) -> Iterator[Path]:
    """Lock `target`, yield an empty staging folder beside it, and swap it in on success.

    Entries for which `ours(name)` holds and that the folder's manifest lists are this
    command's earlier results: they need `overwrite`, and are replaced as a whole. An entry
    `ours` would claim but that no manifest lists is the user's: it is refused, never replaced.
    Other entries are carried over untouched. On any failure the staging folder goes, and so
    do the parents of `target` this call created.
    """
    target = Path(target)
    if target.is_symlink():  # the swap must replace the folder it names, not the link
        target = Path(os.path.realpath(target))
    if target.exists() and not target.is_dir():
        raise ColortrackError(f"{target}: exists and is not a folder")
    created = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
    try:
        if not target.parent.is_dir() and target.parent.exists():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ColortrackError(f"{target}: cannot use as output folder ({reason(error)})") from None
    try:
        with locked(target):
            yield from _build(target, overwrite, ours, what)
    except BaseException:
        with contextlib.suppress(OSError):
            for folder in created:
                folder.rmdir()  # only when empty: nothing else is ever removed
        raise


def _build(target: Path, overwrite: bool, ours: Callable[[str], bool], what: str
           ) -> Iterator[Path]:
    try:
        entries = sorted(p.name for p in target.iterdir()) if target.is_dir() else []
    except OSError as error:
        raise ColortrackError(f"{target}: cannot use as output folder ({reason(error)})") from None
    recorded = _manifest(target)
    theirs = [n for n in entries if ours(n) and n not in recorded]
    if theirs:
        raise ColortrackError(f"{target / theirs[0]}: was not written by colortrack (no record "
                              f"in {MANIFEST}); move it away or choose another output")
    earlier = [n for n in entries if ours(n)]
    if earlier and not overwrite:
        raise ColortrackError(f"{target}: already holds {what} ({earlier[0]}, ...); pass "
                              "--overwrite to replace them")
    for stale in _stale(target):
        shutil.rmtree(stale, ignore_errors=True)
    try:
        stage = Path(tempfile.mkdtemp(prefix=_hidden(target, ""), suffix=".tmp",
                                      dir=target.parent))
    except OSError as error:
        raise ColortrackError(f"{target}: cannot use as output folder ({reason(error)})") from None
    try:
        yield stage
        written = {p.name for p in stage.iterdir()}
        for name in entries:
            if name == MANIFEST or ours(name):
                continue
            if name in written:  # a name `ours` did not claim: the entry stays the user's
                raise ColortrackError(f"{target / name}: was not written by colortrack; move "
                                      "it away or choose another output")
            _link_tree(target / name, stage / name)
        # Earlier runs' entries that are carried stay recorded: a later run may replace them.
        record = sorted((written | (recorded & set(entries))) - {MANIFEST})
        (stage / MANIFEST).write_text("".join(f"{n}\n" for n in record), encoding="utf-8")
        _keep_attributes(target if target.is_dir() else None, stage)  # mkdtemp makes 0700
        swap_in(stage, target)
    except BaseException as error:
        shutil.rmtree(stage, ignore_errors=True)
        if isinstance(error, OSError):
            raise ColortrackError(f"{target}: cannot write ({reason(error)})") from None
        if isinstance(error, ColortrackError) and str(stage) in str(error):  # name the real file
            raise type(error)(str(error).replace(str(stage), str(target))) from error
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def write_behind(depth: int = 4) -> Iterator[Callable[..., None]]:
    """`submit(fn, *args)`: run the calls in order on a background thread, at most `depth`
    waiting (what they hold stays bounded), so that writing overlaps tracking.

    The first call that fails stops the rest; its error is raised by the next `submit`, or on
    leaving. Leaving waits for every call submitted.
    """
    calls: queue.Queue = queue.Queue(maxsize=depth)
    failed: list[BaseException] = []

    def work() -> None:
        while (call := calls.get()) is not None:
            if not failed:
                try:
                    call[0](*call[1])
                except BaseException as error:  # raised in the caller's thread
                    failed.append(error)

    def submit(fn: Callable[..., object], *args: object) -> None:
        if failed:
            raise failed[0]
        calls.put((fn, args))

    worker = threading.Thread(target=work, name="colortrack-write", daemon=True)
    worker.start()
    try:
        yield submit
    finally:
        calls.put(None)
        worker.join()
    if failed:
        raise failed[0]

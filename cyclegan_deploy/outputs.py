"""Rules for every output a command writes: the overwrite rule (--force), OS file locks on run dirs and
outputs, writability checked before long work, one-line OS-error messages, temp names that say "partial" and
whose PID, and cleaning the temp files of processes that died. artifacts.py holds the atomic writer itself.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from cyclegan_deploy.errors import OutputError


def temp_name(path: Path) -> str:
    """Hidden, unique, keeps the real suffix (PyAV/PIL pick the format from it), says "partial" and whose."""
    return f".{path.stem}.partial-{os.getpid()}-"


def refuse_existing(path: Path, force: bool, option: str = "-o") -> None:
    """The one overwrite rule: an existing output is refused unless --force."""
    path = Path(path)
    if path.exists() and not force:
        what = "folder" if path.is_dir() else "file"
        raise OutputError(f"{path}: the output {what} already exists; pass --force to replace it, or choose "
                          f"another {option}")


def os_error_message(e: OSError, path: Path | str | None = None) -> str:
    """One line for an operating-system error on an output: the file, what the system said, the fix."""
    where = e.filename or path or ""
    fix = {errno.ENOSPC: "the disk is full: free space or write somewhere else",
           errno.EDQUOT: "the disk quota is exhausted: free space or write somewhere else",
           errno.EACCES: "no permission to write there: choose another output folder or fix its permissions",
           errno.EPERM: "no permission to write there: choose another output folder or fix its permissions",
           errno.EROFS: "the file system is read-only: choose another output folder"}.get(
        e.errno or 0, "check the path, its permissions and the free space")
    return f"{where}: {e.strerror or e}; {fix}" if where else f"{e.strerror or e}; {fix}"


def check_writable(folder: Path) -> None:
    """Create `folder` and prove a file can be written there, before long work starts (an export, a training
    run, a benchmark); OutputError with the reason otherwise."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".cgdeploy-write-test-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(os_error_message(e, folder)) from e


@contextlib.contextmanager
def locked(target: Path, option: str = "-o") -> Iterator[None]:
    """Hold an OS file lock on `target` (a run dir or an output file) for the block: a second cgdeploy
    process asking for the same target is refused at once, naming the holder's PID. The lock file sits beside
    the target (`.<name>.lock`) and is released by the OS if this process dies."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / f".{target.name}.lock"
    fd = _acquire(lock_path, target, option)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        # unlink while still holding the lock: a process that opened the old file finds it replaced (below)
        with contextlib.suppress(OSError):
            os.unlink(lock_path)
        os.close(fd)


def _acquire(lock_path: Path, target: Path, option: str) -> int:
    """flock the lock file, retrying if the file we locked was unlinked by a holder releasing it meanwhile
    (otherwise two processes could each hold a lock on a different inode of the same name)."""
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise OutputError(f"{target}: in use by another cgdeploy process (PID {holder}); wait for it to finish "
                              f"or choose another {option}") from None
        try:
            same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_CLEANED: set[tuple[Path, str]] = set()  # (folder, stem) already swept by this process


def clean_stale_partials(path: Path) -> list[Path]:
    """Remove temp outputs for `path` left by a process that no longer exists (killed, power cut): their names
    carry the writer's PID (temp_name). Once per folder and name per process: a job writing thousands of files
    into one folder must not rescan it for each."""
    path = Path(path)
    key = (path.parent.resolve(), path.stem)
    if key in _CLEANED:
        return []
    _CLEANED.add(key)
    removed = []
    prefix = f".{path.stem}.partial-"
    for stale in path.parent.glob(f"{glob.escape(prefix)}*"):
        pid = stale.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
            removed.append(stale)
    return removed


def missing_dirs(folder: Path) -> list[Path]:
    """`folder` and its ancestors that do not exist yet, deepest first: what a run will create, and so what a
    failed run removes again (remove_empty_dirs) instead of leaving empty folders behind."""
    out, p = [], Path(folder).absolute()
    while not p.exists() and p != p.parent:
        out.append(p)
        p = p.parent
    return out


def remove_empty_dirs(dirs: Sequence[Path]) -> None:
    """rmdir each folder that is empty, deepest first (a folder with anything in it stays)."""
    for d in sorted(set(dirs), key=lambda p: len(p.parts), reverse=True):
        try:
            d.rmdir()
        except OSError:
            pass

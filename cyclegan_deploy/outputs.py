"""Rules for every output a command writes: the overwrite rule (--force), OS file locks on run dirs and
outputs, writability checked before long work, one-line OS-error messages, temp names that say "partial" and
whose PID, and cleaning the temp files of processes that died. artifacts.py holds the atomic writer itself.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
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
    return f"{where}: {e.strerror or e}; {fix}"


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
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise OutputError(f"{target}: in use by another cgdeploy process (PID {holder}); wait for it to finish "
                              f"or choose another {option}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            with contextlib.suppress(OSError):
                os.unlink(lock_path)
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_partials(path: Path) -> list[Path]:
    """Remove temp outputs for `path` left by a process that no longer exists (killed, power cut): their names
    carry the writer's PID (temp_name)."""
    removed = []
    for stale in Path(path).parent.glob(f".{Path(path).stem}.partial-*"):
        pid = stale.name[len(f".{Path(path).stem}.partial-"):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
            removed.append(stale)
    return removed

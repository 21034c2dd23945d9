"""Rules for every output a command writes: the overwrite rule (--force), OS file locks on run dirs and
outputs, writability checked before long work, one-line OS-error messages naming the final file (never a temp
name), temp names that say "partial" and whose PID, cleaning the temp files of processes that died, and
removing the empty folders a failed command created. artifacts.py holds the atomic writer itself.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import os
import re
import shutil
import tempfile
import time
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
    if e.errno in (errno.EEXIST, errno.ENOTDIR) and where and not Path(os.fsdecode(where)).is_dir():
        # mkdir(parents=True) met a file where a folder of the output path must be: name that file
        blocker = next((p for p in (Path(os.fsdecode(where)), *Path(os.fsdecode(where)).parents)
                        if p.exists() and not p.is_dir()), Path(os.fsdecode(where)))
        return f"{blocker}: a file is in the way where a folder is needed; choose another output path"
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
        probe_failed = not e.filename or Path(os.fsdecode(e.filename)).name.startswith(".cgdeploy-write-test-")
        where = folder if probe_failed else os.fsdecode(e.filename)  # the folder, or the parent that cannot be made
        raise OutputError(os_error_message(OSError(e.errno, e.strerror), where)) from e


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
            holder = _holder_pid(fd)
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


def _holder_pid(fd: int) -> str:
    """The PID the holder writes right after it takes the lock (a few ms to wait for, at most)."""
    for _ in range(50):
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text:
            return text
        time.sleep(0.01)
    return "unknown"


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


# outputs.temp_name + mkstemp/mkdtemp's 8 random characters: .g_AtoB.fp16.partial-123-ab12cd34.onnx
_PARTIAL = re.compile(r"^\.(?P<stem>.+)\.partial-\d+-[a-z0-9_]{8}(?P<suffix>.*)$")


def public_path(path: str | Path) -> Path:
    """The name a temp output will have once committed (any temp folder in the path too)."""
    return Path(*[m.group("stem") + m.group("suffix") if (m := _PARTIAL.match(part)) else part
                  for part in Path(path).parts])


def _shown(filename: str | Path, target: Path) -> Path | None:
    """How to name `filename` to the user if it is one of `target`'s outputs: the final name of a file under
    it; `target` itself for its temp or lock file beside it (.<name>.partial-*, .<name>.lock); else None."""
    path, root = public_path(filename), Path(target)
    if path.absolute().is_relative_to(root.absolute()):
        return path
    beside = Path(filename).absolute()
    return root if beside.parent == root.absolute().parent and beside.name.startswith(f".{root.name}.") else None


@contextlib.contextmanager
def output_errors(target: Path) -> Iterator[None]:
    """OSErrors raised while writing `target` (a file or a folder and what is under it) become an OutputError
    naming the final file, not its temp name; OSErrors about other files (inputs) pass through unchanged."""
    try:
        yield
    except OSError as e:
        shown = _shown(e.filename, target) if isinstance(e.filename, (str, Path)) else Path(target)
        if shown is None:
            raise
        bare = OSError(e.errno, e.strerror) if e.errno is not None else e
        raise OutputError(os_error_message(bare, shown)) from e


@contextlib.contextmanager
def removed_if_failed(folder: Path) -> Iterator[None]:
    """The folders this block creates on the way to `folder` are removed again if it fails (Ctrl-C and SIGTERM
    included) while they are still empty: a refused or failed command leaves no empty output folder behind."""
    created = missing_dirs(folder)
    try:
        yield
    except BaseException:
        remove_empty_dirs(created)
        raise

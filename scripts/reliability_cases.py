#!/usr/bin/env python3
"""Reliability acceptance cases: the `cgdeploy` CLI tried as a hostile new user would, judged against the
standard README.md "Errors and exit codes" sets, with a case table as the report.

    python scripts/reliability_cases.py [-o benchmarks/results/reliability_cases.md] [--only CLASS[,CLASS]]
                                        [--jobs 2] [--keep]

Everything is made here, in /tmp/relcases-<pid> (removed at the end unless --keep): tiny synthetic data, a
1-epoch run and its export, generated clips and images, and broken inputs (NaN/Inf checkpoints and graphs,
random bytes, a truncated clip, a classifier, PNG headers claiming huge sizes...). No downloads.

Each case runs `python -m cyclegan_deploy ...` as a subprocess (cwd = the scratch folder, so paths in commands
and messages are relative) with a timeout, and is judged on:
  - the exit code (0 done, 1 error, 2 usage, 143 SIGTERM);
  - an error (exit 1): exactly one stderr line starting `error:`, the last one, naming the relevant file (or
    option) and what the case names; SIGTERM: the last line `terminated (SIGTERM)`;
  - no "Traceback" unless --debug; no library noise (Python warnings, exporter / runtime log lines);
  - no file or folder whose name holds "partial", ".tmp", ".lock" or a write probe left in the case's folder or
    in the fixtures; no empty folder left by a failed run; inputs byte-identical (sha256) before and after;
  - what the case itself checks (file modes, sizes, frame counts, the refused output unchanged...).
Verdicts: PASS, FAIL (the product against the standard), SKIP (cannot be tested honestly here: the reason is
given), HARNESS (this script could not set the case up, e.g. the process ended before the signal was due).

Classes (numbers or names for --only): 1 nonfinite, 2 oserror, 3 sigterm, 4 bounds, 5 tiny, 6 concurrency,
7 overwrite, 8 permissions, 9 messages, 10 ux.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import errno
import fcntl
import hashlib
import json
import os
import platform
import pty
import random
import re
import select
import shlex
import shutil
import signal
import stat
import struct
import subprocess
import sys
import termios
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "reliability_cases.md"

CLASSES: dict[int, tuple[str, str]] = {
    1: ("nonfinite", "Non-finite weights and outputs"),
    2: ("oserror", "OS errors on outputs (not a folder, read-only, disk full, /proc, /sys)"),
    3: ("sigterm", "SIGTERM to real processes"),
    4: ("bounds", "Resource bounds"),
    5: ("tiny", "Tiny inputs"),
    6: ("concurrency", "Two processes, one output"),
    7: ("overwrite", "Overwrite rule (--force)"),
    8: ("permissions", "Output permissions follow the umask"),
    9: ("messages", "Misleading messages"),
    10: ("ux", "UX: help, --debug, tables, progress, resume, TensorRT"),
}

TRAIN_ARGS = ["--epochs", "1", "--epochs-decay", "0", "--crop-size", "32", "--load-size", "32", "--ngf", "8",
              "--n-blocks", "1", "--workers", "0"]
ONNX = "fx/EXP/g_AtoB.onnx"  # the exported tiny generator (AtoB)
G_A = "fx/RUN/latest_net_G_A.pth"  # the trained tiny generator file
MODEL = ["--model", ONNX]
BENCH_FAST = ["--repeats", "3", "--warmup", "1", "--max-seconds", "5"]

LEFTOVER = re.compile(r"partial|\.tmp|\.lock|cgdeploy-write-test")
NOISE = re.compile(
    r"Warning\b|warnings\.warn|TracerWarning|\[W:onnxruntime|onnxruntime.*\b[WE]:|^\s*\[?W\d{4}|^\[W |"
    r"^WARNING|^INFO|^DEBUG|\[torch\.onnx\]|torch\.onnx|onnxscript|Applied \d+ of general pattern|"
    r"^\s*warn\(|\[libx26[45]|\[h264|\[aac|\[mov|\[mp4|\[swscaler|^\s*return F\.|UserWarning|"
    r"FutureWarning|DeprecationWarning|RuntimeWarning")
OWN_PREFIXES = ("error:", "warning:", "note:")  # the product's own lines (not library noise)
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[()][A-Z0-9]")


# ---------------------------------------------------------------------------------------------------- cases

@dataclasses.dataclass
class Case:
    cid: str
    cls: int
    what: str
    argv: list[str]  # after `python -m cyclegan_deploy`
    expect: int  # exit code (for kind "pair": the winner's; the other must exit 1 naming the winner's PID)
    names: tuple[str, ...] = ()  # the error line must contain one of these (a file, a folder, an option)
    needs: tuple[str | tuple[str, ...], ...] = ()  # ... and each of these (a tuple: any of), case-insensitive
    kind: str = "plain"  # plain | sigterm | pair | pty
    prepare: Callable[[Path], Any] | None = None  # gets the case folder; may raise Skip
    check: Callable[[Result], list[str]] | None = None  # extra checks: failure reasons
    cleanup: Callable[[Path], None] | None = None
    outputs: tuple[str, ...] = ()  # output paths (not inputs even if they exist before the run)
    protect: tuple[str, ...] = ()  # more paths that must stay byte-identical (a refused output)
    trigger: Callable[[Live], bool] | None = None  # sigterm: when to send it
    debug: bool = False  # a traceback is expected (--debug)
    umask: int | None = None  # run under this umask (default: the script's 022)
    timeout: float = 150.0
    phase: int = 1  # 0: setup, in order, first; 1: may run in parallel; 2: alone, in order, last
    cols: int = 80  # pty width
    pid: bool = True  # pair: the refused run must name the other's PID (outputs the README says are locked)
    sweep: tuple[float, ...] = ()  # sigterm: try these delays after `trigger` holds, one run each, until one fails
    skip: str | None = None


class Skip(Exception):
    """This case cannot be tested honestly here (the reason is reported)."""


@dataclasses.dataclass
class Result:
    case: Case
    cdir: Path
    rc: int | None
    out: str
    err: str
    seconds: float
    pid: int = 0
    other: Result | None = None  # pair: the second process
    note: str = ""
    prepared: Any = None


@dataclasses.dataclass
class Live:
    """What a SIGTERM trigger sees while the process runs."""
    cdir: Path
    out: list[str]
    err: list[str]
    started: float
    state: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def text(self) -> str:
        return "".join(self.out) + "".join(self.err)


def when(cond: Callable[[Live], bool], delay: float = 0.0) -> Callable[[Live], bool]:
    """Fire `delay` seconds after `cond` first holds."""
    def fire(live: Live) -> bool:
        if "seen" not in live.state and cond(live):
            live.state["seen"] = time.monotonic()
        return "seen" in live.state and time.monotonic() - live.state["seen"] >= delay
    return fire


def partial_in(rel: str) -> Callable[[Live], bool]:
    return lambda live: any("partial" in p.name for p in (live.cdir / rel).rglob("*")) if (live.cdir / rel).exists() \
        else False


# ------------------------------------------------------------------------------------------- small helpers

S: dict[str, Any] = {}  # scratch, env, mount support, fixture facts


def scratch() -> Path:
    return S["scratch"]


def rel(p: Path | str) -> str:
    try:
        return str(Path(p).relative_to(scratch()))
    except ValueError:
        return str(p)


def sha(path: Path) -> dict[str, str]:
    """relpath -> sha256 of every file under path (or the file itself)."""
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    out = {}
    if path.is_dir():
        for f in sorted(path.rglob("*")):
            if f.is_file() and not f.is_symlink():
                out[str(f.relative_to(path))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def leftovers(root: Path) -> list[str]:
    if not root.exists():
        return []
    return [rel(p) for p in root.rglob("*") if LEFTOVER.search(p.name)]


def all_dirs(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_dir() and not p.is_symlink()} if root.is_dir() else set()


def is_empty_tree(d: Path) -> bool:
    return all(p.is_dir() for p in d.rglob("*"))


def cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "cyclegan_deploy", *argv]


def show(argv: list[str]) -> str:
    return "cgdeploy " + " ".join(shlex.quote(a) for a in argv)


def png_size(path: Path) -> tuple[int, int]:
    from PIL import Image
    with Image.open(path) as im:
        return im.size[1], im.size[0]  # H, W


def video_facts(path: Path) -> tuple[int, int, int]:
    """(frames decoded, height, width) of the first video stream."""
    import av
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        n = sum(1 for _ in c.decode(s))
        return n, s.codec_context.height, s.codec_context.width


def png_header(path: Path, h: int, w: int) -> None:
    """A PNG whose header claims h x w RGB and whose data holds a few rows only (a decompression bomb's shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    rows = zlib.compress(b"".join(b"\x00" + bytes(3 * min(w, 4096)) for _ in range(4)))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def write_img(path: Path, h: int, w: int, seed: int = 0, mode: str = "RGB") -> None:
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode).save(path)


# ----------------------------------------------------------------------------------------- mounts (tmpfs)

def mount_support() -> str | None:
    """None if tmpfs can be mounted here (root with CAP_SYS_ADMIN), else why not."""
    if os.geteuid() != 0:
        return "not root: a real read-only / full file system needs a tmpfs mount"
    probe = scratch() / ".mountprobe"
    probe.mkdir()
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)], capture_output=True,
                           text=True)
        if r.returncode:
            return f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode})"
        subprocess.run(["umount", str(probe)], check=True)
        return None
    finally:
        probe.rmdir()


def mount_tmpfs(path: Path, ro: bool = False, full: bool = False) -> None:
    if S["mount"] is not None:
        raise Skip(S["mount"])
    path.mkdir(parents=True, exist_ok=True)
    opts = "size=1m,mode=0755" + (",ro" if ro else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], check=True, capture_output=True)
    if full:  # fill every page: any new data now fails with ENOSPC (creating empty files/folders still works)
        with open(path / "filler.bin", "wb", buffering=0) as f:
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * 4096)
        for i in range(64):  # and the odd page a small file could still take
            try:
                (path / f"filler{i}.bin").write_bytes(b"x")
            except OSError as e:
                if e.errno == errno.ENOSPC:
                    with contextlib.suppress(OSError):
                        (path / f"filler{i}.bin").unlink()
                    break
        try:
            (path / "probe.bin").write_bytes(b"x" * 4096)
            raise RuntimeError(f"{path}: tmpfs not full after filling")
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            with contextlib.suppress(OSError):
                (path / "probe.bin").unlink()


def umount_all(root: Path) -> None:
    with open("/proc/mounts") as f:
        points = [line.split()[1] for line in f]
    for p in sorted((p for p in points if p.startswith(str(root))), key=len, reverse=True):
        r = subprocess.run(["umount", p], capture_output=True)
        if r.returncode:
            subprocess.run(["umount", "-l", p], capture_output=True)


# ------------------------------------------------------------------------------------------------ running

def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env.setdefault("TERM", "xterm-256color")
    return env


def _reader(stream: Any, sink: list[str]) -> threading.Thread:
    def run() -> None:
        for chunk in iter(stream.readline, ""):
            sink.append(chunk)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _argv(case: Case) -> list[str]:
    argv = cli(*case.argv)
    if case.umask is not None:
        argv = ["sh", "-c", f'umask {case.umask:03o} && exec "$@"', "sh", *argv]
    return argv


def _popen(case: Case) -> subprocess.Popen[str]:
    return subprocess.Popen(_argv(case), cwd=scratch(), env=S["env"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                            start_new_session=True)


def _finish(p: subprocess.Popen[str], timeout: float) -> tuple[int | None, str]:
    try:
        return p.wait(timeout=timeout), ""
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        return None, f"timed out after {timeout:.0f} s (killed)"


def run_plain(case: Case, cdir: Path) -> Result:
    t0 = time.monotonic()
    p = _popen(case)
    out: list[str] = []
    err: list[str] = []
    threads = [_reader(p.stdout, out), _reader(p.stderr, err)]
    rc, note = _finish(p, case.timeout)
    for t in threads:
        t.join(5)
    return Result(case, cdir, rc, "".join(out), "".join(err), time.monotonic() - t0, pid=p.pid, note=note)


def run_pair(case: Case, cdir: Path) -> Result:
    t0 = time.monotonic()
    procs = [_popen(case), _popen(case)]
    sinks: list[tuple[list[str], list[str]]] = [([], []), ([], [])]
    threads = [t for p, (o, e) in zip(procs, sinks, strict=True) for t in (_reader(p.stdout, o), _reader(p.stderr, e))]
    done = [_finish(p, case.timeout) for p in procs]
    for t in threads:
        t.join(5)
    rs = [Result(case, cdir, rc, "".join(o), "".join(e), time.monotonic() - t0, pid=p.pid, note=note)
          for p, (rc, note), (o, e) in zip(procs, done, sinks, strict=True)]
    rs[0].other = rs[1]
    return rs[0]


def run_sigterm(case: Case, cdir: Path) -> Result:
    t0 = time.monotonic()
    p = _popen(case)
    out: list[str] = []
    err: list[str] = []
    threads = [_reader(p.stdout, out), _reader(p.stderr, err)]
    live = Live(cdir, out, err, t0)
    fired = None
    assert case.trigger is not None
    while p.poll() is None and time.monotonic() - t0 < case.timeout:
        if case.trigger(live):
            p.send_signal(signal.SIGTERM)
            fired = time.monotonic() - t0
            break
        time.sleep(0.03)
    if fired is None:
        rc, note = _finish(p, 1)
        for t in threads:
            t.join(5)
        return Result(case, cdir, rc, "".join(out), "".join(err), time.monotonic() - t0, pid=p.pid,
                      note="HARNESS: the process ended before the signal was due" if rc is not None
                      else "HARNESS: the trigger never fired")
    rc, note = _finish(p, 60)
    for t in threads:
        t.join(5)
    return Result(case, cdir, rc, "".join(out), "".join(err), time.monotonic() - t0, pid=p.pid,
                  note=note or f"SIGTERM sent at {fired:.1f} s")


def run_pty(case: Case, cdir: Path) -> Result:
    """stdout and stderr on a terminal `case.cols` wide (both merged into `out`)."""
    t0 = time.monotonic()
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, case.cols, 0, 0))
    p = subprocess.Popen(_argv(case), cwd=scratch(), env=S["env"], stdin=slave, stdout=slave, stderr=slave,
                         start_new_session=True)
    os.close(slave)
    buf = bytearray()
    note = ""
    while True:
        r, _, _ = select.select([master], [], [], 0.1)
        if r:
            try:
                data = os.read(master, 65536)
            except OSError:
                data = b""
            if not data:
                break  # EOF / EIO: every writer closed the terminal
            buf += data
        if time.monotonic() - t0 > case.timeout:
            os.killpg(p.pid, signal.SIGKILL)
            note = "timed out (killed)"
            break
    rc = p.wait()
    os.close(master)
    text = buf.decode(errors="replace").replace("\r\n", "\n")
    return Result(case, cdir, None if note else rc, text, "", time.monotonic() - t0, pid=p.pid, note=note)


def run_sweep(case: Case, cdir: Path) -> Result:
    """SIGTERM at several moments of the same step (one fresh run each): the first run that does not end as the
    standard says is the result; else the last run."""
    assert case.trigger is not None
    cond = case.trigger
    r: Result | None = None
    for delay in case.sweep:
        for p in cdir.iterdir():
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        one = dataclasses.replace(case, trigger=when(cond, delay), kind="sigterm")
        r = run_sigterm(one, cdir)
        r.case = case
        r.note += f" ({delay:.2f} s after the trigger held; delays tried: " \
                  f"{', '.join(f'{d:.2f}' for d in case.sweep[:case.sweep.index(delay) + 1])})"
        if r.note.startswith("HARNESS") or r.rc != case.expect or "Traceback" in r.err or leftovers(cdir):
            break
    assert r is not None
    return r


RUNNERS = {"plain": run_plain, "pair": run_pair, "sigterm": run_sigterm, "pty": run_pty, "sweep": run_sweep}


# ----------------------------------------------------------------------------------------------- judging

def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines() if line.strip()]


def error_line(err: str) -> str:
    lines = _lines(err)
    found = [line for line in lines if line.startswith("error:")]
    return found[-1] if found else ""


def input_paths(case: Case) -> list[Path]:
    """Existing paths named on the command line that are not outputs: what must stay unchanged."""
    outs = {Path(o) for o in case.outputs}
    argv = case.argv
    for i, a in enumerate(argv):
        if a in ("-o", "--output", "--out") and i + 1 < len(argv):
            outs.add(Path(argv[i + 1]))
    if argv[:2] in (["data", "synth"], ["data", "sample-video"]) and len(argv) > 2:
        outs.add(Path(argv[2]))
    found = []
    for a in argv:
        if a.startswith("-") or Path(a) in outs or "/" not in a and not (scratch() / a).exists():
            continue
        p = scratch() / a
        if p.exists() and not str(a).startswith(("/proc", "/sys")):
            found.append(p)
    return found + [scratch() / p for p in case.protect]


def judge(r: Result, before_dirs: set[Path], hashes_before: dict[Path, dict[str, str]]) -> tuple[str, list[str]]:
    c = r.case
    why: list[str] = []
    if r.note.startswith("HARNESS"):
        return "HARNESS", [r.note]
    runs = [r] if r.other is None else [r, r.other]
    for x in runs:
        if x.rc is None:
            why.append(x.note or "no exit code")
    if c.kind == "pair":
        rcs = sorted([r.rc, r.other.rc], key=lambda v: -1 if v is None else v)  # type: ignore[union-attr]
        if rcs != sorted([c.expect, 1]):
            why.append(f"exit codes {r.rc} and {r.other.rc}, expected exactly one {c.expect} and one 1"  # type: ignore[union-attr]
                       + (": both wrote the same output, the later replacing the earlier's finished one without "
                          "--force" if rcs == [0, 0] else ""))
        else:
            win, lose = (r, r.other) if r.rc == c.expect else (r.other, r)
            assert win is not None and lose is not None
            line = error_line(lose.err)
            if c.pid and f"PID {win.pid}" not in line:
                why.append(f"the refused run does not name the other's PID {win.pid}")
            why += _error_shape(lose, c)
    else:
        if r.rc != c.expect and r.rc is not None:
            why.append(f"exit {r.rc}, expected {c.expect}")
        if c.expect == 1 and r.rc == 1:
            why += _debug_shape(r, c) if c.debug else _error_shape(r, c)
        if c.expect == 143 and r.rc == 143:
            last = (_lines(r.err) or [""])[-1]
            if last != "terminated (SIGTERM)":
                why.append(f"last stderr line is {last[:80]!r}, not 'terminated (SIGTERM)'")
        if c.expect == 2 and r.rc == 2 and c.names:
            text = r.err + r.out
            if not any(n in text for n in c.names):
                why.append(f"usage message names none of {', '.join(c.names)}")
        if c.expect == 0 and r.rc == 0 and error_line(r.err):
            why.append("exit 0 but an error: line on stderr")
    for x in runs:
        text = x.out + x.err
        if "Traceback" in text and not c.debug:
            why.append("a Traceback without --debug")
        if c.debug and "Traceback" not in text:
            why.append("--debug given but no Traceback shown")
        noise = [line for line in _lines(x.err)
                 if not line.startswith(OWN_PREFIXES) and NOISE.search(ANSI.sub("", line))]
        noise += [line for line in _lines(x.out) if re.search(r"\w+Warning:|warnings\.warn", line)]
        if noise and not c.debug:
            why.append(f"library noise: {noise[0][:100]!r}" + (f" (+{len(noise) - 1} more)" if len(noise) > 1 else ""))
    left = leftovers(r.cdir) + leftovers(scratch() / "fx")
    if left:
        why.append("left behind: " + ", ".join(left[:4]))
    failed = any(x.rc != 0 for x in runs)
    if failed:
        empty = sorted(d for d in all_dirs(r.cdir) - before_dirs if d.exists() and is_empty_tree(d))
        empty = [d for d in empty if not any(e != d and d.is_relative_to(e) for e in empty)]
        if empty:
            why.append("empty folder(s) left by a failed run: " + ", ".join(rel(d) for d in empty[:3]))
    for p, h in hashes_before.items():
        after = sha(p)
        if after != h:
            changed = sorted(set(h) ^ set(after) | {k for k in h if k in after and h[k] != after[k]})
            why.append(f"input changed: {rel(p)} ({', '.join(changed[:3])})")
    if c.check is not None and r.rc is not None:
        try:
            why += c.check(r)
        except Exception as e:  # a check that cannot even look is a failure of what it looks at
            why.append(f"check failed: {type(e).__name__}: {str(e)[:120]}")
    return ("FAIL" if why else "PASS"), why


def _error_shape(r: Result, c: Case) -> list[str]:
    why = []
    lines = _lines(r.err)
    errs = [line for line in lines if line.startswith("error:")]
    if len(errs) != 1:
        why.append(f"{len(errs)} error: lines on stderr, expected exactly 1")
    elif lines[-1] != errs[0]:
        why.append(f"the error: line is not the last stderr line (then: {lines[-1][:80]!r})")
    line = errs[-1] if errs else ""
    if c.names and not any(n in line or str(scratch() / n) in line for n in c.names):
        why.append(f"the error line names none of: {', '.join(c.names)}")
    low = line.lower()
    for need in c.needs:
        alts = need if isinstance(need, tuple) else (need,)
        if not any(a.lower() in low for a in alts):
            why.append("the error line does not say " + " / ".join(repr(a) for a in alts))
    return why


def _debug_shape(r: Result, c: Case) -> list[str]:
    """--debug: the traceback instead of the one line, ending with the exception that names the file."""
    lines = _lines(r.err)
    last = lines[-1] if lines else ""
    why = [] if "Traceback" in r.err else ["no Traceback with --debug"]
    if c.names and not any(n in last for n in c.names):
        why.append(f"the traceback's last line names none of: {', '.join(c.names)}")
    return why


USAGE_HINTS = ("No such option", "No such command", "Missing option", "Missing argument", "Invalid value",
               "Got unexpected")


def got_text(r: Result) -> str:
    def one(x: Result) -> str:
        line = error_line(x.err)
        if not line:
            boxed = [ln.strip(" │╭╮╰╯─") for ln in _lines(ANSI.sub("", x.err) + ANSI.sub("", x.out))]
            usage = [ln for ln in boxed if ln.startswith(USAGE_HINTS)]
            if x.rc == 2 and usage:
                line = usage[0]
            elif x.rc == 0:
                src = [ln for ln in boxed if ln] if "--help" in x.case.argv else \
                    (_lines(ANSI.sub("", x.out)) or _lines(ANSI.sub("", x.err)))
                line = src[0] if "--help" in x.case.argv and src else (src[-1] if src else "")
            else:
                src = _lines(ANSI.sub("", x.err)) or _lines(ANSI.sub("", x.out))
                line = src[-1] if src else ""
        return f"exit {x.rc if x.rc is not None else 'none'}" + (f": {line}" if line else "")
    if r.other is not None:
        return f"A(PID {r.pid}) {one(r)} | B(PID {r.other.pid}) {one(r.other)}"
    return one(r)


def execute(case: Case) -> dict[str, Any]:
    cdir = scratch() / case.cid
    cdir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"id": case.cid, "class": case.cls, "class_name": CLASSES[case.cls][0],
                              "what": case.what, "argv": case.argv, "command": show(case.argv),
                              "kind": case.kind, "pid": case.pid, "expected": case.expect,
                              "umask": f"{case.umask or 0o022:03o}"}
    if case.skip:
        return record | {"verdict": "SKIP", "reasons": [case.skip], "got": "-", "seconds": 0.0}
    try:
        prepared = case.prepare(cdir) if case.prepare else None
    except Skip as e:
        return record | {"verdict": "SKIP", "reasons": [str(e)], "got": "-", "seconds": 0.0}
    try:
        hashes = {p: sha(p) for p in input_paths(case)}
        before = all_dirs(cdir)
        r = RUNNERS[case.kind](case, cdir)
        r.prepared = prepared
        verdict, why = judge(r, before, hashes)
    finally:
        if case.cleanup:
            with contextlib.suppress(Exception):
                case.cleanup(cdir)
    record |= {"verdict": verdict, "reasons": why, "got": got_text(r), "rc": r.rc, "seconds": round(r.seconds, 1),
               "note": r.note, "stderr": r.err[-4000:], "stdout": r.out[-2000:]}
    if r.other is not None:
        record |= {"rc_b": r.other.rc, "stderr_b": r.other.err[-4000:], "pids": [r.pid, r.other.pid]}
    return record


# ------------------------------------------------------------------------------------------------ checks

def exists(*paths: str) -> Callable[[Result], list[str]]:
    return lambda r: [f"{p} missing" for p in paths if not (r.cdir / p).exists()]


def absent(*paths: str) -> Callable[[Result], list[str]]:
    return lambda r: [f"{p} exists" for p in paths if (r.cdir / p).exists()]


def both(*checks: Callable[[Result], list[str]]) -> Callable[[Result], list[str]]:
    return lambda r: [w for c in checks for w in c(r)]


def out_has(*words: str) -> Callable[[Result], list[str]]:
    return lambda r: [f"output does not mention {w!r}" for w in words if w.lower() not in (r.out + r.err).lower()]


def video_is(path: str, frames: int | None, hw: tuple[int, int] | None) -> Callable[[Result], list[str]]:
    def check(r: Result) -> list[str]:
        p = r.cdir / path if not path.startswith("fx/") else scratch() / path
        if not p.exists():
            return [f"{rel(p)} missing"]
        n, h, w = video_facts(p)
        why = []
        if frames is not None and n != frames:
            why.append(f"{rel(p)} has {n} frames, expected {frames}")
        if hw is not None and (h, w) != hw:
            why.append(f"{rel(p)} is {h}x{w}, expected {hw[0]}x{hw[1]}")
        return why
    return check


def image_is(path: str, hw: tuple[int, int]) -> Callable[[Result], list[str]]:
    def check(r: Result) -> list[str]:
        p = r.cdir / path
        if not p.exists():
            return [f"{rel(p)} missing"]
        got = png_size(p)
        return [] if got == hw else [f"{rel(p)} is {got[0]}x{got[1]}, expected {hw[0]}x{hw[1]}"]
    return check


def modes(path: str, umask: int = 0o022) -> Callable[[Result], list[str]]:
    """Every file the command wrote has mode 0666 & ~umask, every folder it made 0777 & ~umask."""
    def check(r: Result) -> list[str]:
        root = scratch() / path if path.startswith("fx/") else r.cdir / path
        if not root.exists():
            return [f"{rel(root)} missing"]
        want_f, want_d = 0o666 & ~umask, 0o777 & ~umask
        bad, n = [], 0
        for p in [root, *sorted(root.rglob("*"))] if root.is_dir() else [root]:
            m = stat.S_IMODE(p.lstat().st_mode)
            n += 1
            want = want_d if p.is_dir() else want_f
            if m != want:
                bad.append(f"{rel(p)} {m:04o} (umask {umask:03o} gives {want:04o})")
        r.note = f"{n} path(s) checked"
        return bad[:3] + ([f"... {len(bad) - 3} more"] if len(bad) > 3 else [])
    return check


def unchanged_sha(path: str) -> Callable[[Path], dict[str, str]]:
    return lambda cdir: sha(cdir / path)


def stdout_lists(*names: str) -> Callable[[Result], list[str]]:
    return lambda r: [f"the summary does not list {n}" for n in names if n not in r.out]


def images_complete(folder: str, at_least: int) -> Callable[[Result], list[str]]:
    def check(r: Result) -> list[str]:
        from PIL import Image
        d = r.cdir / folder
        files = [p for p in d.rglob("*") if p.is_file() and not p.name.startswith(".")] if d.exists() else []
        why = []
        for p in files:
            try:
                with Image.open(p) as im:
                    im.load()
            except Exception as e:
                why.append(f"{rel(p)} is not a complete image ({type(e).__name__})")
        r.note += f"; {len(files)} complete image(s) kept"
        if len(files) < at_least:
            why.append(f"{len(files)} image(s) kept, expected at least {at_least}")
        return why
    return check


def onnx_complete(folder: str) -> Callable[[Result], list[str]]:
    def check(r: Result) -> list[str]:
        import onnx
        d = r.cdir / folder
        files = sorted(p for p in d.glob("*") if p.is_file()) if d.exists() else []
        why = []
        for p in files:
            if p.suffix == ".onnx":
                try:
                    onnx.checker.check_model(onnx.load(str(p)))
                except Exception as e:
                    why.append(f"{rel(p)} incomplete ({type(e).__name__})")
            elif p.suffix == ".json":
                try:
                    json.loads(p.read_text())
                except Exception:
                    why.append(f"{rel(p)} is not complete JSON")
        r.note += "; kept: " + (", ".join(p.name for p in files) or "nothing")
        return why
    return check


def table_p50(r: Result, results_json: Path, width: int | None) -> list[str]:
    """The bench table: every ok case's p50 visible (and close to results.json's), lines <= width if given,
    no escape codes when plain (width None)."""
    text = r.out
    why = []
    if width is None and "\x1b" in text:
        why.append("escape codes in piped output")
    lines = [ANSI.sub("", line).rstrip() for line in text.splitlines()]
    head_i = next((i for i, line in enumerate(lines) if "p50" in line and "backend" in line), None)
    if head_i is None:
        return why + ["no table header with 'p50' in the output"]
    if not results_json.exists():
        return why + [f"{rel(results_json)} missing"]
    cases = [c for c in json.loads(results_json.read_text())["cases"] if c["status"] == "ok"]
    head = re.split(r"\s{2,}", lines[head_i].strip())
    rows = []
    for line in lines[head_i + 1:]:
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) < 3 or not re.fullmatch(r"\d+x\d+", cells[1] if len(cells) > 1 else ""):
            break
        rows.append(cells)
    if width is not None:
        wide = [line for line in lines[head_i:head_i + 1 + len(rows)] if len(line) > width]
        if wide:
            why.append(f"{len(wide)} table line(s) wider than {width} columns ({len(wide[0])})")
    if "p50 ms" not in head:
        return why + [f"no 'p50 ms' column in the header {head}"]
    k = head.index("p50 ms")
    for c in cases:
        row = next((x for x in rows if x[0] == c["backend_name"] and x[1] == c["size"]), None)
        if row is None:
            why.append(f"no row for {c['backend_name']} {c['size']}")
            continue
        try:
            shown = float(row[k].replace(",", ""))
        except (ValueError, IndexError):
            why.append(f"p50 of {c['backend_name']} not visible ({row})")
            continue
        p50 = c["stats_ms"]["p50"]
        if abs(shown - p50) > max(0.051, 0.06 * p50):
            why.append(f"p50 of {c['backend_name']} shown {shown}, results.json {p50:.3f}")
    r.note = f"{len(rows)} row(s), widest table line {max(len(x) for x in lines[head_i:head_i + 1 + len(rows)])}"
    return why


# --------------------------------------------------------------------------------------------- fixtures

def build_fixtures(fx: Path) -> None:
    """Broken and odd inputs, made from the tiny run, its export and the clip (phase 0 made those)."""
    import numpy as np
    import onnx
    import torch
    from onnx import TensorProto, helper, numpy_helper

    rnd = random.Random(1234)
    ours = torch.load(fx / "RUN" / "latest_net_G_A.pth", weights_only=True, map_location="cpu")
    sd = ours["state_dict"] if isinstance(ours.get("state_dict"), dict) else ours  # our file wraps a card

    def times(v: float) -> dict[str, Any]:
        return {k: (t * v if t.is_floating_point() else t) for k, t in sd.items()}

    # NaN: our own generator format (card + state dict); Inf: a bare reference-style state dict
    torch.save({**ours, "state_dict": times(float("nan"))} if sd is not ours else times(float("nan")),
               fx / "nan_net_G_A.pth")
    torch.save(times(float("inf")), fx / "inf_net_G_A.pth")
    shutil.copytree(fx / "RUN", fx / "RUN_nan")
    shutil.copy2(fx / "nan_net_G_A.pth", fx / "RUN_nan" / "latest_net_G_A.pth")
    keys = [k for k in sd if k.endswith("weight")]
    S["missing_key"] = keys[len(keys) // 2]
    torch.save({k: v for k, v in sd.items() if k != S["missing_key"]}, fx / "missing_key_net_G_A.pth")
    S["extra_key"] = "model.99.weight"
    torch.save({**sd, S["extra_key"]: torch.zeros(8, 8, 3, 3)}, fx / "extra_key_net_G_A.pth")
    torch.manual_seed(0)
    torch.save({"conv1.weight": torch.randn(16, 3, 3, 3), "bn1.weight": torch.ones(16), "bn1.bias": torch.zeros(16),
                "fc.weight": torch.randn(10, 16), "fc.bias": torch.zeros(10)}, fx / "classifier.pth")
    for name in ("random.pth", "random.onnx", "random.mp4"):
        (fx / name).write_bytes(rnd.randbytes(8192))
    (fx / "empty.pth").write_bytes(b"")
    clip = (fx / "clip.mp4").read_bytes()
    (fx / "trunc.mp4").write_bytes(clip[: len(clip) // 2])
    (fx / "fake.png").write_text("this is a text file, not an image\n")

    m = onnx.load(str(fx / "EXP" / "g_AtoB.onnx"))
    for value, name in ((np.nan, "nan.onnx"), (np.inf, "inf.onnx")):
        mm = onnx.ModelProto()
        mm.CopyFrom(m)
        init = next(i for i in mm.graph.initializer if len(i.dims) == 4)
        arr = numpy_helper.to_array(init).astype(np.float32) * np.float32(value)
        init.CopyFrom(numpy_helper.from_array(arr, init.name))
        onnx.save(mm, str(fx / name))

    def classifier(path: Path, channels: int) -> None:
        x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", channels, "H", "W"])
        y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])
        inits = [numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, channels, 3, 3))
                                         .astype(np.float32), "w1"),
                 numpy_helper.from_array(np.random.default_rng(1).standard_normal((10, 4)).astype(np.float32), "w2"),
                 numpy_helper.from_array(np.zeros(10, np.float32), "b2")]
        nodes = [helper.make_node("Conv", ["input", "w1"], ["c"], pads=[1, 1, 1, 1]),
                 helper.make_node("Relu", ["c"], ["r"]),
                 helper.make_node("GlobalAveragePool", ["r"], ["g"]),
                 helper.make_node("Flatten", ["g"], ["f"]),
                 helper.make_node("Gemm", ["f", "w2", "b2"], ["logits"], transB=1)]
        g = helper.make_graph(nodes, "classifier", [x], [y], inits)
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        onnx.save(model, str(path))

    classifier(fx / "classifier1ch.onnx", 1)
    classifier(fx / "classifier3ch.onnx", 3)

    test_a = sorted((fx / "D" / "testA").glob("*.png"))[0]
    img = fx / "IMG"
    img.mkdir()
    shutil.copy(test_a, img / "a.png")
    write_img(img / "b.jpg", 24, 40, 1)
    write_img(img / "sub" / "c.png", 48, 64, 2)
    tiny = fx / "IMG_tiny"
    shutil.copytree(img, tiny)
    write_img(tiny / "t2x2.png", 2, 2, 3)
    write_img(fx / "one" / "t1x1.png", 1, 1, 4)
    zero = fx / "IMG_zero"
    zero.mkdir()
    shutil.copy(test_a, zero / "a.png")
    (zero / "zero.png").write_bytes(b"")
    (fx / "EMPTY").mkdir()
    huge = fx / "IMG_huge"
    huge.mkdir()
    shutil.copy(test_a, huge / "a.png")
    png_header(huge / "huge.png", 100000, 100000)
    png_header(huge / "big9k.png", 9000, 9000)  # under PIL's bomb limit: the header is believed, data is short
    (fx / "midonly").mkdir()
    png_header(fx / "midonly" / "mid.png", 12000, 12000)  # between PIL's warning and error limits
    many = fx / "IMG_many"
    for i in range(120):
        write_img(many / f"m{i:03d}.png", 64, 64, 100 + i)
    dtiny = fx / "DTINY"
    for dom in ("trainA", "trainB"):
        for i in range(3):
            write_img(dtiny / dom / f"{i}.png", 2, 2, 10 + i)
    shutil.copytree(fx / "D", fx / "D_noB", ignore=shutil.ignore_patterns("trainB"))
    (fx / "afile.txt").write_text("a regular file\n")


def build_helpers(fx: Path) -> None:
    """Inputs made by the product itself that no case is about: the larger dataset for the SIGTERM train."""
    r = subprocess.run(cli("data", "synth", "fx/DT", "--n-train", "100", "--n-test", "2", "--size", "32"),
                       cwd=scratch(), env=S["env"], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"setup failed: data synth fx/DT: {r.stderr.strip()}")


# ------------------------------------------------------------------------------------------------ cases

def copy_from(src: str, dst: str, extra: dict[str, str] | None = None) -> Callable[[Path], None]:
    def prep(cdir: Path) -> None:
        s, d = scratch() / src, cdir / dst
        d.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(s, d) if s.is_dir() else shutil.copy2(s, d)
        for name, text in (extra or {}).items():
            (cdir / name).parent.mkdir(parents=True, exist_ok=True)
            (cdir / name).write_text(text)
    return prep


def afile(cdir: Path) -> None:
    (cdir / "afile").write_text("a regular file where a folder is expected\n")


def ro_mount(cdir: Path) -> None:
    mount_tmpfs(cdir / "ro", ro=True)


def full_mount(cdir: Path) -> None:
    mount_tmpfs(cdir / "full", full=True)


def unmount(cdir: Path) -> None:
    umount_all(cdir)


def os_cases() -> list[Case]:
    """Class 2: the seven commands writing (a) under a regular file, (b) to a read-only tmpfs, (c) to a full
    tmpfs; then /proc and /sys."""
    cases: list[Case] = []
    n = 0

    def cmds(base: str) -> list[tuple[str, list[str], str]]:
        return [("export", ["export", G_A, "-o", f"{base}/EXP"], f"{base}/EXP"),
                ("train", ["train", "fx/D", "-o", f"{base}/RUN", *TRAIN_ARGS], f"{base}/RUN"),
                ("bench", ["bench", *MODEL, "-o", f"{base}/B", "--sizes", "32x32", *BENCH_FAST], f"{base}/B"),
                ("data synth", ["data", "synth", f"{base}/D", "--n-train", "6", "--n-test", "2", "--size", "32"],
                 f"{base}/D"),
                ("video", ["video", "fx/clip.mp4", "-o", f"{base}/out.mp4", *MODEL], f"{base}/out.mp4"),
                ("translate", ["translate", "fx/IMG", "-o", f"{base}/T", *MODEL], f"{base}/T"),
                ("sample-video", ["data", "sample-video", f"{base}/clip.mp4", "--frames", "5", "--size", "32x32"],
                 f"{base}/clip.mp4")]

    for label, sub, prep, cleanup, needs in (
            ("under a regular file (ENOTDIR)", "afile", afile, None,
             (("not a directory", "is a file", "a file is in the way", "not a folder"),)),
            ("on a read-only file system (tmpfs ro, EROFS)", "ro", ro_mount, unmount, (("read-only",),)),
            ("on a full disk (tmpfs filled, ENOSPC)", "full", full_mount, unmount,
             (("no space", "disk is full", "full"),))):
        for cmd, argv, out in cmds("@"):
            n += 1
            cid = f"c2-{n:02d}"
            argv = [a.replace("@", f"{cid}/{sub}") for a in argv]
            out = out.replace("@", f"{cid}/{sub}")
            names = (out, f"{cid}/{sub}")
            cases.append(Case(cid, 2, f"{cmd} {label}", argv, 1, names=names, needs=needs, prepare=prep,
                              cleanup=cleanup, outputs=(out,), timeout=120))
    tag = f"relcases-{os.getpid()}"
    n += 1
    cases.append(Case(f"c2-{n:02d}", 2, "export into /proc (cannot create folders there)",
                      ["export", G_A, "-o", f"/proc/{tag}/EXP"], 1, names=(f"/proc/{tag}",)))
    n += 1
    cases.append(Case(f"c2-{n:02d}", 2, "sample-video into /sys", ["data", "sample-video", f"/sys/{tag}/clip.mp4",
                                                                    "--frames", "5", "--size", "32x32"],
                      1, names=(f"/sys/{tag}",)))
    n += 1
    cases.append(Case(f"c2-{n:02d}", 2, "translate into /sys", ["translate", "fx/IMG", "-o", f"/sys/{tag}/T", *MODEL],
                      1, names=(f"/sys/{tag}",)))
    n += 1
    cases.append(Case(f"c2-{n:02d}", 2, "train into /proc/self (a file system that refuses)",
                      ["train", "fx/D", "-o", f"/proc/self/{tag}", *TRAIN_ARGS], 1, names=(f"/proc/self/{tag}",)))
    return cases


def all_cases() -> list[Case]:
    c: list[Case] = []
    nan = ("nan", "non-finite", "inf")

    # ---- phase 0: the fixtures, made by the product (judged as class 8 and 5 cases)
    c += [
        Case("c8-01", 8, "data synth under umask 022: files 0644, folders 0755",
             ["data", "synth", "fx/D", "--n-train", "6", "--n-test", "2", "--size", "32"], 0,
             check=modes("fx/D"), phase=0, outputs=("fx/D",)),
        Case("c8-02", 8, "train run dir under umask 022", ["train", "fx/D", "-o", "fx/RUN", *TRAIN_ARGS], 0,
             check=modes("fx/RUN"), phase=0),
        Case("c8-03", 8, "export folder under umask 022", ["export", "fx/RUN", "-o", "fx/EXP"], 0,
             check=both(modes("fx/EXP"), lambda r: [] if not r.err.strip() else
                        [f"stderr not empty on success: {_lines(r.err)[0][:100]!r}"]), phase=0),
        Case("c8-04", 8, "sample-video under umask 022",
             ["data", "sample-video", "fx/clip.mp4", "--frames", "30", "--size", "48x64"], 0,
             check=both(modes("fx/clip.mp4"), video_is("fx/clip.mp4", 30, (48, 64))), phase=0,
             outputs=("fx/clip.mp4",)),
        Case("c5-01", 5, "a 2x2 clip can be made",
             ["data", "sample-video", "fx/clip2x2.mp4", "--frames", "5", "--size", "2x2"], 0,
             check=video_is("fx/clip2x2.mp4", 5, (2, 2)), phase=0, outputs=("fx/clip2x2.mp4",)),
        Case("c5-02", 5, "an odd 15x17 clip can be made",
             ["data", "sample-video", "fx/clip_odd.mp4", "--frames", "10", "--size", "15x17"], 0,
             check=video_is("fx/clip_odd.mp4", 10, (15, 17)), phase=0, outputs=("fx/clip_odd.mp4",)),
        Case("c5-03", 5, "a 1-frame clip can be made",
             ["data", "sample-video", "fx/clip1.mp4", "--frames", "1", "--size", "48x64"], 0,
             check=video_is("fx/clip1.mp4", 1, (48, 64)), phase=0, outputs=("fx/clip1.mp4",)),
    ]

    # ---- 1 non-finite weights / outputs
    c += [
        Case("c1-01", 1, "export a NaN checkpoint", ["export", "fx/nan_net_G_A.pth", "-o", "c1-01/EXP"], 1,
             names=("fx/nan_net_G_A.pth",), needs=(nan,), check=absent("EXP")),
        Case("c1-02", 1, "export an Inf checkpoint", ["export", "fx/inf_net_G_A.pth", "-o", "c1-02/EXP"], 1,
             names=("fx/inf_net_G_A.pth",), needs=(nan,), check=absent("EXP")),
        Case("c1-03", 1, "export a run dir whose G_A is NaN", ["export", "fx/RUN_nan", "-o", "c1-03/EXP"], 1,
             names=("fx/RUN_nan",), needs=(nan,)),
        Case("c1-04", 1, "video with a NaN checkpoint",
             ["video", "fx/clip.mp4", "-o", "c1-04/out.mp4", "--checkpoint", "fx/nan_net_G_A.pth"], 1,
             names=("fx/nan_net_G_A.pth",), needs=(nan,), check=absent("out.mp4")),
        Case("c1-05", 1, "translate with a NaN checkpoint",
             ["translate", "fx/IMG", "-o", "c1-05/T", "--checkpoint", "fx/nan_net_G_A.pth"], 1,
             names=("fx/nan_net_G_A.pth",), needs=(nan,), check=absent("T")),
        Case("c1-06", 1, "bench with a NaN checkpoint",
             ["bench", "--checkpoint", "fx/nan_net_G_A.pth", "-o", "c1-06/B", "--sizes", "32x32", *BENCH_FAST], 1,
             names=("fx/nan_net_G_A.pth",), needs=(nan,)),
        Case("c1-07", 1, "video with an ONNX graph whose weights are NaN (outputs NaN)",
             ["video", "fx/clip.mp4", "-o", "c1-07/out.mp4", "--model", "fx/nan.onnx"], 1,
             names=("fx/nan.onnx",), needs=(nan,), check=absent("out.mp4")),
        Case("c1-08", 1, "translate with the NaN graph",
             ["translate", "fx/IMG", "-o", "c1-08/T", "--model", "fx/nan.onnx"], 1,
             names=("fx/nan.onnx",), needs=(nan,), check=absent("T")),
        Case("c1-09", 1, "bench with the NaN graph",
             ["bench", "--model", "fx/nan.onnx", "-o", "c1-09/B", "--sizes", "32x32", *BENCH_FAST], 1,
             names=("fx/nan.onnx",), needs=(nan,)),
        Case("c1-10", 1, "video with an ONNX graph holding Inf weights",
             ["video", "fx/clip.mp4", "-o", "c1-10/out.mp4", "--model", "fx/inf.onnx"], 1,
             names=("fx/inf.onnx",), needs=(nan,), check=absent("out.mp4")),
        Case("c1-11", 1, "translate with an Inf checkpoint (torch backend)",
             ["translate", "fx/IMG", "-o", "c1-11/T", "--checkpoint", "fx/inf_net_G_A.pth"], 1,
             names=("fx/inf_net_G_A.pth",), needs=(nan,), check=absent("T")),
    ]

    # ---- 2 OS errors
    c += os_cases()

    # ---- 3 SIGTERM
    c += [
        Case("c3-01", 3, "SIGTERM mid-epoch: 143, resumable checkpoint saved",
             ["train", "fx/DT", "-o", "c3-01/RUN", "--epochs", "50", *TRAIN_ARGS[2:]], 143, kind="sigterm",
             trigger=when(lambda lv: "training " in "".join(lv.err), 2.0),
             check=both(exists("RUN/checkpoints/latest.pt", "RUN/config.json")), phase=2),
        Case("c3-02", 3, "--resume after the SIGTERM continues and finishes",
             ["train", "fx/DT", "-o", "c3-01/RUN", "--resume", "--epochs", "1"], 0,
             outputs=("c3-01/RUN",), phase=2,
             check=lambda r: ([] if re.search(r"resum\w* .*epoch.*iteration", r.err + r.out, re.I | re.S)
                              else ["does not say where it resumes (epoch, iteration)"])
             + [f"{p} missing" for p in ("latest_net_G_A.pth", "latest_net_G_B.pth")
                if not (scratch() / "c3-01" / "RUN" / p).exists()]),
        Case("c3-03", 3, "SIGTERM during video: no output, no partial",
             ["video", "fx/clip.mp4", "-o", "c3-03/out.mp4", *MODEL, "--size", "512x512", "--batch", "1"], 143,
             kind="sigterm", trigger=when(partial_in("."), 0.3), check=absent("out.mp4"), phase=2),
        Case("c3-04", 3, "SIGTERM during data synth: the temp folder is removed",
             ["data", "synth", "c3-04/D", "--n-train", "20000", "--size", "32"], 143, kind="sigterm",
             trigger=when(partial_in("."), 0.5), check=absent("D"), phase=2),
        Case("c3-05", 3, "SIGTERM during export just after g_AtoB.onnx (its parity gate): finished artifacts "
             "complete, no partial",
             ["export", "fx/RUN", "-o", "c3-05/EXP"], 143, kind="sweep", sweep=(0.0, 0.0, 0.0, 0.03, 0.06, 0.1),
             trigger=lambda lv: "g_AtoB.onnx (" in "".join(lv.out), check=onnx_complete("EXP"), phase=2),
        Case("c3-06", 3, "SIGTERM during bench into a new folder: the folder is removed",
             ["bench", "--checkpoint", G_A, "-o", "c3-06/B", "--sizes", "32x32", *BENCH_FAST], 143, kind="sigterm",
             trigger=when(lambda lv: (lv.cdir / "B" / "artifacts").exists(), 0.5), check=absent("B"), phase=2),
        Case("c3-07", 3, "SIGTERM during translate: images written so far complete",
             ["translate", "fx/IMG_many", "-o", "c3-07/T", *MODEL, "--size", "384x384", "--batch", "1"], 143,
             kind="sigterm",
             trigger=when(lambda lv: (lv.cdir / "T").exists() and len(list((lv.cdir / "T").glob("m*.png"))) >= 3),
             check=images_complete("T", 3), phase=2),
        Case("c3-08", 3, "SIGTERM during sample-video: no output, no partial",
             ["data", "sample-video", "c3-08/clip.mp4", "--frames", "100000", "--size", "128x128"], 143,
             kind="sigterm", trigger=when(partial_in("."), 0.5), check=absent("clip.mp4"), phase=2),
        Case("c3-09", 3, "SIGTERM during bench --force into an existing folder: old results kept, no partial",
             ["bench", *MODEL, "-o", "c3-09/B", "--sizes", "64x64,96x96", "--repeats", "200", "--warmup", "1",
              "--max-seconds", "20", "--force"], 143, kind="sigterm",
             prepare=copy_from("fx/D/mapping.json", "B/results.json"),
             trigger=when(lambda lv: "batch" in "".join(lv.err), 1.0),
             check=lambda r: [] if (r.cdir / "B").is_dir() else ["the existing results folder was removed"],
             phase=2),
        Case("c3-10", 3, "SIGTERM to train while it starts (imports, data), at 0.8-2.4 s: nothing left, or a "
             "resumable run",
             ["train", "fx/D", "-o", "c3-10/RUN", *TRAIN_ARGS], 143, kind="sweep",
             sweep=(0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.2, 2.4), trigger=lambda lv: True, phase=2,
             check=lambda r: [] if not (r.cdir / "RUN").exists() or (r.cdir / "RUN/checkpoints/latest.pt").exists()
             else ["a run dir without a checkpoint was left"]),
        Case("c3-11", 3, "SIGTERM during the ONNX export step (torch.onnx.export), at 1.2-2.4 s after 'loaded'",
             ["export", G_A, "-o", "c3-11/EXP"], 143, kind="sweep", sweep=(1.2, 1.5, 1.8, 2.1, 2.4),
             trigger=lambda lv: "loaded " in "".join(lv.out), check=onnx_complete("EXP"), phase=2),
    ]

    # ---- 4 resource bounds
    c += [
        Case("c4-01", 4, "video --batch 100000 is capped at the clip's length",
             ["video", "fx/clip.mp4", "-o", "c4-01/out.mp4", *MODEL, "--batch", "100000"], 0,
             check=video_is("out.mp4", 30, (48, 64))),
        Case("c4-02", 4, "video --size 20000x20000 refused before allocating",
             ["video", "fx/clip.mp4", "-o", "c4-02/out.mp4", *MODEL, "--size", "20000x20000"], 1,
             names=("--size",), needs=(("GiB", "GB"),), check=absent("out.mp4")),
        Case("c4-03", 4, "translate --size 20000x20000 refused",
             ["translate", "fx/IMG", "-o", "c4-03/T", *MODEL, "--size", "20000x20000"], 1, names=("--size",),
             needs=(("GiB", "GB"),), check=absent("T")),
        Case("c4-04", 4, "bench --sizes 100000x100000 refused",
             ["bench", *MODEL, "-o", "c4-04/B", "--sizes", "100000x100000"], 1, names=("--sizes",),
             needs=(("GiB", "GB", "TB"),), check=absent("B")),
        Case("c4-05", 4, "bench --batch 100000 refused",
             ["bench", *MODEL, "-o", "c4-05/B", "--sizes", "256x256", "--batch", "100000"], 1,
             names=("--batch",), check=absent("B")),
        Case("c4-06", 4, "sample-video --size 20000x20000 refused",
             ["data", "sample-video", "c4-06/big.mp4", "--size", "20000x20000", "--frames", "2"], 1,
             names=("--size",), check=absent("big.mp4")),
        Case("c4-07", 4, "translate a folder with a PNG claiming 100000x100000 (and a 9000x9000 short one): "
             "skipped and listed, the rest done",
             ["translate", "fx/IMG_huge", "-o", "c4-07/T", *MODEL], 0,
             check=both(stdout_lists("huge.png", "big9k.png"), exists("T/a.png"), absent("T/huge.png"))),
        Case("c4-08", 4, "translate only a PNG claiming 12000x12000 (PIL bomb-warning zone)",
             ["translate", "fx/midonly/mid.png", "-o", "c4-08/T", *MODEL], 1, names=("mid.png",),
             check=absent("T")),
        Case("c4-09", 4, "train --crop-size/--load-size 100000 refused with the memory it needs",
             ["train", "fx/D", "-o", "c4-09/RUN", *TRAIN_ARGS[:4], "--crop-size", "100000", "--load-size", "100000",
              *TRAIN_ARGS[8:]], 1, names=("--crop-size",), needs=(("GiB", "GB"),), check=absent("RUN")),
        Case("c4-10", 4, "train --crop-size 100000 (over the load size) refused",
             ["train", "fx/D", "-o", "c4-10/RUN", "--crop-size", "100000", "--epochs", "1", "--workers", "0"], 1,
             names=("--crop-size",), check=absent("RUN")),
        Case("c4-11", 4, "export --engine --max-shape 100000x100000 refused before the export work",
             ["export", G_A, "-o", "c4-11/EXP", "--engine", "--max-shape", "100000x100000"], 1,
             names=("--max-shape",), check=absent("EXP")),
        Case("c4-12", 4, "translate --batch 100000 on a folder (lowered to what fits)",
             ["translate", "fx/IMG", "-o", "c4-12/T", *MODEL, "--batch", "100000"], 0,
             check=exists("T/a.png", "T/b.jpg", "T/sub/c.png")),
    ]

    # ---- 5 tiny inputs
    c += [
        Case("c5-04", 5, "video of the 2x2 clip", ["video", "fx/clip2x2.mp4", "-o", "c5-04/out.mp4", *MODEL], 0,
             check=video_is("out.mp4", 5, (2, 2))),
        Case("c5-05", 5, "video of the odd 15x17 clip", ["video", "fx/clip_odd.mp4", "-o", "c5-05/out.mp4", *MODEL],
             0, check=video_is("out.mp4", 10, (15, 17))),
        Case("c5-06", 5, "video of the 1-frame clip", ["video", "fx/clip1.mp4", "-o", "c5-06/out.mp4", *MODEL], 0,
             check=video_is("out.mp4", 1, (48, 64))),
        Case("c5-07", 5, "video --size 2x2", ["video", "fx/clip.mp4", "-o", "c5-07/out.mp4", *MODEL, "--size", "2x2"],
             0, check=video_is("out.mp4", 30, (2, 2))),
        Case("c5-08", 5, "translate a folder holding a 2x2 PNG among others",
             ["translate", "fx/IMG_tiny", "-o", "c5-08/T", *MODEL], 0,
             check=both(image_is("T/t2x2.png", (2, 2)), image_is("T/a.png", (32, 32)), exists("T/b.jpg"))),
        Case("c5-09", 5, "translate a 1x1 PNG", ["translate", "fx/one/t1x1.png", "-o", "c5-09/T", *MODEL], 0,
             check=image_is("T/t1x1.png", (1, 1))),
        Case("c5-10", 5, "bench --sizes 7x7", ["bench", *MODEL, "-o", "c5-10/B", "--sizes", "7x7", *BENCH_FAST], 0,
             check=exists("B/results.json")),
        Case("c5-11", 5, "bench --sizes 2x2 with the torch backend",
             ["bench", "--checkpoint", G_A, "--backends", "torch", "-o", "c5-11/B", "--sizes", "2x2", *BENCH_FAST],
             0, check=exists("B/results.json")),
        Case("c5-12", 5, "translate a folder with a 0-byte PNG: skipped and listed",
             ["translate", "fx/IMG_zero", "-o", "c5-12/T", *MODEL], 0,
             check=both(stdout_lists("zero.png"), exists("T/a.png"))),
        Case("c5-13", 5, "translate an empty folder", ["translate", "fx/EMPTY", "-o", "c5-13/T", *MODEL], 1,
             names=("fx/EMPTY",), check=absent("T")),
        Case("c5-14", 5, "train on 2x2 images", ["train", "fx/DTINY", "-o", "c5-14/RUN", *TRAIN_ARGS], 0,
             check=exists("RUN/latest_net_G_A.pth")),
    ]

    # ---- 6 concurrency
    c += [
        Case("c6-01", 6, "two `train -o same` at once", ["train", "fx/D", "-o", "c6-01/RUN", *TRAIN_ARGS], 0,
             kind="pair", names=("c6-01/RUN",), check=exists("RUN/latest_net_G_A.pth"), phase=2),
        Case("c6-02", 6, "two `video -o same` at once",
             ["video", "fx/clip.mp4", "-o", "c6-02/out.mp4", *MODEL, "--size", "384x384", "--batch", "1"], 0,
             kind="pair", names=("c6-02/out.mp4",), check=video_is("out.mp4", 30, (384, 384)), phase=2),
        Case("c6-03", 6, "two `export -o same` at once", ["export", G_A, "-o", "c6-03/EXP"], 0, kind="pair",
             names=("c6-03/EXP",), check=both(exists("EXP/g_AtoB.onnx"), onnx_complete("EXP")), phase=2),
        Case("c6-04", 6, "two `bench -o same` at once",
             ["bench", *MODEL, "-o", "c6-04/B", "--sizes", "64x64", "--repeats", "20", "--warmup", "2"], 0,
             kind="pair", names=("c6-04/B",), check=exists("B/results.json"), phase=2),
        Case("c6-05", 6, "two `translate -o same` at once",
             ["translate", "fx/IMG_many", "-o", "c6-05/T", *MODEL, "--size", "128x128"], 0, kind="pair",
             names=("c6-05/T",), check=images_complete("T", 120), phase=2),
        Case("c6-06", 6, "two `data sample-video` of the same file at once",
             ["data", "sample-video", "c6-06/clip.mp4", "--frames", "300", "--size", "128x128"], 0, kind="pair",
             names=("c6-06/clip.mp4",), check=video_is("clip.mp4", 300, (128, 128)), phase=2),
        Case("c6-07", 6, "two `data synth` of the same folder at once: one wins, the other is refused in one line "
             "(the README does not list synth folders as locked, so no PID is required)",
             ["data", "synth", "c6-07/D", "--n-train", "300", "--n-test", "2", "--size", "32"], 0, kind="pair",
             pid=False, names=("c6-07/D",),
             check=lambda r: [] if len(list((r.cdir / "D" / "trainA").glob("*.png"))) == 300 else
             ["c6-07/D/trainA does not hold the 300 images of one run"], phase=2),
    ]

    # ---- 7 overwrite
    def refused(cid: str, what: str, argv: list[str], existing: str, src: str, names: tuple[str, ...],
                extra: dict[str, str] | None = None) -> Case:
        return Case(cid, 7, f"{what}: refused without --force", argv, 1, names=names, needs=("--force",),
                    prepare=copy_from(src, existing, extra), protect=(f"{cid}/{existing}",))

    def forced(cid: str, what: str, argv: list[str], existing: str, src: str,
               check: Callable[[Result], list[str]] | None = None, extra: dict[str, str] | None = None) -> Case:
        return Case(cid, 7, f"{what}: replaced with --force", [*argv, "--force"], 0,
                    prepare=copy_from(src, existing, extra), check=check)

    synth = ["data", "synth", "@/D", "--n-train", "6", "--n-test", "2", "--size", "32"]
    sv = ["data", "sample-video", "@/clip.mp4", "--frames", "5", "--size", "32x32"]
    tr = ["train", "fx/D", "-o", "@/RUN", *TRAIN_ARGS]
    ex = ["export", G_A, "-o", "@/EXP"]
    vd = ["video", "fx/clip.mp4", "-o", "@/out.mp4", *MODEL]
    tl = ["translate", "fx/IMG", "-o", "@/T", *MODEL]
    bn = ["bench", *MODEL, "-o", "@/B", "--sizes", "32x32", *BENCH_FAST]

    def at(argv: list[str], cid: str) -> list[str]:
        return [a.replace("@", cid) for a in argv]

    c += [
        refused("c7-01", "data synth into an existing dataset", at(synth, "c7-01"), "D", "fx/D", ("c7-01/D",)),
        forced("c7-02", "data synth into an existing dataset", at(synth, "c7-02"), "D", "fx/D",
               check=lambda r: [] if len(list((r.cdir / "D" / "trainA").glob("*.png"))) == 6 else ["trainA wrong"]),
        refused("c7-03", "sample-video onto an existing clip", at(sv, "c7-03"), "clip.mp4", "fx/clip.mp4",
                ("c7-03/clip.mp4",)),
        forced("c7-04", "sample-video onto an existing clip", at(sv, "c7-04"), "clip.mp4", "fx/clip.mp4",
               check=video_is("clip.mp4", 5, (32, 32))),
        refused("c7-05", "train into a run dir holding a run", at(tr, "c7-05"), "RUN", "fx/RUN", ("c7-05/RUN",)),
        forced("c7-06", "train into a run dir holding a run (a user file in it is kept)", at(tr, "c7-06"), "RUN",
               "fx/RUN", extra={"RUN/my_notes.txt": "mine\n"},
               check=lambda r: [] if (r.cdir / "RUN" / "my_notes.txt").exists() else ["--force deleted my_notes.txt"]),
        refused("c7-07", "export into a folder holding g_AtoB.onnx", at(ex, "c7-07"), "EXP/g_AtoB.onnx", ONNX,
                ("c7-07/EXP/g_AtoB.onnx", "g_AtoB.onnx")),
        forced("c7-08", "export into a folder holding g_AtoB.onnx", at(ex, "c7-08"), "EXP/g_AtoB.onnx", ONNX,
               check=onnx_complete("EXP")),
        refused("c7-09", "video onto an existing file", at(vd, "c7-09"), "out.mp4", "fx/clip.mp4",
                ("c7-09/out.mp4",)),
        forced("c7-10", "video onto an existing file", at(vd, "c7-10"), "out.mp4", "fx/clip2x2.mp4",
               check=video_is("out.mp4", 30, (48, 64))),
        refused("c7-11", "translate where one output exists", at(tl, "c7-11"), "T/a.png", "fx/IMG/a.png",
                ("c7-11/T", "a.png")),
        forced("c7-12", "translate where one output exists", at(tl, "c7-12"), "T/a.png", "fx/IMG/a.png",
               check=exists("T/a.png", "T/b.jpg", "T/sub/c.png")),
        refused("c7-13", "bench into a results folder", at(bn, "c7-13"), "B/results.json", "fx/D/mapping.json",
                ("c7-13/B", "results.json")),
        forced("c7-14", "bench into a results folder", at(bn, "c7-14"), "B/results.json", "fx/D/mapping.json",
               check=lambda r: [] if "cases" in json.loads((r.cdir / "B" / "results.json").read_text())
               else ["results.json not replaced"]),
        Case("c7-15", 7, "translate into a folder holding only other files (nothing to refuse)",
             at(tl, "c7-15"), 0, prepare=copy_from("fx/afile.txt", "T/notes.txt"),
             check=both(exists("T/notes.txt", "T/a.png"))),
        Case("c7-16", 7, "video -o its own input, with --force: refused, input intact",
             ["video", "fx/clip.mp4", "-o", "fx/clip.mp4", *MODEL, "--force"], 1, names=("fx/clip.mp4",),
             protect=("fx/clip.mp4",)),
        Case("c7-17", 7, "translate -o its own input folder, with --force: refused, inputs intact",
             ["translate", "fx/IMG", "-o", "fx/IMG", *MODEL, "--force"], 1, names=("fx/IMG",), protect=("fx/IMG",)),
    ]

    # ---- 8 permissions (c8-01..04 in phase 0)
    c += [
        Case("c8-05", 8, "video output under umask 022", ["video", "fx/clip.mp4", "-o", "c8-05/V/out.mp4", *MODEL], 0,
             check=modes("V")),
        Case("c8-06", 8, "translate outputs under umask 022", ["translate", "fx/IMG", "-o", "c8-06/T", *MODEL], 0,
             check=modes("T")),
        Case("c8-07", 8, "bench results under umask 022",
             ["bench", *MODEL, "-o", "c8-07/B", "--sizes", "32x32", *BENCH_FAST], 0, check=modes("B")),
        Case("c8-08", 8, "sample-video under umask 027: 0640",
             ["data", "sample-video", "c8-08/S/clip.mp4", "--frames", "5", "--size", "32x32"], 0, umask=0o027,
             check=modes("S", 0o027)),
        Case("c8-09", 8, "translate under umask 027: 0640 / 0750", ["translate", "fx/IMG", "-o", "c8-09/T", *MODEL],
             0, umask=0o027, check=modes("T", 0o027)),
        Case("c8-10", 8, "data synth under umask 077: 0600 / 0700",
             ["data", "synth", "c8-10/D", "--n-train", "2", "--n-test", "1", "--size", "32"], 0, umask=0o077,
             check=modes("D", 0o077)),
        Case("c8-11", 8, "export under umask 027", ["export", G_A, "-o", "c8-11/EXP"], 0, umask=0o027,
             check=modes("EXP", 0o027)),
    ]

    # ---- 9 misleading messages
    def quiet_stderr(r: Result) -> list[str]:
        extra = [line for line in _lines(r.err) if not line.startswith(OWN_PREFIXES)]
        r.note = f"{len(_lines(r.err))} stderr line(s)"
        return [f"stderr has {len(extra)} line(s) that are not the product's: {extra[0][:100]!r}"] if extra else []

    c += [
        Case("c9-01", 9, "a checkpoint missing a key names the key",
             ["export", "fx/missing_key_net_G_A.pth", "-o", "c9-01/EXP"], 1,
             names=("fx/missing_key_net_G_A.pth",), needs=(lambda: S["missing_key"],)),  # type: ignore[arg-type]
        Case("c9-02", 9, "a checkpoint with an extra key names the key",
             ["export", "fx/extra_key_net_G_A.pth", "-o", "c9-02/EXP"], 1,
             names=("fx/extra_key_net_G_A.pth",), needs=("model.99.weight",)),
        Case("c9-03", 9, "random bytes .pth to export", ["export", "fx/random.pth", "-o", "c9-03/EXP"], 1,
             names=("fx/random.pth",), needs=("not a PyTorch checkpoint",), check=absent("EXP")),
        Case("c9-04", 9, "random bytes .pth to video --checkpoint",
             ["video", "fx/clip.mp4", "-o", "c9-04/out.mp4", "--checkpoint", "fx/random.pth"], 1,
             names=("fx/random.pth",), needs=("not a PyTorch checkpoint",)),
        Case("c9-05", 9, "random bytes .onnx to video --model",
             ["video", "fx/clip.mp4", "-o", "c9-05/out.mp4", "--model", "fx/random.onnx"], 1,
             names=("fx/random.onnx",), needs=("onnx",)),
        Case("c9-06", 9, "a 1-channel classifier ONNX to video",
             ["video", "fx/clip.mp4", "-o", "c9-06/out.mp4", "--model", "fx/classifier1ch.onnx"], 1,
             names=("fx/classifier1ch.onnx",), needs=("not a 3-channel image generator",)),
        Case("c9-07", 9, "a 3-channel classifier ONNX (N x 10 out) to translate",
             ["translate", "fx/IMG", "-o", "c9-07/T", "--model", "fx/classifier3ch.onnx"], 1,
             names=("fx/classifier3ch.onnx",), needs=("not a 3-channel image generator",), check=absent("T")),
        Case("c9-08", 9, "a torch classifier state dict (other keys) to export",
             ["export", "fx/classifier.pth", "-o", "c9-08/EXP"], 1, names=("fx/classifier.pth",),
             needs=("generator",), check=absent("EXP")),
        Case("c9-09", 9, "the torch classifier to video --checkpoint",
             ["video", "fx/clip.mp4", "-o", "c9-09/out.mp4", "--checkpoint", "fx/classifier.pth"], 1,
             names=("fx/classifier.pth",), needs=("generator",)),
        Case("c9-10", 9, "bogus --pix-fmt", ["video", "fx/clip.mp4", "-o", "c9-10/out.mp4", *MODEL, "--pix-fmt",
                                            "yuv999p"], 1, names=("--pix-fmt",), check=absent("out.mp4")),
        Case("c9-11", 9, "bogus --preset", ["video", "fx/clip.mp4", "-o", "c9-11/out.mp4", *MODEL, "--preset",
                                           "ludicrous"], 1, names=("--preset",), check=absent("out.mp4")),
        Case("c9-12", 9, "bogus --codec", ["video", "fx/clip.mp4", "-o", "c9-12/out.mp4", *MODEL, "--codec",
                                          "nosuchcodec"], 1, names=("--codec",), check=absent("out.mp4")),
        Case("c9-13", 9, "an image passed to video points to translate",
             ["video", "fx/IMG/a.png", "-o", "c9-13/out.mp4", *MODEL], 1, names=("fx/IMG/a.png",),
             needs=("translate",), check=absent("out.mp4")),
        Case("c9-14", 9, "random bytes .mp4 to video", ["video", "fx/random.mp4", "-o", "c9-14/out.mp4", *MODEL], 1,
             names=("fx/random.mp4",), check=absent("out.mp4")),
        Case("c9-15", 9, "a truncated clip to video", ["video", "fx/trunc.mp4", "-o", "c9-15/out.mp4", *MODEL], 1,
             names=("fx/trunc.mp4",), check=absent("out.mp4")),
        Case("c9-16", 9, "bench --video on a broken clip fails",
             ["bench", *MODEL, "-o", "c9-16/B", "--sizes", "32x32", *BENCH_FAST, "--video", "fx/random.mp4"], 1,
             names=("fx/random.mp4",)),
        Case("c9-17", 9, "a text file named .png to translate", ["translate", "fx/fake.png", "-o", "c9-17/T", *MODEL],
             1, names=("fx/fake.png",), check=absent("T")),
        Case("c9-18", 9, "export succeeds with no library noise on stderr", ["export", G_A, "-o", "c9-18/EXP"], 0,
             check=quiet_stderr),
        Case("c9-19", 9, "video with the torch backend: no library noise",
             ["video", "fx/clip.mp4", "-o", "c9-19/out.mp4", "--checkpoint", G_A], 0, check=quiet_stderr),
        Case("c9-20", 9, "bench from a checkpoint (exports, runs all CPU backends): no library noise",
             ["bench", "--checkpoint", G_A, "-o", "c9-20/B", "--sizes", "32x32", *BENCH_FAST], 0),
        Case("c9-21", 9, "train on a dataset without trainB names the folder",
             ["train", "fx/D_noB", "-o", "c9-21/RUN", *TRAIN_ARGS], 1, names=("fx/D_noB",), needs=("trainB",),
             check=absent("RUN")),
        Case("c9-22", 9, "a .pth given to --model runs it (the file, not the flag, picks the backend)",
             ["video", "fx/clip.mp4", "-o", "c9-22/out.mp4", "--model", G_A], 0, check=video_is("out.mp4", 30, None)),
        Case("c9-23", 9, "video --device cuda on a machine without CUDA never falls back",
             ["video", "fx/clip.mp4", "-o", "c9-23/out.mp4", *MODEL, "--device", "cuda"], 1,
             needs=("cuda",), check=absent("out.mp4"),
             skip="a CUDA GPU is visible here" if shutil.which("nvidia-smi") else None),
        Case("c9-24", 9, "bench --backends with an unknown name",
             ["bench", *MODEL, "-o", "c9-24/B", "--backends", "nosuchbackend", "--sizes", "32x32"], 1,
             names=("nosuchbackend",), check=absent("B")),
        Case("c9-25", 9, "an empty .pth", ["export", "fx/empty.pth", "-o", "c9-25/EXP"], 1, names=("fx/empty.pth",),
             needs=("empty",), check=absent("EXP")),
        Case("c9-26", 9, "doctor: no library noise", ["doctor", "--no-probe"], 0, check=quiet_stderr),
        Case("c9-27", 9, "an image given as --model", ["video", "fx/clip.mp4", "-o", "c9-27/out.mp4", "--model",
                                                     "fx/IMG/a.png"], 1, names=("fx/IMG/a.png",),
             check=absent("out.mp4")),
        Case("c9-28", 9, "a video passed to translate points to video",
             ["translate", "fx/clip.mp4", "-o", "c9-28/T", *MODEL], 1, names=("fx/clip.mp4",), needs=("video",),
             check=absent("T")),
        Case("c9-29", 9, "an ONNX file passed to export", ["export", ONNX, "-o", "c9-29/EXP"], 1, names=(ONNX,),
             check=absent("EXP")),
        Case("c9-30", 9, "the training checkpoint passed to export",
             ["export", "fx/RUN/checkpoints/latest.pt", "-o", "c9-30/EXP"], 1,
             names=("fx/RUN/checkpoints/latest.pt",), check=absent("EXP")),
        Case("c9-31", 9, "--checkpoint a folder that is not a run",
             ["video", "fx/clip.mp4", "-o", "c9-31/out.mp4", "--checkpoint", "fx/IMG"], 1, names=("fx/IMG",)),
        Case("c9-32", 9, "a folder of images passed to video", ["video", "fx/IMG", "-o", "c9-32/out.mp4", *MODEL], 1,
             names=("fx/IMG",), needs=("translate",)),
        Case("c9-33", 9, "bench --sizes abc", ["bench", *MODEL, "-o", "c9-33/B", "--sizes", "abc"], 1,
             names=("--sizes",), check=absent("B")),
        Case("c9-34", 9, "video --size 0x0", ["video", "fx/clip.mp4", "-o", "c9-34/out.mp4", *MODEL, "--size", "0x0"],
             1, names=("--size",)),
        Case("c9-35", 9, "sample-video --fps 0", ["data", "sample-video", "c9-35/c.mp4", "--fps", "0"], 1,
             names=("--fps", "frame rate"), check=absent("c.mp4")),
        Case("c9-36", 9, "video -o an existing folder", ["video", "fx/clip.mp4", "-o", "c9-36", *MODEL], 1,
             names=("c9-36",), needs=("folder",)),
    ]

    # ---- 10 UX
    helps = [("c10-01", []), ("c10-02", ["train"]), ("c10-03", ["export"]), ("c10-04", ["video"]),
             ("c10-05", ["translate"]), ("c10-06", ["bench"]), ("c10-07", ["data", "synth"]),
             ("c10-08", ["data", "sample-video"]), ("c10-09", ["doctor"])]
    for cid, sub in helps:
        c.append(Case(cid, 10, f"`{' '.join(['cgdeploy', *sub])} --help` shows no <bool>", [*sub, "--help"], 0,
                      check=lambda r: (["<bool>" + " in the help"] if "<bool>" in r.out else [])
                      + ([] if "--help" in r.out else ["no help text"])))

    def progress_bar(r: Result) -> list[str]:
        text = ANSI.sub("", r.out)
        return [] if ("━" in text or re.search(r"\b\d+/\d+\b.*images", text)) else ["no progress bar on a terminal"]

    def no_progress(r: Result) -> list[str]:
        bad = [m for m in ("━", "\r", "\x1b[") if m in r.err]
        return [f"progress/terminal output when piped ({bad[0]!r} on stderr)"] if bad else []

    def engine_note(r: Result) -> list[str]:
        lines = _lines(r.out)
        why = []
        first_wrote = next((i for i, line in enumerate(lines) if line.startswith("wrote")), len(lines))
        note = next((i for i, line in enumerate(lines) if "tensorrt" in line.lower()), None)
        if note is None or note > first_wrote:
            why.append("does not say TensorRT is missing before the export work")
        n = sum("trtexec" in line for line in lines)
        if n < 2:
            why.append(f"{n} trtexec command(s) printed, expected one per direction (2)")
        for d in ("g_AtoB", "g_BtoA"):
            if not any("trtexec" in line and d in line for line in lines):
                why.append(f"no trtexec command for {d}")
        if not (r.cdir / "EXP" / "g_AtoB.onnx").exists():
            why.append("the ONNX artifacts were not written")
        return why

    # tensorrt-stubs installs a namespace package `tensorrt` without the library: only a real module counts
    trt_here = subprocess.run([sys.executable, "-c", "import tensorrt as t; assert t.__file__"],
                              capture_output=True).returncode == 0
    bench_tbl = ["--sizes", "32x32,24x40", *BENCH_FAST]
    c += [
        Case("c10-10", 10, "--debug after the subcommand shows the traceback",
             ["export", "fx/random.pth", "-o", "c10-10/EXP", "--debug"], 1, debug=True, check=absent("EXP")),
        Case("c10-11", 10, "--debug before the subcommand shows the traceback",
             ["--debug", "video", "fx/random.mp4", "-o", "c10-11/out.mp4", *MODEL], 1, debug=True),
        Case("c10-12", 10, "bench table when piped: plain, every column, every p50 visible",
             ["bench", *MODEL, "-o", "c10-12/B", *bench_tbl], 0,
             check=lambda r: table_p50(r, r.cdir / "B" / "results.json", None)),
        Case("c10-13", 10, "bench table on an 80-column terminal: fits, every p50 visible",
             ["bench", *MODEL, "-o", "c10-13/B", *bench_tbl], 0, kind="pty", phase=2,
             check=lambda r: table_p50(r, r.cdir / "B" / "results.json", 80)),
        Case("c10-14", 10, "translate shows no progress when piped", ["translate", "fx/IMG", "-o", "c10-14/T", *MODEL],
             0, check=no_progress),
        Case("c10-15", 10, "translate shows progress on a terminal",
             ["translate", "fx/IMG_many", "-o", "c10-15/T", *MODEL], 0, kind="pty", phase=2, check=progress_bar),
        Case("c10-16", 10, "--resume says where it resumes",
             ["train", "fx/D", "-o", "c10-16/RUN", "--resume", "--epochs", "2"], 0, prepare=copy_from("fx/RUN", "RUN"),
             check=lambda r: ([] if re.search(r"resum\w* .*epoch \d+/\d+.*iteration 6\b", r.err + r.out, re.I)
                              else ["does not say 'resuming ... epoch N/M ... iteration 6'"]) + no_progress(r)),
        Case("c10-17", 10, "export --engine without TensorRT: says so first, trtexec per direction",
             ["export", "fx/RUN", "-o", "c10-17/EXP", "--engine"], 1, names=("c10-17/EXP",), needs=("TensorRT",),
             check=engine_note, skip="TensorRT is installed here" if trt_here else None),
        Case("c10-18", 10, "unknown option is a usage error", ["video", "fx/clip.mp4", "--no-such-flag"], 2,
             names=("--no-such-flag",)),
        Case("c10-19", 10, "missing -o is a usage error", ["export", G_A], 2, names=("-o", "--output")),
        Case("c10-20", 10, "--batch 0 is a usage error",
             ["video", "fx/clip.mp4", "-o", "c10-20/out.mp4", *MODEL, "--batch", "0"], 2, names=("--batch",)),
        Case("c10-21", 10, "unknown command is a usage error", ["frobnicate"], 2, names=("frobnicate",)),
        Case("c10-22", 10, "--resume where there is no run",
             ["train", "fx/D", "-o", "c10-22/RUN", "--resume", *TRAIN_ARGS], 1, names=("c10-22/RUN",),
             check=absent("RUN")),
        Case("c10-23", 10, "--resume with --force is refused", ["train", "fx/D", "-o", "c10-23/RUN", "--resume",
                                                               "--force"], 1,
             needs=("--resume", "--force"), prepare=copy_from("fx/RUN", "RUN"), protect=("c10-23/RUN",)),
        Case("c10-24", 10, "video without a model says which options", ["video", "fx/clip.mp4", "-o",
                                                                        "c10-24/out.mp4"], 1,
             needs=("--model", "--checkpoint")),
    ]
    return c


# ------------------------------------------------------------------------------------------------ report

def source_fingerprint() -> str:
    """sha256 of the product's sources: a change during the run (someone editing the tree) is reported."""
    h = hashlib.sha256()
    for root in ("cyclegan_deploy", "export", "train"):
        for f in sorted((REPO / root).rglob("*.py")):
            h.update(str(f.relative_to(REPO)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:12]


def git_commit() -> str:
    """HEAD, plus a note when the product's sources in the tree differ from it (read-only git calls only)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True).stdout.strip()
        files = subprocess.run(["git", "ls-files", "cyclegan_deploy", "export", "train"], cwd=REPO,
                               capture_output=True, text=True).stdout.split()
        dirty = [f for f in files if f.endswith(".py") and (REPO / f).exists() and subprocess.run(
            ["git", "show", f"HEAD:{f}"], cwd=REPO, capture_output=True).stdout != (REPO / f).read_bytes()]
    except OSError:
        return ""
    return head + (f" with uncommitted changes to {len(dirty)} product file(s)" if dirty else "")


def machine_facts() -> dict[str, Any]:
    from cyclegan_deploy import machine
    flags = machine.cpu_flags()
    isa = [f for f in ("sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl",
                       "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8") if f in flags]
    mem = machine.available_memory()
    versions = {d: machine.package_version(d) for d in ("cyclegan-deploy", "torch", "onnx", "onnxruntime",
                                                         "onnxscript", "openvino", "av", "numpy", "pillow", "typer",
                                                         "rich")}
    return {"cpu": machine.cpu_model(), "isa": isa, "physical_cores": machine.physical_cores(),
            "allowed_cpus": machine.allowed_cpus(), "available_memory_gib": round(mem / 2**30, 1) if mem else None,
            "python": platform.python_version(), "platform": platform.platform(), "user": "root" if os.geteuid() == 0
            else "non-root", "versions": versions, "commit": S.get("commit", "")}


def md_cell(text: str, limit: int | None = None) -> str:
    text = " ".join(str(text).split())
    if limit and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("|", "\\|")


def write_report(records: list[dict[str, Any]], facts: dict[str, Any], out: Path, meta: dict[str, Any]) -> None:
    counts: dict[int, dict[str, int]] = {}
    for r in records:
        counts.setdefault(r["class"], {"PASS": 0, "FAIL": 0, "SKIP": 0, "HARNESS": 0})[r["verdict"]] += 1
    total = {k: sum(c[k] for c in counts.values()) for k in ("PASS", "FAIL", "SKIP", "HARNESS")}
    v = facts["versions"]
    lines = [
        "# cgdeploy reliability cases",
        "",
        f"Made by `python scripts/reliability_cases.py{meta['args']}` on {meta['date']} "
        f"(whole run {meta['seconds']:.0f} s, {meta['jobs']} case(s) at a time; commit {facts['commit'] or '?'}, "
        f"sources {meta['sources'][0]}).",
        "",
        *([f"**Warning: the product's sources changed during the run ({meta['sources'][0]} -> {meta['sources'][1]}); "
           "the cases did not all test the same code.**", ""] if meta['sources'][0] != meta['sources'][1] else []),
        f"- **Machine:** {facts['cpu']}, {facts['physical_cores']} physical core(s), {facts['allowed_cpus']} CPU(s) "
        f"allowed, {facts['available_memory_gib']} GiB available; ISA: {' '.join(facts['isa']) or '-'}; "
        f"{facts['platform']}; running as {facts['user']}.",
        "- **Versions:** python " + facts["python"] + ", " + ", ".join(f"{k} {x}" for k, x in v.items() if x) + ".",
        "- **Standard** (README \"Errors and exit codes\"): exit 0 done / 1 error / 2 usage / 143 SIGTERM; an error is "
        "exactly one stderr line `error: ...`, the last, naming the file (or option); no `Traceback` without "
        "`--debug`; no library noise; no `partial`/`.tmp`/`.lock` files left; no empty folder left by a failed run; "
        "inputs byte-identical (sha256); existing outputs refused without `--force`, replaced with it; outputs "
        "0666/0777 & ~umask. Each case runs `python -m cyclegan_deploy ...` in a fresh scratch folder; paths are "
        "relative to it (`fx/` = inputs made by the script, `cN-MM/` = the case's own folder).",
        "",
        "## Summary",
        "",
        "| class | cases | PASS | FAIL | SKIP | HARNESS |",
        "|---|---|---|---|---|---|",
    ]
    for k in sorted(counts):
        cc = counts[k]
        lines.append(f"| {k}. {CLASSES[k][0]} | {sum(cc.values())} | {cc['PASS']} | {cc['FAIL']} | {cc['SKIP']} | "
                     f"{cc['HARNESS']} |")
    lines.append(f"| **total** | **{len(records)}** | **{total['PASS']}** | **{total['FAIL']}** | **{total['SKIP']}** |"
                 f" **{total['HARNESS']}** |")
    lines += ["", "Summary: " + "; ".join(f"{k} {CLASSES[k][0]} {counts[k]['PASS']}/{sum(counts[k].values())}"
                                          for k in sorted(counts))
              + f"; total {total['PASS']} PASS, {total['FAIL']} FAIL, {total['SKIP']} SKIP, {total['HARNESS']} HARNESS "
              f"of {len(records)}.", ""]
    fails = [r for r in records if r["verdict"] == "FAIL"]
    if fails:
        lines += ["## Failures", ""]
        for r in fails:
            lines.append(f"- **{r['id']}** {md_cell(r['what'])}: `{md_cell(r['command'], 200)}` -> "
                         f"{md_cell(r['got'], 220)}. Why: {md_cell('; '.join(r['reasons']), 300)}")
        lines.append("")
    for k in sorted(counts):
        lines += [f"## {k}. {CLASSES[k][1]}", "", "| case | what | command | expected | got | verdict |",
                  "|---|---|---|---|---|---|"]
        for r in (x for x in records if x["class"] == k):
            exp = str(r["expected"]) + ((" (one of two; other 1 naming its PID)" if r.get("pid", True) else
                                         " (one of two; other 1)") if r["kind"] == "pair" else "")
            if r.get("umask") and r["umask"] != "022":
                exp += f", umask {r['umask']}"
            verdict = r["verdict"] + (": " + md_cell("; ".join(r["reasons"]), 200) if r["reasons"] else "")
            if r["verdict"] == "PASS" and r.get("note"):
                verdict += f" ({md_cell(r['note'].lstrip('; '), 80)})"
            lines.append(f"| {r['id']} | {md_cell(r['what'], 90)} | `{md_cell(r['command'], 130)}` | {exp} | "
                         f"{md_cell(r['got'], 150)} | {verdict} |")
        lines.append("")
    lines += ["## What could not be tested honestly here", ""] + [f"- {x}" for x in meta["limits"]] + [""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    data = {"created": meta["date"], "args": meta["args"], "seconds": round(meta["seconds"], 1), "machine": facts,
            "sources": {"before": meta["sources"][0], "after": meta["sources"][1]},
            "summary": {CLASSES[k][0]: counts[k] for k in sorted(counts)} | {"total": total | {"cases": len(records)}},
            "limits": meta["limits"],
            "cases": [{k: x for k, x in r.items() if k not in ("stdout",)} for r in records]}
    out.with_suffix(".json").write_text(json.dumps(data, indent=1, default=str) + "\n")


# -------------------------------------------------------------------------------------------------- main

def _select(only: str | None) -> set[int]:
    if not only:
        return set(CLASSES)
    chosen = set()
    for part in only.split(","):
        part = part.strip().lower()
        match = [k for k, (name, _) in CLASSES.items() if part in (str(k), name)]
        if not match:
            raise SystemExit(f"--only {part!r}: use a class number 1-10 or one of "
                             f"{', '.join(n for n, _ in CLASSES.values())}")
        chosen |= set(match)
    return chosen


def _needs_resolved(cases: list[Case]) -> None:
    for c in cases:
        c.needs = tuple(n() if callable(n) else n for n in c.needs)  # type: ignore[misc]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", type=Path, default=DEFAULT_OUT, help="markdown report (+ .json beside it)")
    ap.add_argument("--only", help="class number(s) or name(s), comma-separated")
    ap.add_argument("--jobs", type=int, default=2, help="cases run at once in the parallel phase (default 2)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = ap.parse_args()
    try:
        import onnx  # noqa: F401
        import torch  # noqa: F401

        import cyclegan_deploy  # noqa: F401
    except ImportError:
        venv = REPO / ".venv" / "bin" / "python"
        if venv.exists() and Path(sys.executable).resolve() != venv.resolve():
            os.execv(str(venv), [str(venv), *sys.argv])
        raise
    chosen = _select(args.only)
    os.umask(0o022)
    t_start = time.monotonic()
    sources_before = source_fingerprint()
    S["commit"] = git_commit()  # when the run started (the sources fingerprint says if they changed since)
    S["scratch"] = Path(f"/tmp/relcases-{os.getpid()}")
    shutil.rmtree(S["scratch"], ignore_errors=True)
    (S["scratch"] / "fx").mkdir(parents=True)
    S["env"] = _env()
    records: list[dict[str, Any]] = []
    try:
        S["mount"] = mount_support()
        cases = all_cases()
        ids = [c.cid for c in cases]
        assert len(ids) == len(set(ids)), "duplicate case ids"
        for c in (c for c in cases if c.phase == 0):  # fixtures: always run, reported if their class is chosen
            print(f"[setup] {c.cid} {show(c.argv)}", flush=True)
            rec = execute(c)
            print(f"        {rec['verdict']} {rec['got'][:120]}", flush=True)
            if c.cls in chosen:
                records.append(rec)
        for needed in ("fx/D", "fx/RUN/latest_net_G_A.pth", ONNX, "fx/clip.mp4"):
            if not (scratch() / needed).exists():
                raise SystemExit(f"setup failed: {needed} was not made; see the records above")
        build_helpers(scratch() / "fx")
        build_fixtures(scratch() / "fx")
        _needs_resolved(cases)
        todo = [c for c in cases if c.phase != 0 and c.cls in chosen]
        parallel = [c for c in todo if c.phase == 1]
        serial = [c for c in todo if c.phase == 2]
        done: dict[str, dict[str, Any]] = {}

        def go(c: Case) -> None:
            rec = execute(c)
            done[c.cid] = rec
            print(f"{rec['verdict']:7s} {c.cid:7s} {rec.get('seconds', 0):5.1f}s {c.what[:60]:60s} "
                  f"{rec['got'][:90]}", flush=True)

        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            list(pool.map(go, parallel))
        for c in serial:
            go(c)
        order = {c.cid: i for i, c in enumerate(cases)}
        records += sorted(done.values(), key=lambda r: (r["class"], order[r["id"]]))
        records.sort(key=lambda r: (r["class"], order[r["id"]]))
    finally:
        umount_all(scratch())
        if not args.keep and sys.exc_info()[0] is not None:
            shutil.rmtree(scratch(), ignore_errors=True)
    limits = [
        "Read-only output folders by chmod: the cases run as root, for whom chmod does not stop writes; "
        "a read-only tmpfs (EROFS), a path under a regular file (ENOTDIR), /proc and /sys are used instead."
        if os.geteuid() == 0 else "Running as non-root: chmod-based read-only folders would work but are not used.",
        ("A real full disk (ENOSPC) is a 1 MiB tmpfs filled to the last page." if S.get("mount") is None else
         f"Read-only and full file systems were skipped: {S['mount']}."),
        "A real multi-gigapixel image is not decoded (it would take minutes and the memory of the machine): the huge "
        "image cases use PNG headers that claim 100000x100000, 12000x12000 and 9000x9000 with a few rows of data.",
        "GPU paths (CUDA, TensorRT engines, onnxruntime-gpu) are not exercised: this machine has "
        + ("an NVIDIA GPU, but the cases stay on the CPU." if shutil.which("nvidia-smi") else "no NVIDIA GPU."),
        "Ctrl-C (SIGINT, exit 130) is not sent: the README handles it exactly like SIGTERM, which is.",
        "SIGTERM outcomes depend on the moment the signal lands; the cases that aim at a narrow moment (an import "
        "inside the parity gate, torch.onnx.export, start-up) try several delays (listed in each verdict) and "
        "report the first run that ends outside the standard, so a PASS there means none of those moments failed, "
        "not every possible moment. The two-process cases are races too: each pair runs once per report.",
    ]
    meta = {"sources": (sources_before, source_fingerprint()),
            "args": " ".join([""] + sys.argv[1:]), "date": dt.datetime.now(dt.timezone.utc).strftime(
        "%Y-%m-%d %H:%M UTC"), "seconds": time.monotonic() - t_start, "jobs": args.jobs, "limits": limits}
    write_report(records, machine_facts(), args.output, meta)
    if not args.keep:
        shutil.rmtree(scratch(), ignore_errors=True)
    else:
        print(f"kept {scratch()}")
    n = {k: sum(r["verdict"] == k for r in records) for k in ("PASS", "FAIL", "SKIP", "HARNESS")}
    if meta["sources"][0] != meta["sources"][1]:
        print("WARNING: the product's sources changed during the run; run it again on a quiet tree")
    print(f"{len(records)} cases: {n['PASS']} PASS, {n['FAIL']} FAIL, {n['SKIP']} SKIP, {n['HARNESS']} HARNESS "
          f"in {meta['seconds']:.0f} s -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

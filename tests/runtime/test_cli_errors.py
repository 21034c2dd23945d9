"""The CLI's one error path: exit codes (1 errors, 2 usage, 130 Ctrl-C, 143 SIGTERM), one line, no traceback
without --debug (anywhere on the line), OS errors named with their file and a fix."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cyclegan_deploy.cli import main


def _synth_raises(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    from cyclegan_deploy.train import synthetic

    def boom(*args: object, **kwargs: object) -> Path:
        raise exc

    monkeypatch.setattr(synthetic, "write_synthetic", boom)


def test_os_error_is_one_line_naming_the_file(monkeypatch, capsys, tmp_path: Path) -> None:
    target = tmp_path / "data" / "trainA" / "000001.png"
    _synth_raises(monkeypatch, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target)))
    assert main(["data", "synth", str(tmp_path / "data")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: {target}: No space left on device; the disk is full: free space or write somewhere else"
    assert "Traceback" not in err


def test_debug_anywhere_shows_the_traceback(monkeypatch, capsys, tmp_path: Path) -> None:
    from cyclegan_deploy.errors import DataError

    _synth_raises(monkeypatch, DataError("x: broken"))
    assert main(["data", "synth", str(tmp_path / "d")]) == 1
    assert capsys.readouterr().err.strip() == "error: x: broken"
    for args in (["--debug", "data", "synth", str(tmp_path / "d")], ["data", "synth", str(tmp_path / "d"), "--debug"]):
        with pytest.raises(DataError, match="x: broken"):
            main(args)
        import cyclegan_deploy.cli as cli

        cli._state["debug"] = False  # main() keeps it for the process; reset for the next case


def test_usage_error_exits_2_and_ctrl_c_130(monkeypatch, capsys, tmp_path: Path) -> None:
    assert main(["data", "synth"]) == 2  # missing argument
    assert main(["export", str(tmp_path), "--no-such-flag"]) == 2
    _synth_raises(monkeypatch, KeyboardInterrupt())
    assert main(["data", "synth", str(tmp_path / "d")]) == 130
    assert capsys.readouterr().err.strip().endswith("interrupted")


def test_help_shows_no_bool_metavar(capsys) -> None:
    for command in ("video", "train", "export", "bench", "translate"):
        assert main([command, "--help"]) == 0
        out = capsys.readouterr().out
        assert "--help" in out and "<bool>" not in out, command


def test_sigterm_exits_143_and_cleans_up(tmp_path: Path) -> None:
    """A real process: `data synth` of many images gets SIGTERM mid-way; its temp folder goes, nothing is
    published under the final name, the exit code is 143 and the message is one line."""
    out = tmp_path / "data"
    proc = subprocess.Popen([sys.executable, "-m", "cyclegan_deploy", "data", "synth", str(out), "--n-train", "20000",
                             "--size", "32"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any("partial" in p.name for p in tmp_path.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(0.3)  # inside the write loop
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "terminated (SIGTERM)" and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []

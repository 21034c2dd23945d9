"""What the CLI reliability tests assert, in one place: run `cgdeploy` in-process, the single one-line
`error:` message naming the files, nothing partial/locked left behind, inputs unchanged (sha256)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cyclegan_deploy.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `cgdeploy ARGS`."""
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error(err: str, *names: str, alone: bool = False, no_warnings: bool = False) -> str:
    """The single `error:` line (naming each of `names`), with no traceback; alone=True: it is all of stderr;
    no_warnings=True: no Python warning text either."""
    assert "Traceback" not in err
    if no_warnings:
        assert "Warning" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, err
    if alone:
        assert lines == errors, err
    for name in names:
        assert name in errors[0], errors[0]
    return errors[0]


def leftovers(root: Path) -> list[Path]:
    """Temp outputs, locks and write probes under `root` (a clean exit leaves none)."""
    return [p for p in Path(root).rglob("*") if "partial" in p.name or p.name.endswith(".lock")
            or p.name.startswith(".cgdeploy-write-test")]


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()

"""Fault injection for output errors that works as root too (root ignores chmod, and CI has no tiny tmpfs).

`refuse_writes(monkeypatch, folder, errno.EACCES)` makes every attempt to create or open-for-writing a file
or folder under `folder` fail with that errno, as a read-only (EACCES/EROFS) or full (ENOSPC) file system
would: os.open with a write flag (tempfile.mkstemp, most C-free writers), builtins/io.open in a write mode
(PIL, onnx.save, json, csv), os.mkdir (tempfile.mkdtemp, Path.mkdir). Reads are untouched, so inputs still
load. Writers that open files in C (torch.save's zip writer, FFmpeg via PyAV) are not reached by it: patch
them at their Python entry point in the test that needs it (e.g. torch.save raising the RuntimeError
PyTorch gives on a full disk). In-process only: drive the CLI with `cyclegan_deploy.cli.main([...])`.
"""

from __future__ import annotations

import builtins
import errno as errno_codes
import io
import os
from pathlib import Path
from typing import Any

import pytest

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _under(path: Any, folder: Path) -> bool:
    try:
        return Path(os.fsdecode(path)).resolve().is_relative_to(folder)
    except (TypeError, ValueError):
        return False  # a file descriptor or something path-less


def refuse_writes(monkeypatch: pytest.MonkeyPatch, folder: Path, code: int = errno_codes.EACCES) -> None:
    folder = Path(folder).resolve()
    real_os_open, real_open, real_mkdir = os.open, builtins.open, os.mkdir

    def fail(path: Any) -> OSError:
        return OSError(code, os.strerror(code), os.fsdecode(path))

    def os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & _WRITE_FLAGS and _under(path, folder):
            raise fail(path)
        return real_os_open(path, flags, *args, **kwargs)

    def open_(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if any(c in mode for c in "wax+") and _under(file, folder):
            raise fail(file)
        return real_open(file, mode, *args, **kwargs)

    def mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
        if _under(path, folder):
            raise fail(path)
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(io, "open", open_)
    monkeypatch.setattr(os, "mkdir", mkdir)

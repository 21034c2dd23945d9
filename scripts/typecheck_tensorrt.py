"""Type-check our TensorRT code against tensorrt-stubs.

The published stubs (10.13) cannot be used as installed: the package has no py.typed marker, so mypy
ignores it, and tensorrt.pyi has two syntax errors (a parameter named `in`, a required parameter after
defaulted ones). This copies them to a build folder, repairs exactly those two things and runs mypy with
the copy on MYPYPATH, so a wrong TensorRT call in export/tensorrt.py or backends/tensorrt.py fails `make test`.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / ".mypy_cache" / "tensorrt-stubs"


def stub_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"error: {name} stubs not installed; run `pip install --no-deps tensorrt-stubs` (make setup does)")
    return Path(next(iter(spec.submodule_search_locations)))


def build_stubs() -> Path:
    shutil.rmtree(BUILD, ignore_errors=True)
    BUILD.mkdir(parents=True)
    for name in ("tensorrt", "tensorrt_bindings"):
        shutil.copytree(stub_dir(name), BUILD / name, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    pyi = BUILD / "tensorrt_bindings" / "tensorrt.pyi"
    text = pyi.read_text()
    text = re.sub(r"\((self(?:: [A-Za-z0-9_]+)?, )in: ", r"(\1in_: ", text)
    text = text.replace("power: Weights = None, channel_axis: int)", "power: Weights = None, channel_axis: int = ...)")
    pyi.write_text(text)
    return BUILD


def main() -> int:
    files = [f for f in sys.argv[1:] if (ROOT / f).exists()]
    if not files:
        print("typecheck: no TensorRT modules to check")
        return 0
    stubs = build_stubs()
    env = dict(os.environ, MYPYPATH=str(stubs))
    cmd = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), *files]
    return subprocess.call(cmd, cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main())

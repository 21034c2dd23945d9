"""The GPU extras in pyproject.toml: one per CUDA major, each pinning onnxruntime-gpu, tensorrt-cuXX and
cuda-python to versions that load together, and `make` never installing onnxruntime next to onnxruntime-gpu.

Nothing is installed here (TensorRT and onnxruntime-gpu cannot be on these machines): the pins are checked
against the table below, whose rows come from the sources named on them. Extending an upper bound past the
table fails until a row with its source is added.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as the tomli package
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]
GPU_EXTRAS = {"gpu-cu12": 12, "gpu-cu13": 13}  # extra -> the CUDA major every package in it is built for

# onnxruntime-gpu minor -> (CUDA major of its PyPI wheel, TensorRT major its TensorRT EP links,
#                           TensorRT version it was built with where published, else None)
# - CUDA and TensorRT majors of every row: read from the PyPI wheels (cp311, manylinux x86_64) on 2026-11-24 with
#   `readelf -d onnxruntime/capi/libonnxruntime_providers_tensorrt.so`: 1.22.0, 1.23.2, 1.24.4, 1.25.1 and 1.26.0
#   need libcudart.so.12 + libnvinfer.so.10; 1.27.0, 1.28.0, 1.29.0, 1.30.0, 1.31.0 and 1.31.1 need
#   libcudart.so.13 + libnvinfer.so.10. Their metadata agrees (extra "cuda": nvidia-cuda-runtime-cu12 ~= 12.0 up to
#   1.26, CUDA 13 runtime wheels from 1.27); microsoft/onnxruntime#32278 reports the same for 1.29 (TensorRT 10).
# - 1.22 built with TensorRT 10.9: onnxruntime.ai/docs/execution-providers/TensorRT-ExecutionProvider.html
#   #requirements ("1.22 | 10.9 | 12.0-12.8")
# - 1.30 built with TensorRT 10.14.1.48: tools/ci_build/github/azure-pipelines/templates/common-variables.yml at
#   v1.30.0 (cuda13_trt_version)
ORT_GPU: dict[int, tuple[int, int, str | None]] = {
    22: (12, 10, "10.9"), 23: (12, 10, None), 24: (12, 10, None), 25: (12, 10, None), 26: (12, 10, None),
    27: (13, 10, None), 28: (13, 10, None), 29: (13, 10, None), 30: (13, 10, "10.14.1"), 31: (13, 10, None),
}
# TensorRT wheels exist per CUDA major (tensorrt-cu12 / tensorrt-cu13, TensorRT installation prerequisites); CUDA
# 13 support starts at TensorRT 10.13.2 (its release notes: "Added support for CUDA 13.0"; PyPI's first
# tensorrt-cu13 is 10.13.2.6).
TRT_FIRST = {12: "10.0", 13: "10.13.2"}


def extras() -> dict[str, list[Requirement]]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {name: [Requirement(r) for r in reqs] for name, reqs in data["project"]["optional-dependencies"].items()}


def pin(reqs: list[Requirement], prefix: str) -> Requirement:
    found = [r for r in reqs if r.name == prefix or r.name.startswith(prefix + "-")]
    assert len(found) == 1, f"expected one {prefix}* requirement, got {[str(r) for r in found]}"
    return found[0]


def bounded(spec: SpecifierSet) -> bool:
    ops = {s.operator for s in spec}
    return bool(ops & {"==", "~=", "==="}) or (bool(ops & {">=", ">"}) and bool(ops & {"<", "<="}))


def allowed_minors(spec: SpecifierSet, major: int = 1, upto: int = 60) -> list[int]:
    """Minor versions of `major` with any release the specifier accepts (x.y.0 .. x.y.99)."""
    return [m for m in range(upto) if any(spec.contains(f"{major}.{m}.{p}") for p in (0, 1, 2, 5, 99))]


def lowest(spec: SpecifierSet) -> Version:
    return min(Version(s.version) for s in spec if s.operator in (">=", ">", "==", "~="))


def test_both_gpu_extras_exist_and_no_unpinned_alias() -> None:
    found = extras()
    for name in GPU_EXTRAS:
        assert name in found, f"pyproject.toml lacks the [{name}] extra"
    # a bare [gpu] would resolve to whatever CUDA major PyPI's newest wheels have: the defect this replaced
    assert "gpu" not in found or all(bounded(r.specifier) for r in found["gpu"])


@pytest.mark.parametrize("extra,cuda", sorted(GPU_EXTRAS.items()))
def test_gpu_extra_pins_are_bounded_and_agree(extra: str, cuda: int) -> None:
    reqs = extras()[extra]
    ort, trt, cudapy = pin(reqs, "onnxruntime-gpu"), pin(reqs, "tensorrt"), pin(reqs, "cuda-python")
    for r in (ort, trt, cudapy):
        assert bounded(r.specifier), f"[{extra}] {r}: needs a lower and an upper bound"
    # TensorRT and cuda-python are built for the extra's CUDA major
    assert trt.name == f"tensorrt-cu{cuda}", f"[{extra}] {trt.name}: CUDA {cuda}'s TensorRT wheel is tensorrt-cu{cuda}"
    assert allowed_minors(cudapy.specifier, major=cuda) and not any(
        allowed_minors(cudapy.specifier, major=other) for other in (cuda - 1, cuda + 1)), \
        f"[{extra}] {cudapy}: cuda-python {cuda}.x only (its major is the CUDA major it binds)"
    # every onnxruntime-gpu minor it allows is a known CUDA-<cuda> build whose TensorRT EP links the pinned major
    minors = allowed_minors(ort.specifier)
    assert minors, f"[{extra}] {ort} allows no onnxruntime-gpu release"
    unknown = [m for m in minors if m not in ORT_GPU]
    assert not unknown, f"[{extra}] {ort} allows 1.{unknown}: add their CUDA/TensorRT row (with its source) first"
    trt_majors = {major for major in range(8, 14) if allowed_minors(trt.specifier, major=major)}
    for m in minors:
        ort_cuda, ort_trt, built = ORT_GPU[m]
        assert ort_cuda == cuda, f"[{extra}] onnxruntime-gpu 1.{m} on PyPI is a CUDA {ort_cuda} build"
        assert trt_majors == {ort_trt}, f"[{extra}] onnxruntime-gpu 1.{m}'s TensorRT EP links TensorRT {ort_trt}, " \
                                        f"{trt} allows majors {sorted(trt_majors)}"
        if built:  # a runtime older than the EP's build headers may lack symbols it calls
            assert lowest(trt.specifier) >= Version(built), f"[{extra}] 1.{m} was built with TensorRT {built}"
    assert lowest(trt.specifier) >= Version(TRT_FIRST[cuda]), f"[{extra}] {trt}: no CUDA {cuda} build before"


def test_no_extra_mixes_onnxruntime_and_onnxruntime_gpu() -> None:
    for name, reqs in extras().items():
        names = {r.name for r in reqs}
        assert not {"onnxruntime", "onnxruntime-gpu"} <= names, f"[{name}] installs both onnxruntime packages"


def _make_installs() -> list[set[str]]:
    """The extras of every `pip install ... '.[a,b]'` line in the Makefile."""
    text = (ROOT / "Makefile").read_text()
    return [set(m.split(",")) for line in text.splitlines() if "pip install" in line
            for m in re.findall(r"\.\[([A-Za-z0-9_,-]+)\]", line)]


def test_make_never_installs_onnxruntime_next_to_a_gpu_extra() -> None:
    found = extras()
    installs = _make_installs()
    assert installs, "no `pip install .[extras]` line found in the Makefile"
    for chosen in installs:
        unknown = chosen - set(found)
        assert not unknown, f"Makefile installs unknown extra(s) {unknown}"
        dists = {r.name for extra in chosen for r in found[extra]}
        gpu = chosen & set(GPU_EXTRAS)
        assert len(gpu) <= 1, f"Makefile installs two GPU extras: {gpu}"
        assert not (gpu and "cpu" in chosen), f"Makefile installs [cpu] with {gpu}"
        assert not {"onnxruntime", "onnxruntime-gpu"} <= dists, f"Makefile's [{','.join(sorted(chosen))}] " \
                                                                "installs onnxruntime and onnxruntime-gpu"


def test_readme_names_only_existing_extras() -> None:
    found = extras()
    readme = (ROOT / "README.md").read_text()
    for group in re.findall(r"pip install -e '\.\[([A-Za-z0-9_,-]+)\]'", readme):
        chosen = set(group.split(","))
        assert chosen <= set(found), f"README installs unknown extra(s) {chosen - set(found)}"
        assert not (chosen & set(GPU_EXTRAS) and chosen & {"cpu", "int8"}), f"README mixes {chosen}"

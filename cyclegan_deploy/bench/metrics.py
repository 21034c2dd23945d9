"""Numbers behind `cgdeploy bench`: latency statistics, parity fields, seeded inputs, MAC counts, machine peaks.

- Statistics: numpy percentile, method="linear" (Hyndman & Fan type 7, numpy's default).
- Parity: cyclegan_deploy.quality.parity on the card's output range (max abs, PSNR, max uint8 diff after
  the runtime's output mapping), in the record's fields.
- MACs: Conv/ConvTranspose of the ONNX graph at the run size (shape inference), or torch hooks on the
  meta device. A ConvTranspose counts its real multiply-adds (input pixels x Cout x k^2); counting it as a
  dense conv over the zero-stuffed output (what thop-style tools do) gives `macs_dense`: ResNet-9 ngf 64 at
  256x256 is 49.55 GMAC real, 56.80 GMAC dense. 1 MAC = 2 FLOP. Upsampling layers (PixelShuffle, resize)
  of a scale > 1 model do no multiply-adds and are not counted.
- Peak: CPU = a GEMM / 3x3 conv measured on this machine through the case's library at its precision (bench/peaks.py);
  GPU from GPU_PEAKS by name (datasheet).
"""

from __future__ import annotations

import math
import os
import platform
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from cyclegan_deploy.errors import CgDeployError
from cyclegan_deploy.machine import allowed_cpus, cpu_flags, cpu_model, cpuinfo, isa, package_version, physical_cores
from cyclegan_deploy.metadata import REFERENCE_RANGE, canonical_precision
from cyclegan_deploy.quality import parity

# dense tensor-core FP16/BF16 and plain FP32 (no TF32) TFLOP/s from the vendors' datasheets; first match wins
GPU_PEAKS: tuple[tuple[str, float, float], ...] = (
    ("H200", 67.0, 989.0), ("H100 PCIe", 51.0, 756.0), ("H100 NVL", 60.0, 835.0), ("H100", 67.0, 989.0),
    ("A100", 19.5, 312.0), ("L40S", 91.6, 362.0), ("L4", 30.3, 121.0), ("A10", 31.2, 125.0),
    ("RTX 4090", 82.6, 165.2), ("V100", 15.7, 125.0), ("T4", 8.1, 65.0),
)
VERSIONS = ("cyclegan-deploy", "numpy", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "openvino", "tensorrt",
            "cuda-python", "av")


class ParityFields(TypedDict):
    """A case's parity fields (CaseResult.max_abs / psnr_db / max_u8)."""

    max_abs: float
    psnr_db: float | None  # None when identical: JSON has no inf
    max_u8: int


# ---- statistics and parity ------------------------------------------------------------------------------

def latency_stats(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99 (numpy 'linear' = type 7), mean, min, max, sample std (ddof 1) of per-call times."""
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no samples")
    p50, p90, p99 = np.percentile(a, [50, 90, 99], method="linear")
    return {"n": int(a.size), "p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(a.mean()),
            "min": float(a.min()), "max": float(a.max()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0}


def parity_record(reference: np.ndarray, output: np.ndarray,
                  value_range: Sequence[float] = REFERENCE_RANGE) -> ParityFields:
    """quality.parity of frame 0 in the record's terms: max_abs, psnr_db (None when identical), max_u8."""
    if reference.shape != output.shape:  # two frames of one model differ in shape only through a harness bug
        raise ValueError(f"output shape {output.shape} differs from the reference's {reference.shape}")
    p = parity(reference, output, value_range)
    return {"max_abs": p.max_abs, "psnr_db": p.psnr_db if math.isfinite(p.psnr_db) else None,
            "max_u8": p.max_uint8_diff}


def make_input(batch: int, height: int, width: int, seed: int = 0,
               value_range: Sequence[float] = REFERENCE_RANGE) -> np.ndarray:
    """Seeded smooth image-like frames in the model's input range (the card's; sums of sinusoids + slight
    noise): white noise would push instance norm and bf16/fp16 rounding into a regime no photo reaches."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.empty((batch, 3, height, width), np.float32)  # (N, C, H, W)
    for n in range(batch):
        for c in range(3):
            img = np.zeros((height, width), np.float32)
            for _ in range(4):
                fy, fx = rng.uniform(0.5, 6, 2) / np.array([height, width])
                img += rng.uniform(0.2, 0.5) * np.sin(2 * np.pi * (fy * yy + fx * xx) + rng.uniform(0, 6.3))
            out[n, c] = img + rng.normal(0, 0.03, (height, width))
    lo, hi = float(value_range[0]), float(value_range[1])
    np.clip(out, -1, 1, out=out)
    return out if (lo, hi) == (-1.0, 1.0) else (out + 1) * np.float32((hi - lo) / 2) + np.float32(lo)


# ---- MAC counting -----------------------------------------------------------------------------------------

def _conv_macs(op: str, x: Sequence[int], y: Sequence[int], weight: Sequence[int], group: int) -> tuple[int, int]:
    """(real, dense) MACs. Conv: out pixels x Cout x Cin/g x k. ConvTranspose real: in pixels x Cin x Cout/g x k;
    dense: out pixels x Cout x Cin/g x k (the zero-stuffed convolution)."""
    k = math.prod(weight[2:])
    if op == "Conv":
        macs = math.prod(y) * weight[1] * k
        return macs, macs
    real = math.prod(x) * weight[1] * k  # ConvTranspose weight is [Cin, Cout/g, kh, kw]
    return real, math.prod(y) * (x[1] // group) * k


def count_macs_onnx(path: str | Path, height: int, width: int, batch: int = 1) -> dict[str, int]:
    """Conv/ConvTranspose MACs of an ONNX graph at one input size, from onnx shape inference."""
    import onnx
    from onnx import numpy_helper, shape_inference

    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for d, v in zip(dims, (batch, dims[1].dim_value or 3, height, width), strict=True):
        d.Clear()
        d.dim_value = v
    model = shape_inference.infer_shapes(model, data_prop=True)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in (*model.graph.input, *model.graph.value_info, *model.graph.output)}
    shapes.update({t.name: list(t.dims) for t in model.graph.initializer})
    consts = {n.output[0]: list(numpy_helper.to_array(a.t).shape) for n in model.graph.node
              if n.op_type == "Constant" for a in n.attribute if a.name == "value"}
    real = dense = 0
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose"):
            continue
        x, w, y = shapes.get(node.input[0]), shapes.get(node.input[1]) or consts.get(node.input[1]), \
            shapes.get(node.output[0])
        if not x or not w or not y or 0 in x or 0 in y:
            raise CgDeployError(f"{path}: shape inference left {node.op_type} {node.name!r} without static "
                                "shapes; count MACs from the checkpoint (torch hooks) instead")
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        r, d = _conv_macs(node.op_type, x, y, w, group)
        real, dense = real + r, dense + d
    return {"macs": real, "macs_dense": dense}


def count_macs_torch(model: Any, height: int, width: int, batch: int = 1, in_ch: int = 3) -> dict[str, int]:
    """The same count from a torch module via forward hooks on a meta-device copy (no real compute)."""
    import copy

    import torch
    from torch import nn

    meta_model = copy.deepcopy(model).to("meta")
    totals = {"macs": 0, "macs_dense": 0}

    def hook(mod: nn.Conv2d | nn.ConvTranspose2d, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        op = "ConvTranspose" if isinstance(mod, nn.ConvTranspose2d) else "Conv"
        r, d = _conv_macs(op, inputs[0].shape, out.shape, mod.weight.shape, mod.groups)
        totals["macs"] += r
        totals["macs_dense"] += d

    handles = [m.register_forward_hook(hook) for m in meta_model.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    with torch.no_grad():
        meta_model(torch.empty(batch, in_ch, height, width, device="meta"))
    for h in handles:
        h.remove()
    return totals


# ---- the machine ------------------------------------------------------------------------------------------

def _gpus() -> list[dict[str, str]]:
    """Names from nvidia-smi (no torch/CUDA import here, so a CPU machine stays light)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return []
    rows = [[c.strip() for c in line.split(",")] for line in out.stdout.strip().splitlines() if line.strip()]
    return [{"name": r[0], "driver": r[1] if len(r) > 1 else "", "memory": r[2] if len(r) > 2 else ""}
            for r in rows]


def machine_info() -> dict[str, Any]:
    """CPU model, flags, ISA (what it can do), cores, frequency; GPUs with their table peaks; versions.
    The CPU's peaks are measured (bench.peaks), not derived from these: run_bench adds them."""
    info, flags = cpuinfo(), cpu_flags()
    logical, physical = allowed_cpus(), physical_cores()
    smt = max(1, logical // physical)
    model = cpu_model()
    ghz_match = re.search(r"@\s*([\d.]+)\s*GHz", model)
    ghz, ghz_source = ((float(ghz_match[1]), "model name (base clock)") if ghz_match else
                       (float(info.get("cpu MHz", "0") or 0) / 1000, "/proc/cpuinfo cpu MHz (current clock)"))
    gpus = _gpus()
    for gpu in gpus:
        peak = next((p for p in GPU_PEAKS if p[0].lower() in gpu["name"].lower()), None)
        gpu["peak_fp32_tflops"] = str(peak[1]) if peak else ""
        gpu["peak_fp16_tflops"] = str(peak[2]) if peak else ""
    return {
        "cpu": {"model": model, "logical_cpus": logical, "physical_cores": physical, "threads_per_core": smt,
                "ghz": round(ghz, 3), "ghz_source": ghz_source,
                "flags": sorted(flags & {"avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni",
                                         "amx_tile", "amx_bf16", "amx_int8", "amx_fp16"}),
                "isa": isa(flags)},
        "gpus": gpus, "platform": platform.platform(),
        "versions": {"python": platform.python_version(), **{d: package_version(d) for d in VERSIONS}},
        "env_threads": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ},
    }


def gpu_peak_gflops(machine: dict[str, Any], precision: str) -> float | None:
    """The first GPU's datasheet peak for a case's precision (None where unknown: int8, an unlisted GPU)."""
    try:
        canon = canonical_precision(precision)
    except CgDeployError:  # "engine", "auto": unknown until the backend reports it
        return None
    # the table lists fp32 and 16-bit tensor-core rates (bf16 and fp16 share them)
    prec = {"fp32": "fp32", "fp16": "fp16", "bf16": "fp16"}.get(canon)
    gpu = machine["gpus"][0] if machine["gpus"] else {}
    value = gpu.get(f"peak_{prec}_tflops") if prec else None
    return float(value) * 1000 if value else None

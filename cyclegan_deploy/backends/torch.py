"""PyTorch backend: a generator checkpoint run eagerly (or torch.compile'd) on CPU or CUDA.

Reduced precision is autocast: convolutions run in fp16/bf16 on fp32 weights cast per call. instance_norm is
not on autocast's fp32 list, so it runs on the fp16/bf16 activations, but its mean and variance are accumulated
in fp32 by the kernel (as they would be after model.half()). The washed-out FP16 outputs documented for this
architecture come from FP16 instance-norm layers elsewhere (NVIDIA/TensorRT#2691, onnxruntime#10079), not torch.

CUDA: cuDNN picks its fastest algorithms per input shape (cudnn.benchmark; video keeps one shape), and TF32 is
set explicitly, off unless asked (`tf32` option), so "fp32" means FP32 as it does for the TensorRT FP32 engines;
`tf32` records it (None on CPU). Both are process-wide torch switches, so they are set again before each call.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cyclegan_deploy.backends.base import UNAVAILABLE, Backend, BackendOptions, try_import
from cyclegan_deploy.errors import BackendUnavailableError, ConfigError
from cyclegan_deploy.metadata import canonical_precision


@dataclass
class TorchOptions(BackendOptions):
    threads: int | None = None  # torch's intra-op threads (process-wide; default: physical cores)
    compile: bool = False  # torch.compile (inductor); the first call compiles
    channels_last: bool = False  # lets oneDNN/cuDNN pick their NHWC kernels
    tf32: bool = False  # CUDA: TF32 convolutions/matmuls for fp32 (faster, 10-bit mantissa inputs); off = true FP32
    # overrides of what load_generator infers from the checkpoint (see `cgdeploy export --help`)
    direction: str | None = None
    arch: str | None = None
    ngf: int | None = None
    norm: str | None = None
    dropout: bool | None = None


class TorchBackend(Backend):
    def __init__(self, path: str | Path, device: str = "auto", precision: str | None = None,
                 options: dict[str, Any] | None = None) -> None:
        opts = TorchOptions.from_options("torch", options or {})
        try:
            import torch
        except ImportError as e:
            raise BackendUnavailableError(f"PyTorch is not installed ({e}); "
                                          "pip install 'cyclegan-deploy[train]'") from e
        from cyclegan_deploy.train.checkpoints import load_generator

        chosen = canonical_precision(precision or "fp32", ("fp32", "fp16", "bf16"), "torch precision", auto=True)
        self.precision = "fp32" if chosen == "auto" else chosen  # autocast is opt-in: auto means FP32 here
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device not in ("cpu", "cuda"):
            raise ConfigError(f"torch device {device!r} unknown; use cpu or cuda")
        if device == "cuda" and not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, no device found"
            raise BackendUnavailableError(f"--device cuda asked but torch {torch.__version__} ({build}) has no "
                                          "usable GPU; use --device cpu or install a CUDA build of torch")
        if self.precision == "fp16" and device != "cuda":
            raise BackendUnavailableError("fp16 autocast runs on CUDA only; on CPU use --precision bf16 or fp32")
        if self.precision == "bf16" and device == "cuda" and not torch.cuda.is_bf16_supported():
            raise BackendUnavailableError(f"{torch.cuda.get_device_name()} has no bf16 support; use --precision fp16")
        if opts.threads:
            torch.set_num_threads(opts.threads)  # process-wide in torch; the default is the physical core count
        self.threads = torch.get_num_threads()
        self._torch = torch
        self.device = device
        self.tf32: bool | None = opts.tf32 if device == "cuda" else None
        if opts.tf32 and device != "cuda":
            raise ConfigError("tf32 applies to CUDA only; TF32 is an NVIDIA tensor-core format")
        if device == "cuda":
            self._cuda_flags()
        model, self.meta = load_generator(path, direction=opts.direction, arch=opts.arch, ngf=opts.ngf,
                                          norm=opts.norm, dropout=opts.dropout)
        model = model.to(device)
        self._memory_format = torch.channels_last if opts.channels_last else torch.contiguous_format
        if opts.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model: Any = torch.compile(model) if opts.compile else model
        parts = ["torch", device] + ([self.precision] if self.precision != "fp32" else [])
        parts += (["compile"] if opts.compile else []) + (["cl"] if opts.channels_last else [])
        parts += ["tf32"] if self.tf32 else []
        self.name = "-".join(parts)

    def _cuda_flags(self) -> None:
        backends = self._torch.backends
        backends.cudnn.benchmark = True  # per-shape algorithm search once, then the fastest kernels
        backends.cuda.matmul.allow_tf32 = bool(self.tf32)
        backends.cudnn.allow_tf32 = bool(self.tf32)

    def _autocast(self) -> Any:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = self._torch.float16 if self.precision == "fp16" else self._torch.bfloat16
        return self._torch.autocast(device_type=self.device, dtype=dtype)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = torch.from_numpy(batch)
        if self.device == "cuda":
            self._cuda_flags()
            # a plain copy: pinning a fresh buffer every call costs more than the pageable copy it saves
            x = x.to(self.device)
        x = x.contiguous(memory_format=self._memory_format)  # (N, C, H, W), NHWC strides with channels_last
        with torch.inference_mode(), self._autocast():
            y = self.model(x)
        return np.ascontiguousarray(y.float().cpu().numpy())

    def close(self) -> None:
        self.model = None
        if self.device == "cuda":
            self._torch.cuda.empty_cache()


def availability(variant: str = "") -> str:
    """Version, or "unavailable: ..." without torch, or without a CUDA device for the cuda variant."""
    torch, err = try_import("torch")
    if torch is None:
        return err or UNAVAILABLE
    if variant == "cuda" and not torch.cuda.is_available():
        return f"{UNAVAILABLE}torch {torch.__version__} sees no CUDA device (CPU build or no GPU)"
    return str(torch.__version__)

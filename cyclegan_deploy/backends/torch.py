"""PyTorch backend: a generator checkpoint run eagerly (or torch.compile'd) on CPU or CUDA.

Reduced precision: on CUDA the model itself is cast (model.half() / .bfloat16(), inputs cast once on the
device), the field's practice for inference: no per-call weight casts. instance_norm then runs on fp16/bf16
activations, but its mean and variance are accumulated in fp32 by the kernel. The washed-out FP16 outputs
documented for this architecture come from FP16 instance-norm layers elsewhere (NVIDIA/TensorRT#2691,
onnxruntime#10079), not torch. On CPU bf16 is autocast (convolutions in bf16 on fp32 weights).

CUDA: cuDNN picks its fastest algorithms per input shape (cudnn.benchmark; video keeps one shape), and TF32 is
set explicitly, off unless asked (`tf32` option), so "fp32" means FP32 as it does for the TensorRT FP32 engines;
`tf32` records it (None on CPU). Both are process-wide torch switches, so they are set again before each call.
`cuda_graphs` captures one CUDA graph per input shape (after warm-up calls, so cuDNN's search is done) with
static device buffers and pinned host buffers, and replays it: one launch per batch instead of one per layer
(cuda_graphs.py).

uint8 in and out (`run_uint8`, used by `video` when `uint8_io`): frames go to the device as uint8 (a quarter
of the float32 bytes), are normalised there, and come back as uint8 after the output's scaling, clipping and
rounding ran there too; the same float32 operations as frames.to_model/to_uint8, so the pixels are the same
as the host path's. On by default on CUDA (`device_io`), off on CPU (the host path's per-frame thread pool is
faster there); `device_io=True` on CPU runs the same code (tests compare it with the host path).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cyclegan_deploy.backends.base import UNAVAILABLE, Backend, BackendOptions, check_frames, try_import
from cyclegan_deploy.backends.cuda_graphs import GraphCache
from cyclegan_deploy.errors import BackendUnavailableError, ConfigError
from cyclegan_deploy.metadata import canonical_precision


@dataclass
class TorchOptions(BackendOptions):
    threads: int | None = None  # torch's intra-op threads (process-wide; default: physical cores)
    compile: bool = False  # torch.compile (inductor); the first call compiles
    compile_mode: str | None = None  # torch.compile mode: "max-autotune", "reduce-overhead"...; None: default
    channels_last: bool = False  # lets oneDNN/cuDNN pick their NHWC kernels
    tf32: bool = False  # CUDA: TF32 convolutions/matmuls for fp32 (faster, 10-bit mantissa inputs); off = true FP32
    cuda_graphs: bool = False  # CUDA: one captured graph per input shape, replayed
    device_io: bool | None = None  # uint8 frames in/out, pre/post-processing on the device; None: on for CUDA
    copy_overlap: bool = False  # CUDA uint8 batches (video): uploads/downloads on their own streams (overlap.py)
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
        self.precision = "fp32" if chosen == "auto" else chosen  # reduced precision is opt-in: auto means FP32
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device not in ("cpu", "cuda"):
            raise ConfigError(f"torch device {device!r} unknown; use cpu or cuda")
        if device == "cuda" and not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, no device found"
            raise BackendUnavailableError(f"--device cuda asked but torch {torch.__version__} ({build}) has no "
                                          "usable GPU; use --device cpu or install a CUDA build of torch")
        if self.precision == "fp16" and device != "cuda":
            raise BackendUnavailableError("fp16 runs on CUDA only; on CPU use --precision bf16 or fp32")
        if self.precision == "bf16" and device == "cuda" and not torch.cuda.is_bf16_supported():
            raise BackendUnavailableError(f"{torch.cuda.get_device_name()} has no bf16 support; use --precision fp16")
        cuda_only = (("tf32", opts.tf32), ("cuda_graphs", opts.cuda_graphs), ("copy_overlap", opts.copy_overlap))
        for flag, value in cuda_only:
            if value and device != "cuda":
                raise ConfigError(f"{flag} applies to CUDA only (this backend runs on {device})")
        if opts.compile_mode and not opts.compile:
            raise ConfigError(f"compile_mode={opts.compile_mode!r} needs compile=true (torch.compile's mode)")
        if opts.cuda_graphs and opts.compile:
            raise ConfigError("cuda_graphs and compile do not combine; torch.compile(mode='reduce-overhead') "
                              "captures CUDA graphs itself")
        if opts.threads:
            torch.set_num_threads(opts.threads)  # process-wide in torch; the default is the physical core count
        self.threads = torch.get_num_threads()
        self._torch = torch
        self.device = device
        self.tf32: bool | None = opts.tf32 if device == "cuda" else None
        if device == "cuda":
            self._cuda_flags()
        model, self.meta = load_generator(path, direction=opts.direction, arch=opts.arch, ngf=opts.ngf,
                                          norm=opts.norm, dropout=opts.dropout)
        model = model.to(device)
        # CUDA fp16/bf16: the model itself in that dtype; CPU bf16: autocast (see the module doc)
        self._dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision) if device == "cuda" \
            else None
        if self._dtype is not None:
            model = model.to(self._dtype)
        self._memory_format = torch.channels_last if opts.channels_last else torch.contiguous_format
        if opts.channels_last:
            model = model.to(memory_format=torch.channels_last)
        compile_args = {"mode": opts.compile_mode} if opts.compile_mode else {}
        self.model: Any = torch.compile(model, **compile_args) if opts.compile else model
        self.cuda_graphs = opts.cuda_graphs
        self.uint8_io = device == "cuda" if opts.device_io is None else bool(opts.device_io)
        if opts.copy_overlap and not self.uint8_io:
            raise ConfigError("copy_overlap overlaps uint8 frame copies: it needs device_io (on by default on CUDA)")
        self.copy_overlap = opts.copy_overlap
        self._graphs = GraphCache(torch, device)
        self._event_pair: tuple[Any, ...] | None = None  # CUDA start/end events, made on first use
        parts = ["torch", device] + ([self.precision] if self.precision != "fp32" else [])
        parts += (["compile"] if opts.compile else []) + (["cl"] if opts.channels_last else [])
        parts += (["tf32"] if self.tf32 else []) + (["graphs"] if self.cuda_graphs else [])
        parts += ["overlap"] if self.copy_overlap else []
        self.name = "-".join(parts)

    def _cuda_flags(self) -> None:
        backends = self._torch.backends
        backends.cudnn.benchmark = True  # per-shape algorithm search once, then the fastest kernels
        backends.cuda.matmul.allow_tf32 = bool(self.tf32)
        backends.cudnn.allow_tf32 = bool(self.tf32)

    def _autocast(self) -> Any:
        if self.precision == "fp32" or self._dtype is not None:
            return contextlib.nullcontext()
        return self._torch.autocast(device_type=self.device, dtype=self._torch.bfloat16)  # CPU bf16

    def _forward(self, x: Any) -> Any:
        """float32 NCHW on the device -> the model's output as float32 NCHW."""
        x = x.contiguous(memory_format=self._memory_format)  # NHWC strides with channels_last
        if self._dtype is not None:
            x = x.to(self._dtype)
        with self._autocast():
            return self.model(x).float()

    def _uint8_forward(self, rgb: Any) -> tuple[Any, Any]:
        """(N, H, W, 3) uint8 on the device -> ((N, sH, sW, 3) uint8, all outputs finite): frames.to_model and
        frames.to_uint8 as float32 torch ops, the model between them."""
        torch = self._torch
        lo, hi = (float(v) for v in self.meta.input_range)
        x = rgb.permute(0, 3, 1, 2).float()  # (N, 3, H, W) with NHWC strides
        x = x * float(np.float32((hi - lo) / 255.0))  # the float32 constants of frames.normalise_into
        if lo:
            x = x + float(np.float32(lo))
        y = self._forward(x)
        finite = torch.isfinite(y).all()
        lo, hi = (float(v) for v in self.meta.output_range)
        y = (y - float(np.float32(lo))) * float(np.float32(255.0 / (hi - lo)))  # frames.to_uint8's
        out = torch.round(torch.clamp(y, 0.0, 255.0)).to(torch.uint8)  # round half to even, as np.rint
        return out.permute(0, 2, 3, 1).contiguous(), finite

    def _call(self, kind: str, host: np.ndarray, fn: Callable[[Any], tuple[Any, ...]]) -> tuple[np.ndarray, ...]:
        """`fn`'s outputs for `host` on the device, as host arrays: a replayed CUDA graph, or eagerly."""
        if self.cuda_graphs:
            return self._replay(kind, host, fn)
        torch = self._torch
        x = torch.from_numpy(host)
        if self.device == "cuda":
            self._cuda_flags()
            # a plain copy: pinning a fresh buffer every call costs more than the pageable copy it saves
            x = x.to(self.device)
        with torch.inference_mode():
            with self._events():
                outs = fn(x)
            host = tuple(np.ascontiguousarray(y.cpu().numpy()) for y in outs)  # .cpu() waits for the GPU
        self._read_events()
        return host

    def _run(self, batch: np.ndarray) -> np.ndarray:
        (out,) = self._call("float", batch, lambda x: (self._forward(x),))
        return out

    def run_uint8(self, rgb: np.ndarray) -> tuple[np.ndarray, bool]:
        """(N, H, W, 3) uint8 RGB frames, already padded to the model's multiple -> ((N, scale*H, scale*W, 3)
        uint8, whether every output value was finite), pre/post-processing on the backend's device."""
        out, finite = self._call("uint8", check_frames(rgb, self.meta, self.name), self._uint8_forward)
        return out, bool(finite)

    def run_uint8_many(self, batches: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, bool]]:
        """run_uint8 over `batches`; with copy_overlap, batch k+1's upload and k-1's download overlap batch k's
        model on their own CUDA streams (overlap.py; device_ms is not measured there)."""
        if not self.copy_overlap:
            yield from super().run_uint8_many(batches)
            return
        from cyclegan_deploy.backends.overlap import CudaStreams, overlapped

        torch, scale, c_out = self._torch, self.meta.scale, self.meta.output_nc
        self._cuda_flags()

        def checked() -> Iterator[np.ndarray]:
            for rgb in batches:
                rgb = check_frames(rgb, self.meta, self.name)
                if self.cuda_graphs:  # captured here, between batches, never inside a stream's queued work
                    self._graphs.get("uint8", rgb, self._uint8_forward)
                yield rgb

        yield from overlapped(CudaStreams(torch), checked(), self._overlap_forward,
                              lambda s: (s[0], scale * s[1], scale * s[2], c_out), torch.uint8, torch.bool)

    def _overlap_forward(self, x: Any) -> tuple[Any, Any]:
        """_uint8_forward, or with cuda_graphs the graph captured for x's shape (replayed on x's data)."""
        with self._torch.inference_mode():  # inside the queued work: never held across the generator's yields
            if not self.cuda_graphs:
                return self._uint8_forward(x)
            captured = self._graphs[("uint8", tuple(x.shape))]
            captured.inputs.copy_(x)
            captured.graph.replay()
            return captured.outputs  # type: ignore[return-value]

    # -- CUDA events: device time of the model (bench's device_ms) ------------------------------------------
    @contextlib.contextmanager
    def _events(self) -> Any:
        """CUDA events on the current stream around the model's work (its copies are outside); read by
        _read_events once the call has synchronised (its outputs are on the host)."""
        if self.device != "cuda":
            yield
            return
        if self._event_pair is None:
            self._event_pair = tuple(self._torch.cuda.Event(enable_timing=True) for _ in range(2))
        start, end = self._event_pair
        start.record()
        yield
        end.record()

    def _read_events(self) -> None:
        if self._event_pair is not None:
            start, end = self._event_pair
            self.device_ms = float(start.elapsed_time(end))

    # -- CUDA graphs -----------------------------------------------------------------------------------
    def _replay(self, kind: str, host: np.ndarray, fn: Callable[[Any], tuple[Any, ...]]) -> tuple[np.ndarray, ...]:
        """Copy `host` into this shape's static input (via its pinned buffer), replay its graph, and copy the
        outputs back (into pinned buffers, then the caller's own arrays)."""
        torch = self._torch
        self._cuda_flags()
        captured = self._graphs.get(kind, host, fn)
        captured.host_in.copy_(torch.from_numpy(host))
        captured.inputs.copy_(captured.host_in, non_blocking=True)
        with self._events():
            captured.graph.replay()
        for dst, src in zip(captured.host_out, captured.outputs, strict=True):
            dst.copy_(src, non_blocking=True)
        torch.cuda.current_stream().synchronize()
        self._read_events()
        return tuple(np.array(h.numpy()) for h in captured.host_out)  # copies: the buffers are reused

    def close(self) -> None:
        self.model = None
        self._graphs.clear()
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

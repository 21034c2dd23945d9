"""ONNX Runtime backend: CPU, CUDA and TensorRT execution providers, verified after the session exists.

ORT quietly drops a provider it cannot load (missing CUDA libraries, CPU-only build) and runs on CPU, and by
default places nodes a GPU provider cannot take on the CPU. A GPU session therefore lists no CPU provider, sets
`session.disable_cpu_ep_fallback` (session creation fails instead of running a node on the CPU) and turns off the
Python API's retry on CPU; we still compare session.get_providers() with what was asked and refuse a mismatch.

The precision is the graph's own (its card): an FP16 or INT8 graph is a different .onnx file, not an option. The
old `trt_fp16` option (TensorRT building a weakly typed FP16 network from an FP32 graph, reported as fp32, and a
mode TensorRT 11 no longer has) is refused with that advice. TF32: off on the CUDA EP (`use_tf32`), so an fp32
graph runs FP32; ORT's TensorRT EP has no switch for it, so TensorRT's default (TF32 allowed) applies unless
NVIDIA_TF32_OVERRIDE=0 is set. `tf32` records which.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cyclegan_deploy.artifacts import read_card
from cyclegan_deploy.backends.base import UNAVAILABLE, Backend, BackendOptions, try_import
from cyclegan_deploy.errors import BackendUnavailableError, ConfigError
from cyclegan_deploy.frames import min_size, padded_size, parse_size
from cyclegan_deploy.machine import physical_cores
from cyclegan_deploy.metadata import ModelMeta, canonical_precision

PROVIDER = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
SHORT = {"cpu": "cpu", "cuda": "cuda", "tensorrt": "trt"}
NO_CPU_FALLBACK = "session.disable_cpu_ep_fallback"  # ORT session config key: fail rather than run a node on CPU
VIDEO_BATCH = 4  # cyclegan_deploy.video.options.VideoOptions.batch (a test keeps the two equal)


@dataclass
class OrtOptions(BackendOptions):
    threads: int | None = None  # intra-op threads (default: physical cores)
    io_binding: bool | None = None  # GPU sessions: output left on the device by ORT, copied once (default on)
    spin: bool = True  # spinning workers steal cycles from decode/encode threads in the video pipeline
    device_id: int = 0
    # TensorRT EP. Without an explicit profile it builds an engine for the first shape and rebuilds for every
    # new one; this one covers 720p and 1080p in both orientations at the video batch. Its max shape sets the
    # activation memory TensorRT reserves (fp32 ResNet ngf 64 at 4x1920x1920: ~4 GB per widest tensor): lower
    # trt_max_size / trt_max_batch on small GPUs.
    trt_max_batch: int = VIDEO_BATCH
    trt_opt_size: str | None = None  # HxW the builder tunes for (default 1080x1920: the benchmarked case)
    trt_max_size: str | None = None  # HxW upper bound (default 1920x1920: portrait and landscape 1080p)
    trt_opt_level: int = 3  # trt_builder_optimization_level: TensorRT's default; 5 searches longest
    trt_workspace_gb: float = 4.0  # trt_max_workspace_size: large-resolution convs want more than ORT's 1 GiB
    trt_cache: bool = True  # engine + timing cache beside the model (<model>.ort_trt_cache/): reruns start fast


def _import_ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise BackendUnavailableError(f"onnxruntime is not installed ({e}); pip install onnxruntime "
                                      "(or onnxruntime-gpu for CUDA/TensorRT, never both)") from e
    return ort


def trt_profile(meta: ModelMeta, opts: OrtOptions) -> dict[str, str]:
    """trt_profile_{min,opt,max}_shapes for the card's input: batch 1 at the smallest size the model takes, up to
    trt_max_batch at trt_max_size; sizes padded to the model's multiple as the runtime pads frames."""
    if opts.trt_max_batch < 1:
        raise ConfigError(f"trt_max_batch {opts.trt_max_batch}: must be at least 1")
    m, c, low = max(1, meta.multiple), meta.input_nc, min_size(meta)
    big = padded_size(*parse_size(opts.trt_max_size or "1920x1920", "trt_max_size"), m)
    if opts.trt_max_size is None:  # as export's default profile: at least the training size
        big = padded_size(max(big[0], meta.train_size), max(big[1], meta.train_size), m)
    opt = padded_size(*parse_size(opts.trt_opt_size or "1080x1920", "trt_opt_size"), m)
    if opts.trt_opt_size is None:  # the default opt shrinks to a smaller max; a given one must fit
        opt = (min(opt[0], big[0]), min(opt[1], big[1]))
    small = padded_size(low, low, m)
    if not all(a <= b <= d for a, b, d in zip(small, opt, big, strict=True)):
        raise ConfigError(f"TensorRT profile needs {small[0]}x{small[1]} <= trt_opt_size {opt[0]}x{opt[1]} <= "
                          f"trt_max_size {big[0]}x{big[1]} in each dimension (padded to multiples of {m})")
    shapes = {"min": (1, c, *small), "opt": (opts.trt_max_batch, c, *opt), "max": (opts.trt_max_batch, c, *big)}
    name = meta.input_name or "input"
    return {f"trt_profile_{k}_shapes": f"{name}:{'x'.join(map(str, v))}" for k, v in shapes.items()}


def _providers(device: str, path: Path, meta: ModelMeta, opts: OrtOptions) -> list[Any]:
    if device == "cpu":
        return ["CPUExecutionProvider"]
    # no CPUExecutionProvider: with session.disable_cpu_ep_fallback ORT refuses an explicitly listed CPU EP
    cuda = ("CUDAExecutionProvider", {"device_id": opts.device_id, "use_tf32": 0})
    if device == "cuda":
        return [cuda]
    if not 0 <= opts.trt_opt_level <= 5:
        raise ConfigError(f"trt_opt_level {opts.trt_opt_level}: TensorRT builder optimization levels are 0..5")
    if opts.trt_workspace_gb <= 0:
        raise ConfigError(f"trt_workspace_gb {opts.trt_workspace_gb}: must be > 0")
    trt: dict[str, Any] = {"device_id": opts.device_id, "trt_builder_optimization_level": opts.trt_opt_level,
                           "trt_max_workspace_size": int(opts.trt_workspace_gb * 2**30), **trt_profile(meta, opts)}
    if opts.trt_cache:
        cache = str(path.with_name(path.stem + ".ort_trt_cache"))
        trt.update(trt_engine_cache_enable=True, trt_engine_cache_path=cache,
                   trt_timing_cache_enable=True, trt_timing_cache_path=cache)
    return [("TensorrtExecutionProvider", trt), cuda]  # CUDA EP takes what TensorRT cannot


class OrtBackend(Backend):
    """An onnxruntime InferenceSession on one provider; `name` says which one really runs."""

    def __init__(self, path: str | Path, device: str = "auto", precision: str | None = None,
                 options: dict[str, Any] | None = None) -> None:
        if (options or {}).get("trt_fp16"):
            raise ConfigError("onnxruntime option trt_fp16 was removed: it had TensorRT build FP16 kernels from an "
                              "FP32 graph (a weakly typed network TensorRT 11 no longer builds) while reporting fp32. "
                              "Export the FP16 graph with `cgdeploy export --fp16` and run g_*.fp16.onnx with "
                              "--backend onnxruntime-trt (or build a .plan with --engine)")
        opts = OrtOptions.from_options("onnxruntime", options or {})
        self.path = Path(path)
        self.meta = read_card(self.path)
        self.precision = self.meta.precision
        if precision is not None and canonical_precision(precision, auto=True) not in ("auto", self.precision):
            raise ConfigError(f"onnxruntime runs the graph's own precision ({self.precision}), not --precision "
                              f"{precision}; for FP16 pass the g_*.fp16.onnx from `cgdeploy export --fp16`, for bf16 "
                              "use --backend openvino")
        ort = _import_ort()
        available = ort.get_available_providers()
        if device == "auto":
            device = "cuda" if "CUDAExecutionProvider" in available else "cpu"
            try:
                self._open(ort, device, opts)
            except BackendUnavailableError:
                if device == "cpu":
                    raise
                device = "cpu"  # "auto" never promised CUDA; the name below says CPU
                self._open(ort, device, opts)
        else:
            if device not in PROVIDER:
                raise ConfigError(f"onnxruntime device {device!r} unknown; use cpu, cuda or tensorrt")
            if PROVIDER[device] not in available:
                raise BackendUnavailableError(
                    f"{PROVIDER[device]} is not in this onnxruntime build (available: {', '.join(available)}); "
                    "install onnxruntime-gpu instead of onnxruntime (never both) with matching CUDA/cuDNN")
            self._open(ort, device, opts)
        self.device = device
        self.name = f"onnxruntime-{SHORT[device]}"
        # TF32 rounds fp32 conv inputs to 10 mantissa bits: None on CPU, off on the CUDA EP (use_tf32=0),
        # TensorRT's default (on) under its EP unless NVIDIA_TF32_OVERRIDE=0 turns it off in NVIDIA's libraries
        self.tf32: bool | None = (None if device == "cpu" else
                                  device == "tensorrt" and os.environ.get("NVIDIA_TF32_OVERRIDE") != "0")
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        self.input_name, self.output_name = inp.name, out.name
        # FP16 graphs exported with keep_io_types take float32; one without it takes float16
        self.input_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        self.device_id = opts.device_id
        self.io_binding = device != "cpu" and opts.io_binding is not False

    def _open(self, ort: Any, device: str, opts: OrtOptions) -> None:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # one conv at a time uses every core; inter-op parallelism only adds contention for this graph
        self.threads = opts.threads or physical_cores()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        if not opts.spin:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        gpu = device != "cpu"
        if gpu:
            so.add_session_config_entry(NO_CPU_FALLBACK, "1")
        so.log_severity_level = 3
        providers = _providers(device, self.path, self.meta, opts)
        try:
            # enable_fallback=0: the Python API would otherwise retry a failed GPU session (or run) on the CPU
            self.session = ort.InferenceSession(str(self.path), sess_options=so, providers=providers,
                                                **({"enable_fallback": 0} if gpu else {}))
        except Exception as e:  # ORT raises its own Fail/InvalidGraph/NoSuchFile types
            full = str(e).strip()
            text = full.splitlines()[0][:200] if full else type(e).__name__
            if gpu and "CPU EP" in full:
                raise BackendUnavailableError(
                    f"{self.path}: {PROVIDER[device]} cannot run every node of this graph and running the rest on "
                    f"the CPU is refused ({text}); re-export it with `cgdeploy export`, or use --device cpu") from e
            if gpu and ("CUDA" in text or "TensorRT" in text or "cuda" in text):
                raise BackendUnavailableError(f"{self.path}: {PROVIDER[device]} failed to start ({text})") from e
            raise ConfigError(f"{self.path}: onnxruntime cannot load this model ({text}); "
                              "re-export it with `cgdeploy export`") from e
        if gpu and hasattr(self.session, "disable_fallback"):
            self.session.disable_fallback()  # also for onnxruntime builds that ignore the keyword
        got = self.session.get_providers()
        if PROVIDER[device] not in got:
            raise BackendUnavailableError(
                f"{self.path}: asked for {PROVIDER[device]} but onnxruntime started only {', '.join(got)} "
                "(usually missing CUDA/cuDNN/TensorRT libraries for this onnxruntime-gpu build); "
                "fix the install or use --device cpu")

    def _run(self, batch: np.ndarray) -> np.ndarray:
        x = batch.astype(self.input_dtype, copy=False)
        if not self.io_binding:
            y = self.session.run([self.output_name], {self.input_name: x})[0]
            return np.asarray(y, dtype=np.float32)
        # output allocated on the GPU by ORT and copied once; avoids ORT's extra staging copy for outputs
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.input_name, x)
        binding.bind_output(self.output_name, "cuda", self.device_id)
        self.session.run_with_iobinding(binding)
        return np.asarray(binding.copy_outputs_to_cpu()[0], dtype=np.float32)

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]  # releases the provider's device memory


def availability(variant: str = "") -> str:
    """Version, or "unavailable: ..." when onnxruntime or the variant's provider (cpu/cuda/trt) is missing."""
    ort, err = try_import("onnxruntime")
    if ort is None:
        return err or UNAVAILABLE
    provider = PROVIDER[{"": "cpu", "trt": "tensorrt"}.get(variant, variant)]
    listed = ort.get_available_providers()
    return str(ort.__version__) if provider in listed else (
        f"{UNAVAILABLE}{provider} not in this onnxruntime build ({', '.join(listed)}); "
        "install onnxruntime-gpu instead of onnxruntime (never both)")

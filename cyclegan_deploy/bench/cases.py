"""What `cgdeploy bench` runs and what it records: backend specs, the run's configuration, one case's result.

A spec names a backend variant (load_backend's backend argument plus options) and the artifact kind it reads:
checkpoint | onnx | onnx-fp16 | onnx-int8 | engine. The bench never makes an artifact itself: the command layer
(commands/bench_cmd.py) and the benchmark scripts export what is missing and pass the paths in, or pass the
reason it could not be made (BenchConfig.artifact_errors), which every spec needing it then reports. The INT8
graph is never made here (quantizing needs calibration images): it is given, or found beside the FP32 graph.
Specs ending in -tput load OpenVINO with PERFORMANCE_HINT=THROUGHPUT; their cases also measure throughput with
the backend's N requests in flight (run.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from cyclegan_deploy.artifacts import graph_path
from cyclegan_deploy.errors import BackendUnavailableError, CgDeployError, ConfigError
from cyclegan_deploy.metadata import canonical_precision

SCHEMA = "cgdeploy-bench/1"
MIN_REPEATS = 3  # a percentile from fewer samples says nothing; a 720p CPU case still ends near max_seconds
ARTIFACT_KINDS = ("checkpoint", "onnx", "onnx-fp16", "onnx-int8", "engine")


@dataclass(frozen=True)
class Spec:
    """A benchmark case's backend: what load_backend gets and which artifact it reads."""

    name: str
    backend: str  # load_backend's backend argument (with its -cpu/-cuda/-trt variant)
    artifact: str  # one of ARTIFACT_KINDS
    device: str  # cpu | cuda: a cuda spec whose backend reports a CPU name is a failure, never a result
    precision: str
    options: dict[str, Any] = field(default_factory=dict)


_CL = {"channels_last": True}  # channels_last lets oneDNN/cuDNN pick their fast NHWC kernels
_TPUT = {"performance_hint": "THROUGHPUT"}  # OpenVINO: streams + its optimal number of infer requests
SPECS: dict[str, Spec] = {s.name: s for s in (
    Spec("torch", "torch-cpu", "checkpoint", "cpu", "fp32"),
    Spec("torch-bf16", "torch-cpu", "checkpoint", "cpu", "bf16", {"precision": "bf16", **_CL}),
    Spec("torch-compile", "torch-cpu", "checkpoint", "cpu", "fp32", {"compile": True}),
    Spec("torch-compile-bf16", "torch-cpu", "checkpoint", "cpu", "bf16",
         {"compile": True, "precision": "bf16", **_CL}),
    Spec("torch-cuda", "torch-cuda", "checkpoint", "cuda", "fp32"),
    Spec("torch-cuda-fp16", "torch-cuda", "checkpoint", "cuda", "fp16", {"precision": "fp16", **_CL}),
    Spec("torch-cuda-bf16", "torch-cuda", "checkpoint", "cuda", "bf16", {"precision": "bf16", **_CL}),
    Spec("torch-cuda-compile-fp16", "torch-cuda", "checkpoint", "cuda", "fp16",
         {"compile": True, "precision": "fp16", **_CL}),
    Spec("torch-cuda-compile-max-fp16", "torch-cuda", "checkpoint", "cuda", "fp16",
         {"compile": True, "compile_mode": "max-autotune", "precision": "fp16", **_CL}),
    # one captured CUDA graph per shape, replayed (static device buffers, pinned host buffers)
    Spec("torch-cuda-fp16-graphs", "torch-cuda", "checkpoint", "cuda", "fp16",
         {"precision": "fp16", "cuda_graphs": True, **_CL}),
    Spec("onnxruntime", "onnxruntime-cpu", "onnx", "cpu", "fp32"),
    Spec("onnxruntime-cuda", "onnxruntime-cuda", "onnx", "cuda", "fp32"),
    Spec("onnxruntime-cuda-fp16", "onnxruntime-cuda", "onnx-fp16", "cuda", "fp16"),
    Spec("onnxruntime-trt", "onnxruntime-trt", "onnx", "cuda", "fp32"),
    Spec("onnxruntime-trt-fp16", "onnxruntime-trt", "onnx-fp16", "cuda", "fp16"),
    Spec("openvino-f32", "openvino-cpu", "onnx", "cpu", "fp32", {"precision": "f32"}),
    Spec("openvino-bf16", "openvino-cpu", "onnx", "cpu", "bf16", {"precision": "bf16"}),
    # the QDQ graph's own precision: the OpenVINO backend names itself openvino-int8 only when its runtime model
    # runs the convolutions in u8/i8 (else BackendUnavailableError); ORT's kernel choice is not reported
    Spec("openvino-int8", "openvino-cpu", "onnx-int8", "cpu", "int8"),
    # int8 convolutions, the float ops (output conv, instance norm) in bf16 where the CPU has it
    Spec("openvino-int8-bf16", "openvino-cpu", "onnx-int8", "cpu", "int8", {"precision": "bf16"}),
    Spec("onnxruntime-int8", "onnxruntime-cpu", "onnx-int8", "cpu", "int8"),
    Spec("openvino-f32-tput", "openvino-cpu", "onnx", "cpu", "fp32", {"precision": "f32", **_TPUT}),
    Spec("openvino-bf16-tput", "openvino-cpu", "onnx", "cpu", "bf16", {"precision": "bf16", **_TPUT}),
    Spec("openvino-int8-tput", "openvino-cpu", "onnx-int8", "cpu", "int8", dict(_TPUT)),
    Spec("openvino-int8-bf16-tput", "openvino-cpu", "onnx-int8", "cpu", "int8", {"precision": "bf16", **_TPUT}),
    Spec("tensorrt", "tensorrt", "engine", "cuda", "engine"),
)}
CPU_SPECS = ("torch", "torch-bf16", "onnxruntime", "openvino-f32", "openvino-bf16")
INT8_SPECS = ("onnxruntime-int8", "openvino-int8")  # in the defaults only when an int8 graph is there
TPUT_SUFFIX = "-tput"
GPU_SPECS = ("torch-cuda", "torch-cuda-fp16", "onnxruntime-cuda", "onnxruntime-cuda-fp16", "tensorrt")
# what a spec reports when its artifact was neither given nor made
NEEDS = {"checkpoint": "--checkpoint X.pth", "onnx": "--model X.onnx (or --checkpoint to export one)",
         "onnx-fp16": "an FP16 graph (--fp16-model X.fp16.onnx, or --checkpoint to export one)",
         "onnx-int8": "an int8 graph: cgdeploy export CKPT -o DIR --int8 (then --model DIR/g_AtoB.onnx finds "
                      "g_AtoB.int8.onnx beside it, or give --int8-model X.int8.onnx)",
         "engine": "--engine X.plan (build it with `cgdeploy export --engine` on this GPU)"}


def _value(text: str) -> bool | int | float | str:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_spec(text: str) -> Spec:
    """'openvino-bf16' or with extra backend options 'openvino-bf16:num_streams=2:performance_hint=THROUGHPUT'.

    Options after ':' go to the backend as keyword arguments (see the backend's options dataclass)."""
    name, *extra = text.strip().split(":")
    if name not in SPECS:
        raise ConfigError(f"unknown bench backend {name!r}; use one of {', '.join(SPECS)} "
                          "(options as name:key=value, e.g. openvino-bf16:num_streams=2)")
    options = dict(SPECS[name].options)
    for item in extra:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ConfigError(f"bad option {item!r} in {text!r}; write key=value, e.g. torch:compile=true")
        options[key] = _value(value)
    # an int8 graph is int8 whatever precision its float ops are asked to run in (openvino-int8-bf16)
    asked = "int8" if SPECS[name].artifact == "onnx-int8" else str(options.get("precision", SPECS[name].precision))
    # the label a case carries: the canonical name ("engine": whatever the engine was built with; "auto": the
    # runtime's choice, which the backend's own precision then reports)
    precision = asked if asked in ("engine", "auto") else canonical_precision(asked, what=f"precision in {text!r}")
    return replace(SPECS[name], name=text.strip(), options=options, precision=precision)


def int8_beside(onnx: Path | None) -> Path | None:
    """X.int8.onnx beside an FP32 graph X.onnx (what `cgdeploy export --int8` writes), when it exists."""
    if onnx is None or onnx.suffix.lower() != ".onnx":
        return None
    found = graph_path(onnx, "int8")
    return found if found != onnx and found.is_file() else None


def with_throughput(specs: list[str]) -> list[str]:
    """specs plus, after each, its THROUGHPUT-mode variant (openvino-f32 -> openvino-f32-tput) where one exists."""
    out: list[str] = []
    for spec in specs:
        name, colon, options = spec.partition(":")
        out.append(spec)
        if name + TPUT_SUFFIX in SPECS:
            out.append(name + TPUT_SUFFIX + colon + options)
    return list(dict.fromkeys(out))


def default_specs(checkpoint: Path | None, onnx: Path | None, engine: Path | None, gpu: bool,
                  onnx_int8: Path | None = None) -> list[str]:
    """What `--backends auto` runs: every CPU spec the given artifacts feed (the int8 ones only with an int8
    graph) + GPU specs when nvidia-smi sees a GPU. Specs named explicitly always run and are reported,
    available or not."""
    specs = [s for s in CPU_SPECS if checkpoint or SPECS[s].artifact != "checkpoint"]
    if onnx_int8:
        specs += INT8_SPECS
    if gpu:
        specs += [s for s in GPU_SPECS if SPECS[s].artifact != "engine"
                  and (checkpoint or SPECS[s].artifact != "checkpoint")]
    if engine:
        specs.append("tensorrt")
    if not checkpoint and not onnx:
        specs = [s for s in specs if SPECS[s].artifact == "engine" or (onnx_int8 and SPECS[s].artifact == "onnx-int8")]
    return specs


@dataclass
class BenchConfig:
    out_dir: Path
    specs: list[str] = field(default_factory=lambda: list(CPU_SPECS))
    sizes: list[tuple[int, int]] = field(default_factory=lambda: [(256, 256), (720, 1280)])
    batches: list[int] = field(default_factory=lambda: [1])
    checkpoint: Path | None = None
    onnx: Path | None = None
    onnx_fp16: Path | None = None
    onnx_int8: Path | None = None  # the QDQ graph of the *-int8 specs (never made here: it needs calibration)
    engine: Path | None = None
    warmup: int = 3
    repeats: int = 20
    max_seconds: float = 30.0  # per case: a 720p torch-eager CPU case takes seconds per call
    threads: int | None = None
    reference: str | None = None  # default: torch (fp32) with a checkpoint, else onnxruntime (cpu, fp32)
    baseline: str | None = None  # speedup denominator; default: the reference spec
    seed: int = 0
    cases: list[tuple[str, int, int, int]] | None = None  # explicit (spec, h, w, batch); else the product
    video: Path | None = None
    video_backend: str | None = None  # default: the fastest ok spec at batch 1
    inflight: int | None = None  # throughput cases: batches in flight (default: the backend's max_inflight)
    # measured peaks (bench.peaks.machine_peaks()): the CPU "% of peak" denominators; None: no % of peak
    peaks: dict[str, Any] | None = None
    # artifact kind -> why the caller could not make it; the specs needing it report this error
    # (BackendUnavailableError -> "unavailable: ...", any other -> "failed: ...") instead of NEEDS
    artifact_errors: dict[str, Exception] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # the caller's notes (e.g. what it exported), into results

    def plan(self) -> list[tuple[str, int, int, int]]:
        if self.cases is not None:
            return list(self.cases)
        return [(s, h, w, b) for s in self.specs for (h, w) in self.sizes for b in self.batches]

    @property
    def reference_spec(self) -> str:
        return self.reference or ("torch" if self.checkpoint else "onnxruntime")

    def artifact_paths(self) -> dict[str, Path | None]:
        return {"checkpoint": self.checkpoint, "onnx": self.onnx, "onnx-fp16": self.onnx_fp16,
                "onnx-int8": self.onnx_int8, "engine": self.engine}

    def artifact(self, kind: str) -> Path:
        """The file a spec of this artifact kind reads, or the error that says why there is none."""
        path = self.artifact_paths()[kind]
        if path is not None:
            return path
        raise self.artifact_errors.get(kind) or BackendUnavailableError(f"needs {NEEDS[kind]}")

    def needed_artifacts(self) -> list[str]:
        """Artifact kinds the run would read: every planned spec's, the reference's and the video spec's.
        Parsing the names here also makes an unknown spec fail before anything is exported."""
        names = [c[0] for c in self.plan()] + [self.reference_spec]
        if self.video is not None and self.video_backend:
            names.append(self.video_backend)
        needed = {parse_spec(name).artifact for name in dict.fromkeys(names)}
        return [kind for kind in ARTIFACT_KINDS if kind in needed]


def artifact_error(kind: str, e: Exception) -> Exception:
    """Why making `kind` failed, as the error its specs report: a missing exporter stack is "unavailable",
    a typed error keeps its own status, anything else is an exporter bug ("failed", with its type)."""
    if isinstance(e, CgDeployError):
        return e
    if isinstance(e, ImportError):  # the exporter's stack (onnxscript, onnxconverter-common) is not installed
        return BackendUnavailableError(f"making the {kind} artifact needs {e}")
    return CgDeployError(f"making the {kind} artifact failed: {type(e).__name__}: {e}")


def status_of(e: BaseException) -> str:
    """A case's status for an error: "unavailable: ..." (cannot run here) or "failed: ..." (tried and broke)."""
    text = " ".join(str(e).split())[:300] or type(e).__name__
    if isinstance(e, (BackendUnavailableError, ImportError)):
        return f"unavailable: {text}"
    return f"failed: {text}" if isinstance(e, CgDeployError) else f"failed: {type(e).__name__}: {text}"


@dataclass(kw_only=True)
class CaseResult:
    """One (spec, size, batch) case. as_dict() is one row of results.json "cases": the field order and
    names are that file's schema (and results.csv's source), so add fields only at the end."""

    backend: str  # the spec as asked, options included
    backend_name: str | None = None  # what the backend reports (onnxruntime-cpu, openvino-bf16...)
    device: str
    precision: str
    options: dict[str, Any]
    height: int
    width: int
    size: str = field(init=False)  # "HxW" as asked: the key reports and speedups group by
    run_height: int | None = None  # the size actually run: rounded up to the model's multiple
    run_width: int | None = None
    batch: int
    status: str = "not run"  # ok | unavailable: ... | failed: ... | not run
    threads: int | None = None
    load_s: float | None = None
    first_call_ms: float | None = None  # includes lazy compilation / engine builds
    samples_ms: list[float] = field(default_factory=list)
    stats_ms: dict[str, float] | None = None  # metrics.latency_stats
    budget_truncated: bool | None = None  # max_seconds ended the samples before `repeats`
    ms_per_frame: float | None = None
    fps: float | None = None
    speedup: float | None = None
    macs_per_frame: int | None = None
    gflops: float | None = None
    peak_gflops: float | None = None
    pct_peak: float | None = None
    max_abs: float | None = None  # parity vs the reference spec on frame 0
    psnr_db: float | None = None  # None when identical (max_abs 0)
    max_u8: int | None = None
    peak_source: str | None = None  # which measured peak pct_peak divides by (bench.peaks.peak_for)
    # frames/s with throughput_inflight batches in flight through backend.run_many ("async"); "sync": the backend
    # has no async queue (max_inflight 1), so nothing more is measured: its fps column is its throughput
    throughput_fps: float | None = None
    throughput_inflight: int | None = None
    throughput_mode: str | None = None
    throughput_speedup: float | None = None  # throughput_fps / the baseline's fps (batch-1 latency) at this size
    # GPU backends that measure it (torch CUDA, TensorRT): the model's time on the device per call, between
    # CUDA events on its stream (no host copies, no Python); metrics.latency_stats of those samples
    device_ms: dict[str, float] | None = None

    def __post_init__(self) -> None:
        self.size = f"{self.height}x{self.width}"

    @classmethod
    def planned(cls, spec: Spec, height: int, width: int, batch: int) -> CaseResult:
        return cls(backend=spec.name, device=spec.device, precision=spec.precision, options=dict(spec.options),
                   height=height, width=width, batch=batch)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

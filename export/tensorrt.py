"""TensorRT engine build (10.x and 11.x) from the exported ONNX graph, plus its sidecar and compat checks.

The precision is the ONNX graph's own: the network is strongly typed (10.x: STRONGLY_TYPED creation flag;
11.x: always, the flag may be gone), so an FP16 engine comes from g_*.fp16.onnx whose InstanceNormalization
is already FP32 behind explicit casts. No precision builder flags are used (11.x removed them).

Everything except build_engine/gpu_info/tensorrt_version is pure Python and tested on CPU machines;
`import tensorrt` happens only inside those functions.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from cyclegan_deploy.errors import BackendUnavailableError, ConfigError, EngineMismatchError, ExportError
from cyclegan_deploy.metadata import ModelMeta, sha256_file

SIDECAR_FORMAT = "cgdeploy-tensorrt-engine"
Shape4 = tuple[int, int, int, int]
ShapeArg = str | tuple[int, ...] | None


@dataclass
class Profile:
    """One optimization profile for the single NCHW input; every H/W is a multiple of the model's multiple."""

    input_name: str
    min: Shape4
    opt: Shape4
    max: Shape4

    def as_dict(self) -> dict[str, Any]:
        return {"input_name": self.input_name, "min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        def four(key: str) -> Shape4:
            n, c, h, w = (int(v) for v in data[key])
            return n, c, h, w

        return cls(str(data["input_name"]), four("min"), four("opt"), four("max"))

    def trtexec(self) -> str:
        def fmt(s: Shape4) -> str:
            return f"{self.input_name}:{'x'.join(map(str, s))}"

        return f"--minShapes={fmt(self.min)} --optShapes={fmt(self.opt)} --maxShapes={fmt(self.max)}"


def parse_shape(text: ShapeArg, option: str) -> tuple[int | None, int, int] | None:
    """'HxW' or 'NxHxW' (or a tuple of the same) -> (N or None, H, W)."""
    if text is None:
        return None
    try:
        parts = [int(p) for p in (re.split(r"[x,]", text.strip().lower()) if isinstance(text, str) else text)]
    except ValueError:
        parts = []
    if len(parts) not in (2, 3) or any(p <= 0 for p in parts):
        raise ConfigError(f"{option} {text!r}: expected HxW or NxHxW with positive integers, "
                          "e.g. 256x256 or 4x720x1280")
    return (None, parts[0], parts[1]) if len(parts) == 2 else (parts[0], parts[1], parts[2])


def derive_profile(meta: ModelMeta, min_shape: ShapeArg = None, opt_shape: ShapeArg = None,
                   max_shape: ShapeArg = None) -> Profile:
    """Profile from --min/--opt/--max-shape; defaults from the training size: opt = train size (batch 1),
    min = a quarter of it (batch 1), max = 4x it (batch 4). H/W must be multiples of meta.multiple because the
    runtime reflect-pads frames to that multiple; a wrong value is refused with the rounded-up suggestion."""
    m = meta.multiple

    def up(x: int) -> int:
        return max(m, -(-x // m) * m)

    train = up(meta.train_size)
    defaults = {"--min-shape": (1, up(train // 4), up(train // 4)), "--opt-shape": (1, train, train),
                "--max-shape": (4, 4 * train, 4 * train)}
    shapes: dict[str, Shape4] = {}
    for option, given in (("--min-shape", min_shape), ("--opt-shape", opt_shape), ("--max-shape", max_shape)):
        parsed = parse_shape(given, option)
        n, h, w = defaults[option] if parsed is None else (parsed[0] or defaults[option][0], parsed[1], parsed[2])
        if h % m or w % m:
            raise ConfigError(f"{option} {h}x{w}: {meta.arch} needs height and width in multiples of {m} "
                              f"(frames are padded to it); use {up(h)}x{up(w)}")
        shapes[option] = (n, meta.input_nc, h, w)
    lo, mid, hi = shapes["--min-shape"], shapes["--opt-shape"], shapes["--max-shape"]
    if not all(a <= b <= c for a, b, c in zip(lo, mid, hi, strict=True)):
        raise ConfigError(f"profile must satisfy min <= opt <= max in every dim, got min {lo}, opt {mid}, max {hi}; "
                          "adjust --min-shape/--opt-shape/--max-shape")
    return Profile(meta.input_name or "input", lo, mid, hi)


@dataclass
class BuildOptions:
    workspace_gb: float = 4.0  # tactic scratch limit; large-resolution convs want more than the 1 GiB of old
    timing_cache: Path | None = None  # reused across builds (AtoB/BtoA, rebuilds): cuts build time a lot
    opt_level: int = 3  # TensorRT's default; 5 searches longest
    allow_tf32: bool = False  # an "fp32" engine means FP32 unless asked: TF32 rounds conv inputs to 10 bits

    def __post_init__(self) -> None:
        if self.workspace_gb <= 0:
            raise ConfigError(f"--workspace-gb {self.workspace_gb}: must be > 0")
        if not 0 <= self.opt_level <= 5:
            raise ConfigError(f"--opt-level {self.opt_level}: TensorRT builder optimization levels are 0..5")


@dataclass
class EngineSidecar:
    """g_AtoB.plan.json: what the engine was built with and for; checked before an engine is loaded."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    profile: dict[str, Any]
    precision: str
    source_onnx: str
    source_onnx_sha256: str
    model_card: dict[str, Any]
    strongly_typed: bool = True
    tf32: bool = False
    workspace_bytes: int = 0
    builder_optimization_level: int = 3
    built_at: str = ""
    format: str = SIDECAR_FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def meta(self) -> ModelMeta:
        return ModelMeta.from_dict(self.model_card)


def sidecar_path(plan_path: Path) -> Path:
    return Path(plan_path).with_name(Path(plan_path).name + ".json")


def write_sidecar(path: Path, sidecar: EngineSidecar) -> Path:
    from cyclegan_deploy.export.onnx import atomic_output

    with atomic_output(Path(path)) as tmp:
        tmp.write_text(json.dumps(asdict(sidecar), indent=2, sort_keys=True) + "\n")
    return Path(path)


def read_sidecar(path: Path) -> EngineSidecar:
    """Read `<engine>.plan.json` (pass the sidecar or the .plan path)."""
    path = Path(path)
    if path.suffix == ".plan":
        path = sidecar_path(path)
    try:
        data = json.loads(path.read_text())
        if data.get("format") != SIDECAR_FORMAT:
            raise ValueError(f"format {data.get('format')!r}")
        known = set(EngineSidecar.__dataclass_fields__)
        return EngineSidecar(**{k: v for k, v in data.items() if k in known})
    except (OSError, ValueError, TypeError) as e:
        raise EngineMismatchError(f"{path}: missing or unreadable engine sidecar ({type(e).__name__}: {e}); without "
                                  "it the engine's TensorRT version and GPU are unknown — rebuild it with "
                                  "`cgdeploy export CHECKPOINT -o DIR --engine`") from e


def _version_key(version: str) -> tuple[str, ...]:
    """Engines are tied to major.minor.patch; the 4th (build) component does not change the plan format."""
    return tuple(version.split(".")[:3])


def check_engine_compat(sidecar: EngineSidecar, trt_version: str, gpu_name: str, cc: str, *,
                        engine: str = "engine") -> None:
    """Refuse an engine built for another TensorRT version, compute capability or GPU model, saying how to
    rebuild. (TensorRT itself may deserialize a same-CC engine on another GPU model, with wrong tactics.)"""
    problems = []
    if _version_key(sidecar.tensorrt_version) != _version_key(trt_version):
        problems.append(f"TensorRT {sidecar.tensorrt_version} (this machine: {trt_version})")
    if sidecar.compute_capability != cc:
        problems.append(f"compute capability {sidecar.compute_capability} (this GPU: {cc})")
    elif sidecar.gpu_name != gpu_name:
        problems.append(f"GPU {sidecar.gpu_name!r} (this GPU: {gpu_name!r})")
    if problems:
        profile = Profile.from_dict(sidecar.profile)
        raise EngineMismatchError(
            f"{engine}: built for {', '.join(problems)}; TensorRT engines only run on the TensorRT version and GPU "
            f"they were built with. Rebuild here: `cgdeploy export CHECKPOINT -o DIR --engine` or `trtexec "
            f"--onnx={sidecar.source_onnx} --stronglyTyped --saveEngine={Path(engine).name} {profile.trtexec()}`")


def trtexec_command(onnx_path: Path, plan_path: Path, profile: Profile, options: BuildOptions) -> str:
    """The equivalent trtexec command line (for machines where only the TensorRT binaries exist)."""
    cmd = (f"trtexec --onnx={onnx_path} --saveEngine={plan_path} --stronglyTyped {profile.trtexec()} "
           f"--memPoolSize=workspace:{int(options.workspace_gb * 1024)}M "
           f"--builderOptimizationLevel={options.opt_level}")
    if options.timing_cache:
        cmd += f" --timingCacheFile={options.timing_cache}"
    return cmd + ("" if options.allow_tf32 else " --noTF32")


def _import_tensorrt(why: str) -> ModuleType:
    """`import tensorrt`, refusing the empty namespace package that tensorrt-stubs alone leaves behind."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise BackendUnavailableError(f"TensorRT is not installed ({e}); {why}") from e
    if not hasattr(trt, "Builder"):
        raise BackendUnavailableError(f"TensorRT is not installed (only its type stubs are); {why}")
    return trt


def tensorrt_version() -> str:
    trt = _import_tensorrt("install it from NVIDIA's index (pip install tensorrt --extra-index-url "
                           "https://pypi.nvidia.com) on a machine with an NVIDIA GPU")
    return str(trt.__version__)


def gpu_info(device: int = 0) -> tuple[str, str]:
    """(GPU name, compute capability 'major.minor') through cuda-python's runtime API."""
    try:  # cuda-python >= 12.6 moved the bindings; older releases expose cuda.cudart
        cudart: Any = importlib.import_module("cuda.bindings.runtime")
    except ImportError:
        try:
            cudart = importlib.import_module("cuda.cudart")
        except ImportError as e:
            raise BackendUnavailableError("cuda-python is not installed; pip install cuda-python (needed to read "
                                          "the GPU name and compute capability for the engine sidecar)") from e
    err, props = cudart.cudaGetDeviceProperties(device)
    if err != cudart.cudaError_t.cudaSuccess:
        raise BackendUnavailableError(f"no usable CUDA GPU {device} ({err}); TensorRT engines need an NVIDIA GPU "
                                      "with a working driver")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return name.rstrip("\x00").strip(), f"{props.major}.{props.minor}"


def build_engine(onnx_path: Path, plan_path: Path, profile: Profile, options: BuildOptions | None = None
                 ) -> EngineSidecar:
    """Build a strongly typed engine from `onnx_path`, write `plan_path` (temp + rename), its sidecar and the
    timing cache. Raises BackendUnavailableError without TensorRT/GPU, ExportError when parsing/building fails."""
    from cyclegan_deploy.export.onnx import atomic_output

    options = options or BuildOptions()
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    _import_tensorrt(
        f"the ONNX artifacts were written ({onnx_path.parent}); build the engine on a machine with TensorRT and an "
        "NVIDIA GPU via `cgdeploy export CHECKPOINT -o DIR --engine` or "
        f"`{trtexec_command(onnx_path, plan_path, profile, options)}`")
    import onnx
    import tensorrt as trt

    card = ModelMeta.from_props({p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False)
                                 .metadata_props})
    if card is None:
        raise ExportError(f"{onnx_path}: no cgdeploy model card; export it with `cgdeploy export` first")
    gpu_name, cc = gpu_info()
    messages: list[str] = []

    class Logger(trt.ILogger):
        """Keeps errors for the exception message; prints warnings as TensorRT's own logger would."""

        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
            if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                messages.append(msg)
            if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR,
                            trt.ILogger.Severity.WARNING):
                print(f"[TensorRT] {msg}")

    logger = Logger()
    builder = trt.Builder(logger)
    strongly = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)  # gone in 11.x: always on
    network = builder.create_network(0 if strongly is None else 1 << int(strongly))
    parser = trt.OnnxParser(network, logger)
    native_norm = getattr(getattr(trt, "OnnxParserFlag", None), "NATIVE_INSTANCENORM", None)
    if native_norm is not None:  # default since 10.0; be explicit so the FP32 norm is a native layer, not a plugin
        parser.set_flag(native_norm)
    if not parser.parse_from_file(str(onnx_path)):
        errors = []
        for i in range(parser.num_errors):
            err = parser.get_error(i)
            errors.append(f"node #{err.node()} {err.node_name()!r} ({err.node_operator()}): {err.desc()}")
        raise ExportError(f"{onnx_path}: TensorRT {trt.__version__} ONNX parser failed: {'; '.join(errors[:5])}")
    if network.num_inputs != 1 or network.get_input(0).name != profile.input_name:
        raise ExportError(f"{onnx_path}: expected one input named {profile.input_name!r}; re-export the graph")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_gb * (1 << 30)))
    config.builder_optimization_level = options.opt_level
    tf32 = getattr(trt.BuilderFlag, "TF32", None)
    if tf32 is not None and not options.allow_tf32:
        config.clear_flag(tf32)
    trt_profile = builder.create_optimization_profile()
    trt_profile.set_shape(profile.input_name, trt.Dims(list(profile.min)), trt.Dims(list(profile.opt)),
                          trt.Dims(list(profile.max)))
    config.add_optimization_profile(trt_profile)
    cache_path = options.timing_cache
    if cache_path is not None:
        data = cache_path.read_bytes() if cache_path.is_file() else b""
        config.set_timing_cache(config.create_timing_cache(data), ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"{onnx_path}: TensorRT {trt.__version__} engine build failed: {'; '.join(messages[-3:])}; "
                          "try a larger --workspace-gb or a smaller --max-shape")
    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
    if engine is None or engine.num_io_tensors != 2:
        raise ExportError(f"{plan_path}: the built engine does not deserialize to one input and one output")
    with atomic_output(plan_path) as tmp:
        tmp.write_bytes(memoryview(serialized))
    if cache_path is not None:
        with atomic_output(cache_path) as tmp:
            tmp.write_bytes(memoryview(config.get_timing_cache().serialize()))
    sidecar = EngineSidecar(
        tensorrt_version=str(trt.__version__), gpu_name=gpu_name, compute_capability=cc, profile=profile.as_dict(),
        precision=card.precision, source_onnx=onnx_path.name, source_onnx_sha256=sha256_file(onnx_path),
        model_card=asdict(card), strongly_typed=True, tf32=tf32 is not None and options.allow_tf32,
        workspace_bytes=int(options.workspace_gb * (1 << 30)), builder_optimization_level=options.opt_level,
        built_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        extra={"strongly_typed_flag": strongly is not None, "native_instancenorm_flag": native_norm is not None})
    write_sidecar(sidecar_path(plan_path), sidecar)
    return sidecar

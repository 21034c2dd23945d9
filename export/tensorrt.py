"""TensorRT engine build (10.x and 11.x) from the exported ONNX graph, plus its sidecar and compat checks.

The precision is the ONNX graph's own: the network is strongly typed (10.x: STRONGLY_TYPED creation flag;
11.x: always, the flag may be gone), so an FP16 engine comes from g_*.fp16.onnx whose InstanceNormalization
is already FP32 behind explicit casts, and an INT8 engine from g_*.int8.onnx by explicit quantization (its
QuantizeLinear/DequantizeLinear pairs; TensorRT takes only signed int8 with zero point 0, which
check_engine_source verifies before any TensorRT call). No precision builder flags are used (11.x removed
them; with explicit Q/DQ, 10.x needs none either).

Everything except build_engine/gpu_info/tensorrt_version is pure Python and tested on CPU machines;
`import tensorrt` happens only inside those functions.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from cyclegan_deploy import engine_sidecar
from cyclegan_deploy.artifacts import read_card, sidecar_path, write_bytes
from cyclegan_deploy.engine_sidecar import EngineSidecar, Profile, Shape4, write_sidecar
from cyclegan_deploy.errors import BackendUnavailableError, ConfigError, ExportError
from cyclegan_deploy.frames import min_size, padded_size
from cyclegan_deploy.machine import gib
from cyclegan_deploy.metadata import ModelMeta, sha256_file
from cyclegan_deploy.video.options import DEFAULT_BATCH

if TYPE_CHECKING:
    import tensorrt as trt

ShapeArg = str | tuple[int, ...] | None
ENGINE_IO = ("float32", "uint8")  # what the engine's I/O tensors hold: the graph's own, or uint8 frames


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


# Default profile (issue #12): engines are mostly run on video, so the default max is a box that takes 720p and
# 1080p in either orientation (a profile is a per-dimension box: portrait 1080x1920 needs H up to 1920) at the
# batch `cgdeploy video`/`translate` send by default; opt is that batch of landscape 1080p, the commonest
# frame. The price is memory: TensorRT's default (STATIC) context allocates activations for the max shape.
VIDEO_MAX_SIDE = 1920
VIDEO_OPT = (1080, 1920)


def _four(dims: Iterable[int]) -> Shape4:
    n, c, h, w = dims
    return n, c, h, w


def derive_profile(meta: ModelMeta, min_shape: ShapeArg = None, opt_shape: ShapeArg = None,
                   max_shape: ShapeArg = None) -> Profile:
    """Profile from --min/--opt/--max-shape. Defaults: min = a quarter of the training size, at least what the
    model's layers take (batch 1); max = batch DEFAULT_BATCH at max(1920, training size) square (720p and 1080p
    video, both orientations); opt = batch DEFAULT_BATCH at 1080x1920. A default gives way to the shapes given
    (--max-shape 2x512x512 alone gives opt 2x512x512, --opt-shape 2160x3840 alone raises max to it): only given
    shapes can contradict each other. H/W must be multiples of meta.multiple because the runtime reflect-pads
    frames to that multiple; a wrong value is refused with the rounded-up suggestion."""
    m = meta.multiple

    def up(x: int) -> int:
        return max(m, padded_size(x, x, m)[0])

    train, side = up(meta.train_size), up(max(VIDEO_MAX_SIDE, meta.train_size))
    low = up(max(train // 4, min_size(meta)))
    defaults: dict[str, Shape4] = {
        "--min-shape": (1, meta.input_nc, low, low),
        "--opt-shape": (DEFAULT_BATCH, meta.input_nc, up(VIDEO_OPT[0]), up(VIDEO_OPT[1])),
        "--max-shape": (DEFAULT_BATCH, meta.input_nc, side, side)}
    given: dict[str, Shape4] = {}
    for option, text in (("--min-shape", min_shape), ("--opt-shape", opt_shape), ("--max-shape", max_shape)):
        parsed = parse_shape(text, option)
        if parsed is None:
            continue
        n, h, w = parsed[0] or defaults[option][0], parsed[1], parsed[2]
        if h % m or w % m:
            raise ConfigError(f"{option} {h}x{w}: {meta.arch} needs height and width in multiples of {m} "
                              f"(frames are padded to it); use {up(h)}x{up(w)}")
        given[option] = (n, meta.input_nc, h, w)
    others = [given[o] for o in ("--min-shape", "--opt-shape", "--max-shape") if o in given]
    lo = given.get("--min-shape") or _four(map(min, zip(defaults["--min-shape"], *others, strict=True)))
    hi = given.get("--max-shape") or _four(map(max, zip(defaults["--max-shape"], *others, strict=True)))
    mid = given.get("--opt-shape") or _four(min(max(d, a), b) for d, a, b in zip(defaults["--opt-shape"], lo, hi,
                                                                                     strict=True))
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
    io: str = "float32"  # "uint8": the engine takes and gives uint8 NHWC frames (export/uint8_io.py)

    def __post_init__(self) -> None:
        if self.workspace_gb <= 0:
            raise ConfigError(f"--workspace-gb {self.workspace_gb}: must be > 0")
        if not 0 <= self.opt_level <= 5:
            raise ConfigError(f"--opt-level {self.opt_level}: TensorRT builder optimization levels are 0..5")
        if self.io not in ENGINE_IO:
            raise ConfigError(f"--engine-io {self.io!r}: choose one of {', '.join(ENGINE_IO)}")


def trtexec_command(onnx_path: Path, plan_path: Path, profile: Profile, options: BuildOptions) -> str:
    """The equivalent trtexec command line (for machines where only the TensorRT binaries exist)."""
    cmd = (f"trtexec --onnx={onnx_path} --saveEngine={plan_path} --stronglyTyped {profile.trtexec()} "
           f"--memPoolSize=workspace:{int(options.workspace_gb * 1024)}M "
           f"--builderOptimizationLevel={options.opt_level}")
    if options.timing_cache:
        cmd += f" --timingCacheFile={options.timing_cache}"
    return cmd + ("" if options.allow_tf32 else " --noTF32")


def how_to_build(onnx_path: Path, plan_path: Path, profile: Profile, options: BuildOptions) -> str:
    """The commands that build this engine on a machine with TensorRT, for messages. trtexec only for float32
    I/O: the uint8 wrapper (export/uint8_io.py) is made in memory by `cgdeploy export`."""
    if options.io == "uint8":
        return ("`cgdeploy export CHECKPOINT -o DIR --engine --engine-io uint8` (trtexec cannot build it: the uint8 "
                "wrapper around the graph is made by cgdeploy)")
    trtexec = trtexec_command(onnx_path, plan_path, profile, options)
    return f"`cgdeploy export CHECKPOINT -o DIR --engine` or `{trtexec}`"


def tensorrt_unavailable() -> str | None:
    """Why TensorRT cannot build engines here ("TensorRT is not installed (...)"), or None when it imports."""
    try:
        import tensorrt as trt
    except ImportError as e:
        return f"TensorRT is not installed ({e})"
    if not hasattr(trt, "Builder"):  # tensorrt-stubs alone leaves an empty namespace package
        return "TensorRT is not installed (only its type stubs are)"
    return None


def _import_tensorrt(why: str) -> ModuleType:
    """`import tensorrt`, refusing the empty namespace package that tensorrt-stubs alone leaves behind."""
    missing = tensorrt_unavailable()
    if missing:
        raise BackendUnavailableError(f"{missing}; {why}")
    import tensorrt as trt

    return trt


# The most memory one GPU has (B200, 2025): a profile no GPU could hold is refused on any machine; where a GPU
# is visible, its own memory is the bound.
MAX_GPU_BYTES = 192 * 2**30


def profile_memory(meta: ModelMeta, profile: Profile, precision: str = "fp32") -> int:
    """Bytes an engine needs at its profile's max shape, at least: the widest activation (ngf channels at full
    resolution bounds both families) as one layer's input and output, plus the float32 input and output."""
    n, _, h, w = profile.max
    element = 2 if precision == "fp16" else 4  # int8 engines keep their instance norms in float: count 4
    return n * h * w * (2 * max(meta.ngf, 1) * element + (meta.input_nc + meta.output_nc * meta.scale**2) * 4)


def check_profile_memory(meta: ModelMeta, profile: Profile, workspace_gb: float, gpu_bytes: int | None,
                         precision: str = "fp32") -> None:
    """Refuse a --max-shape whose activations (+ the --workspace-gb tactic memory) cannot fit on the GPU (or,
    with none visible, on any GPU), before the export starts."""
    workspace = int(workspace_gb * 2**30)
    need = profile_memory(meta, profile, precision) + workspace
    limit = gpu_bytes or MAX_GPU_BYTES
    if need <= limit:
        return
    n, _, h, w = profile.max
    where = f"the {gib(limit)} GiB of this GPU" if gpu_bytes else f"any single GPU has ({gib(MAX_GPU_BYTES)} GiB)"
    fits = (limit - workspace) // (profile_memory(meta, profile, precision) // n)  # frames at that HxW (< n)
    fix = f"e.g. {fits}x{h}x{w}, then `cgdeploy video --batch {fits}` at most" if fits >= 1 else "its HxW"
    raise ConfigError(f"--max-shape {n}x{h}x{w}: a {meta.arch} ngf {meta.ngf} engine needs at least {gib(need)} GiB "
                      f"of GPU memory at that shape (with --workspace-gb {workspace_gb:g}), more than {where}; lower "
                      f"--max-shape ({fix}) or --workspace-gb (default max: batch {DEFAULT_BATCH} at "
                      f"{VIDEO_MAX_SIDE}x{VIDEO_MAX_SIDE}, for 720p and 1080p video either way up)")


def check_engine_source(onnx_path: Path) -> str:
    """The graph's precision; for an int8 graph, refuse what TensorRT's explicit quantization cannot take
    (uint8 or non-zero zero points, or no Q/DQ at all) with a message naming the fix. Pure Python: no TensorRT."""
    card = read_card(onnx_path)
    if card.precision != "int8":
        return card.precision
    import onnx
    from onnx import TensorProto, numpy_helper

    model = onnx.load(str(onnx_path), load_external_data=False)
    inits = {i.name: i for i in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    if not qdq:
        raise ExportError(f"{onnx_path}: the card says int8 but the graph has no QuantizeLinear/DequantizeLinear; "
                          "re-export with `cgdeploy export CKPT -o DIR --int8`")
    for node in qdq:
        zp = inits.get(node.input[2]) if len(node.input) > 2 else None
        if zp is not None and (zp.data_type != TensorProto.INT8 or numpy_helper.to_array(zp).any()):
            kind = TensorProto.DataType.Name(zp.data_type)
            raise ExportError(f"{onnx_path}: {node.op_type} {node.name!r} has a {kind} zero point or one that is "
                              "not 0; TensorRT takes only symmetric signed int8 (zero point 0). Re-export with "
                              "`cgdeploy export CKPT -o DIR --int8`, which writes that")
    return "int8"


def _attach_timing_cache(config: trt.IBuilderConfig, data: bytes, path: Path) -> None:
    """Attach the timing cache in `data` to the builder config. TensorRT returns False (it does not raise) for a
    cache it refuses, e.g. one written by another TensorRT version or GPU: then start an empty one, which the
    build rewrites at `path`, and say so; refusing an empty cache too is an error."""
    cache = config.create_timing_cache(data)
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return
    if data:
        print(f"[TensorRT] timing cache {path} was refused (another TensorRT version or GPU?): starting an empty "
              "one, rewritten after the build")
        cache = config.create_timing_cache(b"")
        if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
            return
    raise ExportError(f"{path}: TensorRT refused an empty timing cache; build without --timing-cache or report it")


def build_engine(onnx_path: Path, plan_path: Path, profile: Profile, options: BuildOptions | None = None
                 ) -> EngineSidecar:
    """Build a strongly typed engine from `onnx_path`, write `plan_path` (temp + rename), its sidecar (with what
    the profile takes, printed before the build too) and the timing cache. Raises BackendUnavailableError
    without TensorRT/GPU, ExportError when parsing/building fails."""
    options = options or BuildOptions()
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    check_engine_source(onnx_path)
    _import_tensorrt(
        f"the ONNX artifacts were written ({onnx_path.parent}); build the engine on a machine with TensorRT and an "
        f"NVIDIA GPU via {how_to_build(onnx_path, plan_path, profile, options)}")
    import tensorrt as trt

    card = read_card(onnx_path)
    if card.extra.get("card", "").startswith("assumed"):
        raise ExportError(f"{onnx_path}: no cgdeploy model card; export it with `cgdeploy export` first")
    gpu_name, cc = engine_sidecar.gpu_info()
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
    if options.io == "uint8":  # uint8 frames in and out around the graph (parsed from memory; weights inside)
        import onnx

        from cyclegan_deploy.export.uint8_io import FRAMES_IN, add_uint8_io

        parsed = parser.parse(add_uint8_io(onnx.load(str(onnx_path)), card).SerializeToString(), str(onnx_path))
        input_name, want_outputs = FRAMES_IN, 2
    else:
        parsed = parser.parse_from_file(str(onnx_path))
        input_name, want_outputs = profile.input_name, 1
    if not parsed:
        errors = []
        for i in range(parser.num_errors):
            err = parser.get_error(i)
            errors.append(f"node #{err.node()} {err.node_name()!r} ({err.node_operator()}): {err.desc()}")
        raise ExportError(f"{onnx_path}: TensorRT {trt.__version__} ONNX parser failed: {'; '.join(errors[:5])}")
    # the network's own I/O count, before the build (no need to deserialize the engine for it)
    inputs, outputs = network.num_inputs, network.num_outputs
    if inputs != 1 or outputs != want_outputs or network.get_input(0).name != input_name:
        raise ExportError(f"{onnx_path}: TensorRT parsed {inputs} input(s) and {outputs} output(s); a generator "
                          f"graph has one input named {input_name!r} and "
                          f"{'one output' if want_outputs == 1 else 'two outputs (uint8 I/O)'}; re-export it with "
                          "`cgdeploy export`")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_gb * (1 << 30)))
    config.builder_optimization_level = options.opt_level
    tf32 = getattr(trt.BuilderFlag, "TF32", None)
    if tf32 is not None and not options.allow_tf32:
        config.clear_flag(tf32)
    trt_profile = builder.create_optimization_profile()
    shapes = f"profile min {profile.min} opt {profile.opt} max {profile.max}"
    # the profile is NCHW (frames of the model's input); uint8 frames are NHWC
    dims = [tuple(s[i] for i in ((0, 2, 3, 1) if options.io == "uint8" else (0, 1, 2, 3)))
            for s in (profile.min, profile.opt, profile.max)]
    try:  # raises ValueError on an inconsistency it can see without the network
        trt_profile.set_shape(input_name, *(trt.Dims(list(d)) for d in dims))
    except ValueError as e:
        raise ExportError(f"{onnx_path}: TensorRT refused the {shapes} ({e}); adjust "
                          "--min-shape/--opt-shape/--max-shape") from e
    if config.add_optimization_profile(trt_profile) == -1:  # its index, or -1 when invalid (it does not raise)
        log = f" ({'; '.join(messages[-3:])})" if messages else ""
        raise ExportError(f"{onnx_path}: TensorRT refused the {shapes} as invalid{log}; adjust "
                          "--min-shape/--opt-shape/--max-shape")
    cache_path = options.timing_cache
    if cache_path is not None:
        _attach_timing_cache(config, cache_path.read_bytes() if cache_path.is_file() else b"", cache_path)
    covers = profile.describe(card.multiple)
    print(f"[TensorRT] building {plan_path.name} from {onnx_path.name} ({card.precision}), profile: {covers}")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"{onnx_path}: TensorRT {trt.__version__} engine build failed: {'; '.join(messages[-3:])}; "
                          "try a larger --workspace-gb or a smaller --max-shape")
    write_bytes(plan_path, memoryview(serialized))
    sidecar = EngineSidecar(
        tensorrt_version=str(trt.__version__), gpu_name=gpu_name, compute_capability=cc, profile=profile.as_dict(),
        precision=card.precision, source_onnx=onnx_path.name, source_onnx_sha256=sha256_file(onnx_path),
        model_card=asdict(card), strongly_typed=True, tf32=tf32 is not None and options.allow_tf32,
        workspace_bytes=int(options.workspace_gb * (1 << 30)), builder_optimization_level=options.opt_level,
        built_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        extra={"strongly_typed_flag": strongly is not None, "native_instancenorm_flag": native_norm is not None,
               "covers": covers, "io": options.io})
    # the sidecar before the cache: an engine without its sidecar is refused, a missing cache only costs time
    write_sidecar(sidecar_path(plan_path), sidecar)
    if cache_path is not None:
        write_bytes(cache_path, memoryview(config.get_timing_cache().serialize()))
    return sidecar

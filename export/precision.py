"""FP16 graph (FP16 convolutions, FP32 instance norm, FP32 I/O) and the FP16 safety report.

Why instance norm stays FP32: its statistics are sums of squares over H*W; in FP16 any deviation above
256 squares to inf (FP16 max 65504) and the output collapses to a flat/washed-out or black image — the
documented TensorRT failure (NVIDIA/TensorRT#2691, onnxruntime#10079). Under TensorRT 11's strong typing
the graph's own types are what runs, so the precision must be decided here, with explicit Casts.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cyclegan_deploy.artifacts import atomic_output, write_json
from cyclegan_deploy.errors import ConfigError, DataError, ExportError
from cyclegan_deploy.metadata import ModelMeta

if TYPE_CHECKING:
    import onnx as onnx_lib
    import torch
    from torch import nn

FP16_MAX = 65504.0
NORM_PRECISIONS = ("fp32", "fp16")
FLOAT, FLOAT16 = 1, 10  # onnx.TensorProto elem types
COMPUTE_OPS = ("Conv", "ConvTranspose")


def to_fp16(onnx_path: Path, out_path: Path, norm_precision: str = "fp32") -> Path:
    """Write the FP16 version of an FP32 generator graph to `out_path` (temp name + rename).

    norm_precision="fp32": InstanceNormalization is on the converter's block list, so it gets FP32 inputs
    through explicit Casts (its scale/bias become FP32 initializers) and casts its output back to FP16.
    "fp16": everything FP16 (to measure what FP32 norm buys). Graph inputs/outputs stay FP32 either way.
    """
    import onnx
    from onnxconverter_common import float16

    if norm_precision not in NORM_PRECISIONS:
        raise ConfigError(f"--fp16-norm {norm_precision!r}: use fp32 or fp16")
    onnx_path, out_path = Path(onnx_path), Path(out_path)
    proto = onnx.load(str(onnx_path))
    card = ModelMeta.from_props({p.key: p.value for p in proto.metadata_props})
    if card is None:
        raise ExportError(f"{onnx_path}: no cgdeploy model card; export it with `cgdeploy export` first")
    if card.precision != "fp32":
        raise ExportError(f"{onnx_path}: already {card.precision}; convert the FP32 graph (g_*.onnx) instead")
    # passing op_block_list replaces the converter's default list, so extend it rather than replace it
    block = list(float16.DEFAULT_OP_BLOCK_LIST) + (["InstanceNormalization"] if norm_precision == "fp32" else [])
    try:
        with warnings.catch_warnings():
            # it warns for every weight below 1e-7 that it clamps to 1e-7 (FP16's subnormal range): harmless
            warnings.simplefilter("ignore", UserWarning)
            converted = float16.convert_float_to_float16(proto, keep_io_types=True, op_block_list=block)
    except Exception as e:
        raise ExportError(f"{onnx_path}: FP16 conversion failed ({type(e).__name__}: {str(e)[:200]})") from e
    _fold_initializer_casts(converted)
    card.precision = "fp16"
    card.extra = {**card.extra, "fp16_norm": norm_precision, "fp16_converter": "onnxconverter-common "
                  + _version("onnxconverter_common")}
    del converted.metadata_props[:]
    for key, value in card.to_props().items():
        converted.metadata_props.add(key=key, value=value)
    with atomic_output(out_path) as tmp:
        onnx.save_model(converted, str(tmp))
        check_fp16_graph(tmp, norm_precision, display_path=out_path)
        _smoke_run(tmp, card, out_path)
    return out_path


def _version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module.replace("_", "-"))
    except PackageNotFoundError:
        return "unknown"


def _fold_initializer_casts(proto: onnx_lib.ModelProto) -> None:
    """Cast(FP16 initializer -> FP32) in front of blocked nodes becomes an FP32 initializer: the FP32 norm's
    scale/bias then are plain FP32 constants instead of a rounded FP16 copy cast back at run time."""
    from onnx import numpy_helper

    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    folded = []
    for node in graph.node:
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        if node.op_type == "Cast" and to == FLOAT and node.input[0] in inits:
            array = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
            graph.initializer.append(numpy_helper.from_array(array, node.output[0]))
            consumers[node.input[0]] -= 1
            folded.append(node)
    for node in folded:
        graph.node.remove(node)
    outputs = {n.output[0] for n in folded}
    for info in [v for v in graph.value_info if v.name in outputs]:
        graph.value_info.remove(info)
    for init in [i for i in graph.initializer if consumers.get(i.name, 1) == 0]:
        graph.initializer.remove(init)


def tensor_types(proto: onnx_lib.ModelProto) -> dict[str, int]:
    """Element type of every tensor in the graph (after strict shape/type inference)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*g.value_info, *g.input, *g.output)}
    types.update({i.name: i.data_type for i in g.initializer})
    for node in g.node:  # Constant nodes carry their type in the attribute
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    types[node.output[0]] = a.t.data_type
    return types


def check_fp16_graph(path: Path, norm_precision: str = "fp32", display_path: Path | None = None) -> dict[str, Any]:
    """Type-check the FP16 graph and its precisions: FP32 I/O, FP16 convolutions, InstanceNormalization
    inputs FP32 (norm fp32) or FP16 (norm fp16). Raises ExportError naming the offending nodes."""
    import onnx

    shown = display_path or path
    proto = onnx.load(str(path))
    try:
        onnx.checker.check_model(proto, full_check=True)
        types = tensor_types(proto)
    except Exception as e:
        raise ExportError(f"{shown}: FP16 graph does not type-check ({type(e).__name__}: {str(e)[:240]})") from e
    name = {FLOAT: "fp32", FLOAT16: "fp16"}
    problems: list[str] = []
    for value in (*proto.graph.input, *proto.graph.output):
        if value.type.tensor_type.elem_type != FLOAT:
            problems.append(f"graph I/O {value.name} is not FP32")
    want_norm = FLOAT if norm_precision == "fp32" else FLOAT16
    counts: dict[str, int] = {}
    for node in proto.graph.node:
        ins = [types.get(i) for i in node.input if i]
        if node.op_type in COMPUTE_OPS and any(t != FLOAT16 for t in ins):
            problems.append(f"{node.op_type} {node.name} inputs {[name.get(t or 0, t) for t in ins]}, expected fp16")
        if node.op_type == "InstanceNormalization" and any(t != want_norm for t in ins):
            problems.append(f"InstanceNormalization {node.name} inputs {[name.get(t or 0, t) for t in ins]}, "
                            f"expected {norm_precision}")
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    if problems:
        raise ExportError(f"{shown}: FP16 graph precisions are wrong: {'; '.join(problems[:5])}")
    return {"op_counts": counts, "norm_precision": norm_precision}


def _smoke_run(path: Path, card: ModelMeta, shown: Path) -> None:
    """ONNX Runtime must accept and run the graph (its FP16 kernels are not all present on every provider)."""
    import onnxruntime as ort

    side = max(card.multiple, 16)
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        x = np.zeros((1, card.input_nc, side, side), np.float32)
        (y,) = session.run(None, {session.get_inputs()[0].name: x})
    except Exception as e:
        raise ExportError(f"{shown}: ONNX Runtime cannot run the FP16 graph ({type(e).__name__}: {str(e)[:200]})"
                          ) from e
    if y.dtype != np.float32:
        raise ExportError(f"{shown}: FP16 graph output is {y.dtype}, expected float32")


# ---------------------------------------------------------------------------------------------------------
# FP16 safety report


@dataclass
class NormStats:
    layer: str
    max_abs: float  # largest |x| entering the norm: must stay < 65504 (the FP16 conv output before the cast)
    max_dev: float  # largest |x - mean|: its square overflows FP16 beyond 256 if statistics are FP16
    max_var: float  # largest per-channel variance: inf in FP16 beyond 65504

    @property
    def headroom(self) -> float:
        return FP16_MAX / self.max_abs if self.max_abs else math.inf


@dataclass
class ActivationStats:
    layer: str
    max_abs: float  # largest |output| of the layer or block (residual sums included): FP16 is inf past 65504

    @property
    def headroom(self) -> float:
        return FP16_MAX / self.max_abs if self.max_abs else math.inf


@dataclass
class VariantResult:
    norm_precision: str
    psnr_db: float
    max_abs: float
    max_uint8_diff: int
    nonfinite: int
    verdict: str


@dataclass
class SafetyReport:
    model: str
    inputs: str
    shapes: list[list[int]]
    norms: list[NormStats]
    variants: list[VariantResult]
    activations: list[ActivationStats]  # the layers/blocks with the largest outputs, largest first
    chosen_norm_precision: str
    verdict: str
    method: str
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _r16(t: torch.Tensor) -> torch.Tensor:
    """Round to the nearest FP16 value (inf beyond 65504), kept in an FP32 tensor."""
    return t.half().float()


def _round_input(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return tuple(_r16(a) if a.is_floating_point() else a for a in args)


def _round_output(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
    return _r16(output)


def _fp16_norm(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
    """Instance norm with every element-wise step rounded to FP16 (squares overflow to inf once |x-mean| > 256),
    the naive-FP16-kernel failure; torch's own half kernel accumulates in FP32 and would hide it."""
    x = args[0]
    mean = _r16(x.mean(dim=(2, 3), keepdim=True))
    dev = _r16(x - mean)
    var = _r16(_r16(dev * dev).mean(dim=(2, 3), keepdim=True))
    return _r16(dev * _r16(_r16(var + module.eps).rsqrt()))  # type: ignore[operator]


def emulate_fp16(model: nn.Module, norm_precision: str) -> nn.Module:
    """A copy of `model` that computes like the FP16 graph on a GPU: FP16 weights, every layer's inputs and
    outputs rounded to FP16 (FP32 accumulation inside a conv, as tensor cores do), and InstanceNorm either
    in FP32 on the FP16-rounded input (norm fp32: the explicit-Cast graph) or in FP16 arithmetic.
    Rounding in FP32 tensors runs on FP32 CPU kernels: torch .half() convolutions on CPU are 10x+ slower."""
    import torch
    from torch import nn

    sim = copy.deepcopy(model).float().eval()
    with torch.no_grad():
        for tensor in (*sim.parameters(), *sim.buffers()):
            if tensor.is_floating_point():
                tensor.copy_(_r16(tensor))
    for m in sim.modules():
        if next(m.children(), None) is not None:
            # containers: their leaves round what they compute; the container's own output is rounded too, since
            # it is where residual sums (x + block(x), ESRGAN's x + 0.2 * rdb(x)) happen: FP16 Adds in the graph
            m.register_forward_hook(_round_output)
            continue
        m.register_forward_pre_hook(_round_input)
        if isinstance(m, nn.InstanceNorm2d) and norm_precision == "fp16":
            m.register_forward_hook(_fp16_norm)
        else:
            m.register_forward_hook(_round_output)
    return sim


def _verdict(psnr_db: float, nonfinite: int, overflow: bool) -> str:
    if nonfinite or overflow or psnr_db < 30.0:
        return "will wash out"
    if psnr_db < 40.0:
        return "risky"
    return "safe"


def load_images(folder: Path, meta: ModelMeta, limit: int = 8) -> list[np.ndarray]:
    """Up to `limit` images from `folder`, shorter side resized to the training size (as the reference's
    preprocessing does), as uint8 (1,H,W,3)."""
    from PIL import Image

    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".webp"))
    if not files:
        raise DataError(f"{folder}: no images (.png/.jpg/...) for the FP16 safety report; pass a folder of "
                        "sample images with --safety-images or leave it out to use seeded images")
    out = []
    for file in files[:limit]:
        img = Image.open(file).convert("RGB")
        scale = meta.train_size / min(img.size)
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, Image.Resampling.BICUBIC)
        out.append(np.asarray(img)[None])
    return out


def fp16_safety_report(model: nn.Module, meta: ModelMeta, *, images: list[np.ndarray] | None = None,
                       image_source: str = "", norm_precision: str = "fp32", seed: int = 0,
                       out_path: Path | None = None, echo: bool = True) -> SafetyReport:
    """Measure whether FP16 will hold for this model: per-InstanceNorm input range vs FP16, the largest
    outputs of every layer and block (residual paths: a deep trunk's sums are where norm-free models such as
    ESRGAN's RRDBNet could leave the FP16 range), and the PSNR of simulated FP16 arithmetic vs FP32 for norm
    fp32 and norm fp16."""
    import torch
    from torch import nn

    from cyclegan_deploy.export.validate import compare, sample_images
    from cyclegan_deploy.frames import pad_to_multiple, to_model

    if images is None:
        side = max(meta.multiple, meta.train_size)
        images = [sample_images(2, side, side, seed), sample_images(2, side, side, seed + 1)]
        image_source = image_source or f"seeded images {side}x{side} (seed {seed})"
    batches = [pad_to_multiple(to_model(img, meta.input_range), meta.multiple) for img in images]
    model = model.eval()
    norms = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.InstanceNorm2d)]
    stats = {n: [0.0, 0.0, 0.0] for n, _ in norms}

    def record(name: str) -> Any:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].detach().double()
            mean = x.mean(dim=(2, 3), keepdim=True)
            s = stats[name]
            s[0] = max(s[0], float(x.abs().max()))
            s[1] = max(s[1], float((x - mean).abs().max()))
            s[2] = max(s[2], float(((x - mean) ** 2).mean(dim=(2, 3)).max()))
        return hook

    largest: dict[str, float] = {}  # module name -> largest |output|

    def largest_output(name: str) -> Any:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: Any) -> None:
            if isinstance(output, torch.Tensor) and output.is_floating_point():
                largest[name] = max(largest.get(name, 0.0), float(output.detach().abs().max()))
        return hook

    handles = [m.register_forward_pre_hook(record(n)) for n, m in norms]
    handles += [m.register_forward_hook(largest_output(n)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            refs = [model(torch.from_numpy(b)).numpy() for b in batches]
    finally:
        for h in handles:
            h.remove()
    norm_stats = [NormStats(n, *stats[n]) for n, _ in norms]
    top = sorted((ActivationStats(n, v) for n, v in largest.items()), key=lambda a: -a.max_abs)[:5]
    conv_overflow = any(s.max_abs >= FP16_MAX for s in norm_stats) or any(a.max_abs >= FP16_MAX for a in top)
    variants = []
    for variant in NORM_PRECISIONS:
        sim = emulate_fp16(model, variant)
        with torch.no_grad():
            outs = [sim(torch.from_numpy(b)).numpy() for b in batches]
        nonfinite = int(sum((~np.isfinite(o)).sum() for o in outs))
        finite = [np.nan_to_num(o, nan=0.0, posinf=1.0, neginf=-1.0) for o in outs]
        cases = [compare(r, o, meta.output_range) for r, o in zip(refs, finite, strict=True)]
        psnr_db = min(c.psnr_db for c in cases)
        square_overflow = variant == "fp16" and any(s.max_dev**2 >= FP16_MAX for s in norm_stats)
        variants.append(VariantResult(variant, psnr_db, max(c.max_abs for c in cases),
                                      max(c.max_uint8_diff for c in cases), nonfinite,
                                      _verdict(psnr_db, nonfinite, conv_overflow or square_overflow)))
    chosen = next(v for v in variants if v.norm_precision == norm_precision)
    other = next(v for v in variants if v.norm_precision != norm_precision)
    worst = max(norm_stats, key=lambda s: s.max_abs, default=None)
    worst_text = (f"largest InstanceNorm input |x| {worst.max_abs:.3g} at {worst.layer} (FP16 headroom "
                  f"{worst.headroom:.3g}x), largest |x-mean| {max(s.max_dev for s in norm_stats):.3g}"
                  if worst else "no InstanceNorm layers")
    if top:
        worst_text += (f"; largest activation |x| {top[0].max_abs:.3g} at {top[0].layer} (FP16 headroom "
                       f"{top[0].headroom:.3g}x)")
    verdict = (f"FP16 verdict (norm {norm_precision}): {chosen.verdict} — simulated FP16 PSNR {chosen.psnr_db:.1f} dB "
               f"vs FP32, max uint8 diff {chosen.max_uint8_diff}; {worst_text}; with norm {other.norm_precision}: "
               f"{other.verdict} ({other.psnr_db:.1f} dB)")
    report = SafetyReport(
        model=f"{meta.arch} ngf {meta.ngf} {meta.direction} ({meta.source or 'in memory'})", inputs=image_source
        or "given images", shapes=[list(b.shape) for b in batches], norms=norm_stats, variants=variants,
        activations=top, chosen_norm_precision=norm_precision, verdict=verdict,
        method="FP16 emulated in torch on CPU: FP16 weights, every layer's inputs/outputs rounded to FP16 (FP32 "
               "accumulation inside convs, as GPU tensor cores do); norm fp32 = InstanceNorm in FP32 on the FP16 "
               "input, output rounded; norm fp16 = every step of the statistics rounded to FP16 (squares overflow "
               "past 256); block outputs (residual sums) rounded too. PSNR on the card's output range vs the FP32 "
               "model on the same inputs.",
        notes=["thresholds: safe >= 40 dB, risky 30-40 dB, will wash out < 30 dB or any inf/NaN or an InstanceNorm "
               "input or a layer's output beyond the FP16 range"])
    if out_path is not None:
        write_json(Path(out_path), report.as_dict())  # strict JSON: an exact variant's inf PSNR is null
    if echo:
        print(verdict)
    return report

"""INT8 graph with an accuracy guard: NNCF post-training quantization of the FP32 ONNX graph into explicit
QuantizeLinear/DequantizeLinear (QDQ) form, kept above a PSNR floor by returning sensitive layers to float.

The same QDQ graph serves OpenVINO (int8 kernels), ONNX Runtime and TensorRT (explicit quantization), so the
quantization is symmetric (NNCF's PERFORMANCE preset: zero points 0, which TensorRT requires), weights per
output channel. Always float: InstanceNormalization (NNCF does not quantize it) and the output convolution
(whose output goes straight to Tanh and the pixels).

The guard (`quantize_guarded`): quantize, measure PSNR vs the FP32 graph on the held-out calibration images
(worst image). While below the floor: rank the quantized convolutions by how much PSNR each recovers when it
alone is returned to float (its weight back to the FP32 initializer, its input taken before the Q/DQ pair —
a graph edit of the quantized model, no re-calibration), then re-quantize with NNCF ignoring the top k, k
doubling, and bisect to the fewest layers that pass. The card records the layers kept float (by PyTorch
module name and ONNX node), the measured PSNR, the runtime that measured it and every step of the search.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cyclegan_deploy.errors import BackendUnavailableError, ExportError
from cyclegan_deploy.quality import psnr

CONV_OPS = ("Conv", "ConvTranspose")
DEFAULT_MIN_PSNR = 40.0

Runner = Callable[[np.ndarray], np.ndarray]


@dataclass
class Int8Result:
    model: Any  # onnx.ModelProto: the chosen QDQ graph (no card yet)
    psnr_db: float  # worst held-out image, vs the FP32 graph
    runtime: str  # what measured it
    kept_float: list[dict[str, str]]  # [{"node": ..., "module": ...}] returned to float by the guard
    always_float: list[dict[str, str]]  # the output convolution (and anything else kept float by rule)
    steps: list[dict[str, Any]] = field(default_factory=list)
    sensitivity: list[dict[str, Any]] = field(default_factory=list)
    quantized_convs: int = 0

    def card(self, min_psnr: float) -> dict[str, Any]:
        return {"psnr_vs_fp32_db": _round(self.psnr_db), "min_psnr_db": min_psnr, "measured_with": self.runtime,
                "quantized_convs": self.quantized_convs, "kept_float": self.kept_float,
                "always_float": self.always_float + [{"node": "InstanceNormalization", "module": "all"}],
                "guard_steps": self.steps, "scheme": "NNCF PTQ, symmetric int8 (zero point 0), weights per "
                "output channel, QDQ"}


def _round(x: float) -> float | None:
    return round(x, 2) if math.isfinite(x) else None


def _import_nncf() -> Any:
    try:
        import nncf
        from nncf.common.logging import nncf_logger
    except ImportError as e:
        raise BackendUnavailableError(f"--int8 needs NNCF ({e}); pip install 'cyclegan-deploy[int8]' (or nncf)") from e
    nncf_logger.setLevel(logging.WARNING)  # its INFO lines list every node it leaves unquantized
    return nncf


def conv_nodes(model: Any) -> list[tuple[str, str]]:
    """(node name, weight initializer name) of every Conv/ConvTranspose, in graph order."""
    return [(n.name, n.input[1]) for n in model.graph.node if n.op_type in CONV_OPS]


def producers_of(model: Any) -> dict[str, Any]:
    """Tensor name -> the node that writes it."""
    return {out: n for n in model.graph.node for out in n.output}


def output_conv(model: Any) -> str | None:
    """The convolution nearest the graph output (walking back through Tanh and other single-input ops)."""
    producers = producers_of(model)
    name = model.graph.output[0].name
    while name in producers:
        node = producers[name]
        if node.op_type in CONV_OPS:
            return str(node.name)
        name = node.input[0]
    return None


def module_name(weight: str) -> str:
    """PyTorch module of a conv weight ("model.10.conv_block.1.weight" -> "model.10.conv_block.1")."""
    return weight[: -len(".weight")] if weight.endswith(".weight") else weight


def quantize(fp32: Any, calib: Sequence[np.ndarray], ignored: Sequence[str]) -> Any:
    """NNCF PTQ of the FP32 ModelProto on `calib` with the nodes in `ignored` left float."""
    nncf = _import_nncf()
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    name = fp32.graph.input[0].name
    dataset = nncf.Dataset(list(calib), lambda x: {name: x})
    scope = nncf.IgnoredScope(names=list(ignored), types=["InstanceNormalization"], validate=False)
    # the true min/max over the calibration set, not NNCF's default mean of per-image extremes: instance norm
    # turns sparse highlights (stars on black) into large values, and frames unlike the calibration images
    # clip less (measured on the trained ResNet-9: worst of 6 photographs 37.0 -> 40.6 dB)
    advanced = AdvancedQuantizationParameters(activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX)
    model = nncf.quantize(fp32, dataset, preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=len(calib),
                          ignored_scope=scope, advanced_parameters=advanced)
    return to_signed(model)


def to_signed(model: Any) -> Any:
    """uint8 Q/DQ pairs (NNCF's choice after a ReLU, zero point 0) -> int8 with the same top of range (scale x
    255/127). TensorRT takes only signed int8 with zero point 0; NNCF's own signedness_to_force clashes with
    its hardware configs for convolutions. Costs those tensors one bit, which the guard then measures."""
    from onnx import TensorProto, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2]
    unsigned = {n.input[2]: n.input[1] for n in qdq
                if n.input[2] in inits and inits[n.input[2]].data_type == TensorProto.UINT8}
    for zp_name, scale_name in unsigned.items():
        zp = numpy_helper.to_array(inits[zp_name])
        if zp.any():
            raise ExportError("NNCF wrote an asymmetric uint8 quantizer; TensorRT needs zero point 0 (symmetric)")
        inits[zp_name].CopyFrom(numpy_helper.from_array(zp.astype(np.int8), zp_name))
        scale = numpy_helper.to_array(inits[scale_name])
        inits[scale_name].CopyFrom(numpy_helper.from_array((scale * (255.0 / 127.0)).astype(scale.dtype), scale_name))
    outputs = {n.output[0] for n in qdq if n.op_type == "QuantizeLinear" and n.input[2] in unsigned}
    for info in model.graph.value_info:  # NNCF records the quantized tensors' types: int8 now
        if info.name in outputs:
            info.type.tensor_type.elem_type = TensorProto.INT8
    return model


def quantized_convs(model: Any) -> list[str]:
    """Conv nodes of a QDQ graph whose weight comes through a DequantizeLinear."""
    producers = producers_of(model)
    return [n.name for n in model.graph.node if n.op_type in CONV_OPS
            and getattr(producers.get(n.input[1]), "op_type", "") == "DequantizeLinear"]


def to_float(qdq: Any, fp32: Any, node_name: str) -> Any:
    """A copy of the QDQ graph with one convolution back in float: its weight is the FP32 initializer again
    and its input is taken before the activation's Q/DQ pair (through a Pad that only it reads)."""
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(qdq)
    fp32_weights = {i.name: i for i in fp32.graph.initializer}
    fp32_node = next(n for n in fp32.graph.node if n.name == node_name)
    node = next(n for n in model.graph.node if n.name == node_name)
    producers = producers_of(model)
    consumers: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    weight = fp32_node.input[1]
    if weight not in {i.name for i in model.graph.initializer}:
        model.graph.initializer.append(fp32_weights[weight])
    node.input[1] = weight
    reader, slot = node, 0
    source = producers.get(node.input[0])
    if source is not None and source.op_type == "Pad" and consumers.get(node.input[0], 0) == 1:
        reader, source = source, producers.get(source.input[0])
    if source is not None and source.op_type == "DequantizeLinear":
        q = producers.get(source.input[0])
        if q is not None and q.op_type == "QuantizeLinear":
            reader.input[slot] = q.input[0]
    return model


def openvino_runner(model: Any) -> tuple[Runner, str]:
    """A runner of an in-memory ONNX graph on OpenVINO CPU (int8 kernels; f32 for the float ops)."""
    import openvino as ov

    from cyclegan_deploy.export.openvino import openvino_runner as runner_of

    return runner_of(model.SerializeToString(), "f32"), f"openvino {ov.__version__.split('-')[0]} CPU"


def onnxruntime_runner(model: Any) -> tuple[Runner, str]:
    import onnxruntime as ort

    from cyclegan_deploy.export.validate import ort_session

    session = ort_session(model.SerializeToString())
    name = session.get_inputs()[0].name
    return (lambda x: np.asarray(session.run(None, {name: x})[0])), f"onnxruntime {ort.__version__} CPU"


def make_runner(model: Any) -> tuple[Runner, str]:
    """OpenVINO where installed (the runtime whose int8 kernels the graph is for), else ONNX Runtime."""
    try:
        return openvino_runner(model)
    except ImportError:
        return onnxruntime_runner(model)


def worst_psnr(run: Runner, images: Sequence[np.ndarray], references: Sequence[np.ndarray]) -> float:
    return min(psnr(ref, run(x)) for x, ref in zip(images, references, strict=True))


def quantize_guarded(fp32: Any, calib: Sequence[np.ndarray], holdout: Sequence[np.ndarray], min_psnr: float,
                     echo: Callable[[str], None] = print, runner: Callable[[Any], tuple[Runner, str]] = make_runner,
                     ) -> Int8Result:
    """The guarded quantization described in the module docstring. Raises ExportError when even every
    convolution in float stays below `min_psnr` (the loss is not in the convolutions)."""
    ref_run, _ = onnxruntime_runner(fp32)
    references = [ref_run(x) for x in holdout]
    names = {n: module_name(w) for n, w in conv_nodes(fp32)}
    out_conv = output_conv(fp32)
    always = [out_conv] if out_conv else []
    steps: list[dict[str, Any]] = []

    def attempt(keep: list[str]) -> tuple[Any, float, str]:
        model = quantize(fp32, calib, always + keep)
        run, runtime = runner(model)
        value = worst_psnr(run, holdout, references)
        steps.append({"kept_float": [names[k] for k in keep], "psnr_db": _round(value)})
        echo(f"int8 guard: {len(keep)} layer(s) back in float -> {value:.2f} dB (floor {min_psnr:g} dB)")
        return model, value, runtime

    model, value, runtime = attempt([])
    quantized = quantized_convs(model)
    sensitivity: list[dict[str, Any]] = []
    keep: list[str] = []
    if not value >= min_psnr:
        sensitivity = rank_layers(model, fp32, quantized, holdout, references, runner)
        order = [s["node"] for s in sensitivity]
        echo("int8 guard: most sensitive layers " + ", ".join(
            f"{names[s['node']]} ({s['psnr_db']:.1f} dB alone in float)" for s in sensitivity[:3]))
        passed: tuple[int, Any, float] | None = None
        low, k = 0, 1
        while passed is None and low < len(order):  # k doubling until it passes
            k = min(k, len(order))
            candidate = attempt(order[:k])
            if candidate[1] >= min_psnr:
                passed = (k, candidate[0], candidate[1])
            else:
                low, k = k, 2 * k
        if passed is None:
            raise ExportError(f"int8: {value:.1f} dB vs fp32, and even with all {len(order)} quantized "
                              f"convolutions back in float only {steps[-1]['psnr_db']} dB < {min_psnr:g} dB: the "
                              "loss is not in the convolutions. Lower --int8-min-psnr, or use bf16/fp32")
        high = passed[0]
        while high - low > 1:  # bisect to the fewest layers that pass
            mid = (low + high) // 2
            candidate = attempt(order[:mid])
            if candidate[1] >= min_psnr:
                high, passed = mid, (mid, candidate[0], candidate[1])
            else:
                low = mid
        keep = order[: passed[0]]
        model, value = passed[1], passed[2]
    return Int8Result(model=model, psnr_db=value, runtime=runtime,
                      kept_float=[{"node": k, "module": names[k]} for k in keep],
                      always_float=[{"node": k, "module": names[k]} for k in always], steps=steps,
                      sensitivity=sensitivity, quantized_convs=len(quantized_convs(model)))


def rank_layers(qdq: Any, fp32: Any, nodes: Sequence[str], holdout: Sequence[np.ndarray],
                references: Sequence[np.ndarray], runner: Callable[[Any], tuple[Runner, str]]) -> list[dict[str, Any]]:
    """Each quantized convolution's PSNR when it alone is returned to float, best first."""
    rows = []
    for node in nodes:
        run, _ = runner(to_float(qdq, fp32, node))
        rows.append({"node": node, "psnr_db": worst_psnr(run, holdout, references)})
    return sorted(rows, key=lambda r: -r["psnr_db"])


def export_int8(onnx_path: Path, out_path: Path, calibration: Any, min_psnr: float = DEFAULT_MIN_PSNR,
                echo: Callable[[str], None] = print) -> tuple[Path, Int8Result]:
    """Write the guarded INT8 QDQ graph of the FP32 graph at `onnx_path` to `out_path` (temp name + rename),
    its card saying precision int8, the calibration (source, hash) and the guard's result."""
    import onnx

    from cyclegan_deploy.artifacts import atomic_output
    from cyclegan_deploy.metadata import ModelMeta

    onnx_path, out_path = Path(onnx_path), Path(out_path)
    fp32 = onnx.load(str(onnx_path))
    card = ModelMeta.from_props({p.key: p.value for p in fp32.metadata_props})
    if card is None or card.precision != "fp32":
        raise ExportError(f"{onnx_path}: INT8 is quantized from the FP32 graph with a cgdeploy model card; pass "
                          "g_*.onnx written by `cgdeploy export`")
    nncf = _import_nncf()
    result = quantize_guarded(fp32, calibration.calib, calibration.holdout, min_psnr, echo=echo)
    card.precision = "int8"
    card.extra = {**card.extra, "int8": {**result.card(min_psnr), "calibration": calibration.card(),
                                         "nncf": nncf.__version__, "source_onnx": onnx_path.name}}
    model = result.model
    del model.metadata_props[:]
    for key, value in card.to_props().items():
        model.metadata_props.add(key=key, value=value)
    with atomic_output(out_path) as tmp:
        onnx.save_model(model, str(tmp))
    return out_path, result

"""uint8 frames in and out of a generator graph: what a TensorRT engine built with `--engine-io uint8` runs, so
`video` moves a quarter of the float32 bytes each way and the GPU does the pre/post-processing.

The wrapped graph, from the generator graph G (input `x`, output `y`, float32 or float16 inside):

    frames uint8 (N, H, W, C) -> Cast float32 -> Transpose NCHW -> * (hi - lo) / 255 [+ lo] -> x -> G -> y
    y -> Cast float32 -> - lo -> * 255 / (hi - lo) -> Clip 0..255 -> Round -> Transpose NHWC -> Cast uint8
      -> frames_out uint8 (N, sH, sW, C)
    y -> Cast float32 -> IsNaN(y) or |y| == inf -> ReduceMax over (C, H, W) -> nonfinite float32 (N,): 1 where
      a frame has a NaN or an infinity (no `y - y`, which an optimizer might fold to 0)

The constants are frames.normalise_into's and frames.to_uint8's float32 ones, Round is half to even as np.rint,
so the pixels are the host path's (up to a fused multiply-add a runtime may make of the first two steps). Only
ops every TensorRT 10/11 ONNX parser takes. TensorRT takes UINT8 only at the network's edges, and only through a
Cast: the input goes straight into one, the output comes straight out of one (both transposes run on float32;
a uint8 output produced by a Transpose/Shuffle fails the build, NVIDIA/TensorRT#4278, #3985).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from cyclegan_deploy.engine_sidecar import FRAMES_IN, FRAMES_OUT, NONFINITE
from cyclegan_deploy.errors import ExportError
from cyclegan_deploy.metadata import ModelMeta

__all__ = ["FRAMES_IN", "FRAMES_OUT", "NONFINITE", "add_uint8_io"]


def _const(name: str, value: float | list[int]) -> TensorProto:
    array = np.asarray(value, dtype=np.int64 if isinstance(value, list) else np.float32)
    return numpy_helper.from_array(array, name)


def add_uint8_io(model: onnx.ModelProto, meta: ModelMeta) -> onnx.ModelProto:
    """A copy of the one-input, one-output generator `model` taking and giving uint8 NHWC frames (plus the
    per-frame `nonfinite` flag), in the card's input/output value ranges."""
    graph = model.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ExportError(f"a generator graph has one input and one output, this one {len(graph.input)} and "
                          f"{len(graph.output)}; re-export it with `cgdeploy export`")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:
        raise ExportError(f"opset {opset} is too old for the uint8 wrapper (needs >= 13); re-export with "
                          "`cgdeploy export`")
    x, y = graph.input[0], graph.output[0]
    x_type, c_in, c_out = x.type.tensor_type.elem_type, meta.input_nc, meta.output_nc
    (in_lo, in_hi), (out_lo, out_hi) = (tuple(float(v) for v in r) for r in (meta.input_range, meta.output_range))
    f32, p = TensorProto.FLOAT, "u8io_"  # every new name is prefixed: no clash with the generator's own
    inits = [_const(p + "in_scale", (in_hi - in_lo) / 255.0), _const(p + "in_lo", in_lo),
             _const(p + "out_lo", out_lo), _const(p + "out_scale", 255.0 / (out_hi - out_lo)),
             _const(p + "zero", 0.0), _const(p + "top", 255.0), _const(p + "inf", float("inf"))]
    inits += [_const(p + "chw", [1, 2, 3])] if opset >= 18 else []  # ReduceMax's axes input (an attribute before)
    scaled = p + "scaled"
    pre = [helper.make_node("Cast", [FRAMES_IN], [p + "f"], to=f32),
           helper.make_node("Transpose", [p + "f"], [p + "nchw"], perm=[0, 3, 1, 2]),
           helper.make_node("Mul", [p + "nchw", p + "in_scale"], [scaled])]
    if in_lo:
        pre.append(helper.make_node("Add", [scaled, p + "in_lo"], [p + "shifted"]))
    last = pre[-1].output[0]
    pre.append(helper.make_node("Cast", [last], [x.name], to=x_type) if x_type != f32
               else helper.make_node("Identity", [last], [x.name]))
    # ReduceMax over (C, H, W): axes as an input from opset 18, as an attribute before
    flag = (helper.make_node("ReduceMax", [p + "nan_f", p + "chw"], [NONFINITE], keepdims=0) if opset >= 18 else
            helper.make_node("ReduceMax", [p + "nan_f"], [NONFINITE], keepdims=0, axes=[1, 2, 3]))
    post = [helper.make_node("Cast", [y.name], [p + "y"], to=f32),
            helper.make_node("Sub", [p + "y", p + "out_lo"], [p + "from_lo"]),
            helper.make_node("Mul", [p + "from_lo", p + "out_scale"], [p + "levels"]),
            helper.make_node("Clip", [p + "levels", p + "zero", p + "top"], [p + "clipped"]),
            helper.make_node("Round", [p + "clipped"], [p + "rounded"]),
            helper.make_node("Transpose", [p + "rounded"], [p + "nhwc"], perm=[0, 2, 3, 1]),
            helper.make_node("Cast", [p + "nhwc"], [FRAMES_OUT], to=TensorProto.UINT8),
            helper.make_node("IsNaN", [p + "y"], [p + "nan"]),
            helper.make_node("Abs", [p + "y"], [p + "abs"]),
            helper.make_node("Equal", [p + "abs", p + "inf"], [p + "inf_mask"]),
            helper.make_node("Or", [p + "nan", p + "inf_mask"], [p + "bad"]),
            helper.make_node("Cast", [p + "bad"], [p + "nan_f"], to=f32), flag]
    inputs = [helper.make_tensor_value_info(FRAMES_IN, TensorProto.UINT8, ["N", "H", "W", c_in])]
    outputs = [helper.make_tensor_value_info(FRAMES_OUT, TensorProto.UINT8, ["N", "H_out", "W_out", c_out]),
               helper.make_tensor_value_info(NONFINITE, f32, ["N"])]
    wrapped = helper.make_graph([*pre, *graph.node, *post], graph.name or "generator", inputs, outputs,
                                initializer=[*graph.initializer, *inits], value_info=graph.value_info)
    out = helper.make_model(wrapped, opset_imports=model.opset_import, ir_version=model.ir_version,
                            producer_name=model.producer_name or "cgdeploy")
    out.functions.extend(model.functions)
    out.metadata_props.extend(model.metadata_props)
    onnx.checker.check_model(out)
    return out

"""The uint8-I/O wrapper of a generator graph (what `--engine-io uint8` engines are built from), run by ONNX
Runtime on the CPU and compared with the host path (frames.to_model -> the graph -> frames.to_uint8)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from cyclegan_deploy.artifacts import read_card
from cyclegan_deploy.errors import ExportError
from cyclegan_deploy.frames import to_model, to_uint8
from cyclegan_deploy.metadata import ModelMeta

ort = pytest.importorskip("onnxruntime")
from cyclegan_deploy.export.uint8_io import FRAMES_IN, FRAMES_OUT, NONFINITE, add_uint8_io  # noqa: E402


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _frames(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("graph", ["tiny_onnx", "tiny_fp16"])
def test_uint8_graph_gives_the_host_paths_pixels(graph: str, request: pytest.FixtureRequest) -> None:
    path: Path = request.getfixturevalue(graph)
    meta = read_card(path)
    plain, wrapped = _session(onnx.load(path)), _session(add_uint8_io(onnx.load(path), meta))
    assert [(i.name, i.type) for i in wrapped.get_inputs()] == [(FRAMES_IN, "tensor(uint8)")]
    assert [o.name for o in wrapped.get_outputs()] == [FRAMES_OUT, NONFINITE]
    frames = _frames(2, 36, 44)  # odd multiples of 4: nothing square or power-of-two about it
    host = to_uint8(plain.run(None, {plain.get_inputs()[0].name: to_model(frames, meta.input_range)})[0],
                    meta.output_range).transpose(0, 2, 3, 1)
    out, nonfinite = wrapped.run(None, {FRAMES_IN: frames})
    assert out.dtype == np.uint8 and out.shape == host.shape == (2, 36, 44, 3)
    diff = np.abs(out.astype(int) - host.astype(int))
    # the same float32 steps; a runtime may fuse the scale and shift into one FMA: one level at most, rarely
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    assert nonfinite.tolist() == [0.0, 0.0]


def _affine_graph(scale: float, shift: float, x_type: int = TensorProto.FLOAT) -> onnx.ModelProto:
    """y = x * scale + shift as a 'generator' (scale inf/nan makes non-finite outputs on demand)."""
    nodes = [helper.make_node("Mul", ["x", "s"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])]
    inits = [helper.make_tensor("s", x_type, [], [scale]), helper.make_tensor("b", x_type, [], [shift])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", x_type, ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("y", x_type, ["N", 3, "H", "W"])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


@pytest.mark.parametrize("opset", [13, 17, 18, 20])
def test_uint8_tensors_only_meet_casts(opset: int) -> None:
    """TensorRT takes UINT8 only as network input/output, and only into/out of a Cast layer (a uint8 output made
    by a Transpose fails its build): every uint8 tensor is made by a Cast or is the input, and is read only by
    Casts or is an output. The wrapper is valid ONNX, and runs, at each opset (ReduceMax's axes moved at 18)."""
    model = _affine_graph(1.0, 0.0)
    model.opset_import[0].version = opset
    wrapped = add_uint8_io(model, ModelMeta())
    onnx.checker.check_model(wrapped, full_check=True)
    graph = wrapped.graph
    uint8 = {v.name for v in (*graph.input, *graph.output) if v.type.tensor_type.elem_type == TensorProto.UINT8}
    uint8 |= {out for n in graph.node if n.op_type == "Cast"
              and helper.get_attribute_value(n.attribute[0]) == TensorProto.UINT8 for out in n.output}
    assert uint8 == {FRAMES_IN, FRAMES_OUT}
    assert [n.op_type for n in graph.node if FRAMES_OUT in n.output] == ["Cast"]
    assert [n.op_type for n in graph.node if FRAMES_IN in n.input] == ["Cast"]
    assert not [n for n in graph.node if FRAMES_OUT in n.input]
    frames = _frames(1, 4, 8)
    out, flags = _session(wrapped).run(None, {FRAMES_IN: frames})
    np.testing.assert_array_equal(out, frames)
    assert flags.tolist() == [0.0]


def test_value_ranges_come_from_the_card() -> None:
    # an SR-style card in [0, 1] both ways: identity graph -> the same uint8 frames back
    meta = ModelMeta(input_range=(0.0, 1.0), output_range=(0.0, 1.0))
    frames = _frames(1, 8, 12, seed=3)
    out, _ = _session(add_uint8_io(_affine_graph(1.0, 0.0), meta)).run(None, {FRAMES_IN: frames})
    np.testing.assert_array_equal(out, frames)
    # [-1, 1] in, identity: x = f/127.5 - 1 back to f exactly; a shift of one level's size moves every pixel
    meta = ModelMeta()
    out, _ = _session(add_uint8_io(_affine_graph(1.0, 2.0 / 255.0), meta)).run(None, {FRAMES_IN: frames})
    np.testing.assert_array_equal(out, np.minimum(frames.astype(int) + 1, 255).astype(np.uint8))


def test_clipping_and_half_to_even_rounding() -> None:
    meta = ModelMeta(input_range=(0.0, 1.0), output_range=(0.0, 1.0))
    # y = 1.5 x - 0.25 / 255: values past both ends clip; x = 1/255 -> 1.25 levels -> 1, 3/255 -> 4.25 -> 4
    frames = np.array([0, 1, 3, 200, 255], np.uint8).reshape(1, 1, 5, 1).repeat(3, axis=3)
    out, _ = _session(add_uint8_io(_affine_graph(1.5, -0.25 / 255.0), meta)).run(None, {FRAMES_IN: frames})
    host = to_uint8(to_model(frames, (0.0, 1.0)) * np.float32(1.5) - np.float32(0.25 / 255.0), (0.0, 1.0))
    np.testing.assert_array_equal(out, host.transpose(0, 2, 3, 1))
    assert out[0, 0, :, 0].tolist() == [0, 1, 4, 255, 255]


@pytest.mark.parametrize("scale", [float("nan"), float("inf")])
def test_nonfinite_outputs_are_flagged_per_frame(scale: float) -> None:
    frames = _frames(3, 4, 4, seed=1)
    frames[1] = 0  # inf * 0 is NaN, nan * 0 is NaN: every frame becomes non-finite...
    meta = ModelMeta(input_range=(0.0, 1.0), output_range=(0.0, 1.0))
    _, flags = _session(add_uint8_io(_affine_graph(scale, 0.0), meta)).run(None, {FRAMES_IN: frames})
    assert flags.tolist() == [1.0, 1.0, 1.0]
    _, flags = _session(add_uint8_io(_affine_graph(1.0, 0.0), meta)).run(None, {FRAMES_IN: frames})
    assert flags.tolist() == [0.0, 0.0, 0.0]  # ...and none with a finite model


@pytest.mark.parametrize("scale", [float("inf"), -float("inf")])
def test_infinities_without_any_nan_are_flagged_too(scale: float) -> None:
    frames = np.full((2, 4, 4, 3), 9, np.uint8)
    frames[0, 1, 1] = 200  # nonzero everywhere: inf * x is +-inf, never NaN
    meta = ModelMeta(input_range=(0.0, 1.0), output_range=(0.0, 1.0))
    _, flags = _session(add_uint8_io(_affine_graph(scale, 0.0), meta)).run(None, {FRAMES_IN: frames})
    assert flags.tolist() == [1.0, 1.0]


def test_float16_inside_float32_never_at_the_edges() -> None:
    wrapped = add_uint8_io(_affine_graph(1.0, 0.0, TensorProto.FLOAT16), ModelMeta())
    casts = [n for n in wrapped.graph.node if n.op_type == "Cast"]
    assert helper.get_attribute_value(casts[1].attribute[0]) == TensorProto.FLOAT16  # into the f16 generator
    out, _ = _session(wrapped).run(None, {FRAMES_IN: _frames(1, 4, 4)})
    np.testing.assert_array_equal(out, _frames(1, 4, 4))


def test_graphs_it_cannot_wrap_are_refused() -> None:
    two_outputs = _affine_graph(1.0, 0.0)
    two_outputs.graph.output.append(helper.make_tensor_value_info("m", TensorProto.FLOAT, None))
    with pytest.raises(ExportError, match="one input and one output"):
        add_uint8_io(two_outputs, ModelMeta())
    old = _affine_graph(1.0, 0.0)
    old.opset_import[0].version = 11
    with pytest.raises(ExportError, match="opset 11"):
        add_uint8_io(old, ModelMeta())

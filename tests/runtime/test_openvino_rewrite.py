"""The OpenVINO backend's space-to-depth rewrite of narrow output convolutions (backends/openvino_rewrite):
the rearranged kernel against a direct convolution (numpy + torch, independent of OpenVINO), the rewritten
OpenVINO model against the original one and against torch on graphs with conv pads, odd sizes, bias + Tanh
after it, the generator's own fp32 and int8 graphs, and what it leaves alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cyclegan_deploy.backends.openvino_rewrite import s2d_kernel

ov = pytest.importorskip("openvino")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from cyclegan_deploy.backends import load_backend  # noqa: E402
from cyclegan_deploy.backends.openvino import executed_precisions  # noqa: E402
from cyclegan_deploy.backends.openvino_rewrite import space_to_depth_narrow_convs  # noqa: E402


def space_to_depth(x: np.ndarray, b: int = 2) -> np.ndarray:
    """blocks_first: out[(by*b+bx)*C + c, i, j] = x[c, b*i+by, b*j+bx] (ONNX SpaceToDepth)."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h // b, b, w // b, b).transpose(0, 3, 5, 1, 2, 4).reshape(n, b * b * c, h // b, w // b)


def depth_to_space(y: np.ndarray, b: int = 2) -> np.ndarray:
    n, c4, h, w = y.shape
    c = c4 // (b * b)
    return y.reshape(n, b, b, c, h, w).transpose(0, 3, 4, 1, 5, 2).reshape(n, c, h * b, w * b)


@pytest.mark.parametrize("k", [3, 5, 7, 9])
@pytest.mark.parametrize("size", [(20, 26), (21, 27), (19, 24)])
def test_s2d_kernel_is_the_same_convolution(k: int, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(k)
    w = rng.standard_normal((3, 5, k, k)).astype(np.float32)
    x = rng.standard_normal((2, 5, *size)).astype(np.float32)
    direct = F.conv2d(torch.from_numpy(x), torch.from_numpy(w)).numpy()
    xp = np.pad(x, ((0, 0), (0, 0), (0, size[0] % 2), (0, size[1] % 2)))  # even, zeros past the end
    y = depth_to_space(F.conv2d(torch.from_numpy(space_to_depth(xp)), torch.from_numpy(s2d_kernel(w))).numpy())
    assert s2d_kernel(w).shape == (12, 20, (k + 1) // 2, (k + 1) // 2)
    np.testing.assert_allclose(y[:, :, :direct.shape[2], :direct.shape[3]], direct, atol=2e-4)
    assert y.shape[2] - direct.shape[2] == size[0] % 2  # the crop the rewrite adds is exactly the odd row


def test_s2d_kernel_refuses_even_kernels() -> None:
    with pytest.raises(ValueError, match="odd square"):
        s2d_kernel(np.zeros((3, 4, 4, 4), np.float32))


def conv_graph(path: Path, cout: int = 3, k: int = 7, pads: int = 0, stride: int = 1, tail: tuple[str, ...] = (
        "bias", "Tanh"), cin: int = 8, seed: int = 0, dtype: type = np.float32, auto_pad: str | None = None
               ) -> tuple[Path, np.ndarray, np.ndarray]:
    """x (N, cin, H, W) -> Conv(k, pads, stride) [-> + bias] [-> Tanh]; dynamic N/H/W, as exported graphs."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((cout, cin, k, k)) / (cin * k)).astype(dtype)
    b = rng.standard_normal(cout).astype(dtype)
    inits = [numpy_helper.from_array(w, "w")] + ([numpy_helper.from_array(b, "b")] if "bias" in tail else [])
    padding = {"auto_pad": auto_pad} if auto_pad else {"pads": [pads] * 4}
    nodes = [helper.make_node("Conv", ["x", "w", *(["b"] if "bias" in tail else [])], ["c"], **padding,
                              strides=[stride, stride])]
    out = "c"
    for i, op in enumerate(t for t in tail if t != "bias"):
        nodes.append(helper.make_node(op, [out], [f"t{i}"]))
        out = f"t{i}"
    nodes[-1].output[0] = "y"
    elem = TensorProto.FLOAT16 if dtype == np.float16 else TensorProto.FLOAT
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", elem, ["N", cin, "H", "W"])],
                              [helper.make_tensor_value_info("y", elem, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path, w, b


def run_ov(path: Path, x: np.ndarray, rewrite: bool) -> tuple[np.ndarray, list[str], object]:
    core = ov.Core()
    model = core.read_model(str(path))
    done = space_to_depth_narrow_convs(model) if rewrite else []
    model.reshape({model.inputs[0].get_any_name(): list(x.shape)})
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return compiled(x)[0], done, model


@pytest.mark.parametrize("k,pads", [(7, 0), (7, 3), (3, 1), (9, 0)])
@pytest.mark.parametrize("size", [(24, 32), (23, 31)])
def test_rewritten_model_matches_torch(tmp_path: Path, k: int, pads: int, size: tuple[int, int]) -> None:
    path, w, b = conv_graph(tmp_path / "g.onnx", k=k, pads=pads)
    x = np.random.default_rng(1).standard_normal((2, 8, *size)).astype(np.float32)
    want = torch.tanh(F.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), padding=pads)).numpy()
    got, done, model = run_ov(path, x, rewrite=True)
    assert len(done) == 1
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert model.outputs[0].get_any_name() == "y"  # the output keeps its name
    kinds = {op.get_type_name() for op in model.get_ordered_ops()}
    assert {"SpaceToDepth", "DepthToSpace"} <= kinds


def test_bias_and_tanh_move_before_depth_to_space(tmp_path: Path) -> None:
    """So OpenVINO fuses them into the convolution as before: the Tanh reads the 12-channel conv's + bias."""
    path, *_ = conv_graph(tmp_path / "g.onnx")
    x = np.zeros((1, 8, 16, 16), np.float32)
    _, _, model = run_ov(path, x, rewrite=True)
    tanh = next(op for op in model.get_ordered_ops() if op.get_type_name() == "Tanh")
    assert tanh.get_output_partial_shape(0)[1].get_length() == 12
    add = tanh.input_value(0).get_node()
    assert add.get_type_name() == "Add" and add.input_value(0).get_node().get_type_name() == "Convolution"
    assert not [op for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"
                and op.get_output_partial_shape(0)[1].get_length() == 3]  # the old conv is gone


@pytest.mark.parametrize("tail", [(), ("bias",), ("Relu", "Sigmoid")])
def test_other_tails_stay_exact(tmp_path: Path, tail: tuple[str, ...]) -> None:
    path, *_ = conv_graph(tmp_path / "g.onnx", tail=tail)
    x = np.random.default_rng(2).standard_normal((1, 8, 21, 30)).astype(np.float32)
    before, _, _ = run_ov(path, x, rewrite=False)
    after, done, _ = run_ov(path, x, rewrite=True)
    assert done and after.shape == before.shape
    np.testing.assert_allclose(after, before, atol=1e-5)


@pytest.mark.parametrize("kwargs", [{"cout": 16}, {"stride": 2}, {"k": 1}, {"auto_pad": "SAME_UPPER"},
                                    {"auto_pad": "SAME_LOWER"}, {"dtype": np.float16}])
def test_wide_strided_pointwise_same_padded_and_f16_convs_are_left_alone(tmp_path: Path, kwargs: dict) -> None:
    """SAME_* pads are decided per shape (not in pads_begin/end); an f16 graph keeps its own convolutions."""
    path, *_ = conv_graph(tmp_path / "g.onnx", **kwargs)
    x = np.random.default_rng(5).standard_normal((1, 8, 21, 30)).astype(kwargs.get("dtype", np.float32))
    before, _, _ = run_ov(path, x, rewrite=False)
    after, done, model = run_ov(path, x, rewrite=True)
    assert done == [] and after.shape == before.shape
    np.testing.assert_array_equal(after, before)
    assert "SpaceToDepth" not in {op.get_type_name() for op in model.get_ordered_ops()}


def test_backend_rewrites_the_generators_output_conv(tiny_onnx: Path) -> None:
    """fp32 graph: the rewrite is on by default, names the output conv, and changes nothing but rounding."""
    x = np.random.default_rng(3).uniform(-1, 1, (1, 3, 36, 44)).astype(np.float32)
    on = load_backend(tiny_onnx, "openvino", precision="f32")
    off = load_backend(tiny_onnx, "openvino", precision="f32", space_to_depth=False)
    assert len(on.rewritten) == 1 and off.rewritten == []
    np.testing.assert_allclose(on(x), off(x), atol=1e-5)


def test_int8_graph_keeps_its_int8_convolutions(tiny_onnx: Path, tmp_path: Path) -> None:
    """The export's int8 graph keeps the output conv float: it is rewritten, the quantized ones still run int8
    and the outputs agree with the unrewritten graph."""
    nncf = pytest.importorskip("nncf")
    from test_openvino_precision import with_int8_card

    model = onnx.load(str(tiny_onnx))
    last = [n.name for n in model.graph.node if n.op_type == "Conv"][-1]
    rng = np.random.default_rng(0)
    calib = [rng.uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32) for _ in range(8)]
    name = model.graph.input[0].name
    quantized = nncf.quantize(model, nncf.Dataset(calib, lambda x: {name: x}), subset_size=8,
                              ignored_scope=nncf.IgnoredScope(names=[last]))
    path = with_int8_card(quantized, tmp_path / "g_AtoB.int8.onnx")
    on, off = (load_backend(path, "openvino", space_to_depth=flag) for flag in (True, False))
    assert len(on.rewritten) == 1
    assert on.precision == off.precision == "int8"
    ran_on, ran_off = (executed_precisions(next(iter(b._compiled.values())).model) for b in (on, off))
    int8 = ("u8", "i8")
    assert sum(ran_on.get(p, 0) for p in int8) == sum(ran_off.get(p, 0) for p in int8) > 0
    assert ran_on.get("f32") == ran_off.get("f32") == 1  # the output conv, float in both
    x = calib[0]
    np.testing.assert_allclose(on(x), off(x), atol=1e-4)


def test_f16_compressed_ir_weights_are_rewritten_too(tmp_path: Path) -> None:
    """An OpenVINO IR saved with compress_to_fp16 holds the weights as f16 Constant -> Convert."""
    path, *_ = conv_graph(tmp_path / "g.onnx")
    core = ov.Core()
    ov.save_model(core.read_model(str(path)), str(tmp_path / "g.xml"), compress_to_fp16=True)
    x = np.random.default_rng(4).standard_normal((1, 8, 19, 26)).astype(np.float32)
    before, _, _ = run_ov(tmp_path / "g.xml", x, rewrite=False)
    after, done, _ = run_ov(tmp_path / "g.xml", x, rewrite=True)
    assert len(done) == 1
    np.testing.assert_allclose(after, before, atol=1e-5)


def test_a_failed_rewrite_runs_the_graph_as_exported_and_says_so(tiny_onnx: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from cyclegan_deploy.backends import openvino as ovb

    def broken(model):
        model.get_ordered_ops()[-1].set_friendly_name("half-done")  # in place, as a real failure could leave it
        raise RuntimeError("Check 'quotient' failed\nC++ trace")

    x = np.random.default_rng(6).uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32)
    want = load_backend(tiny_onnx, "openvino", precision="f32", space_to_depth=False)(x)
    monkeypatch.setattr(ovb, "space_to_depth_narrow_convs", broken)
    with pytest.warns(UserWarning, match="space-to-depth rewrite skipped .Check 'quotient' failed.; running"):
        backend = load_backend(tiny_onnx, "openvino", precision="f32")
    assert backend.rewritten == [] and backend.rewrite_note.startswith("space-to-depth rewrite skipped")
    np.testing.assert_array_equal(backend(x), want)


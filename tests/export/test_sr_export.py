"""Super-resolution generators through export: dynamic N/H/W with (N, 3, sH, sW) outputs, PixelShuffle as
DepthToSpace, the card's value ranges in the graph and in the parity gate, FP16, `cgdeploy export` of a
Real-ESRGAN-style file, and a translated image at 4x its size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from cli_checks import one_error, run_cli  # noqa: E402

from cyclegan_deploy.artifacts import read_card  # noqa: E402
from cyclegan_deploy.cli import main  # noqa: E402
from cyclegan_deploy.errors import ParityError  # noqa: E402
from cyclegan_deploy.export.onnx import check_graph, export_onnx  # noqa: E402
from cyclegan_deploy.export.validate import ort_session, sample_images, validate_candidate, validate_onnx  # noqa: E402
from cyclegan_deploy.frames import to_model  # noqa: E402
from cyclegan_deploy.metadata import CARD_KEY, ModelMeta  # noqa: E402
from cyclegan_deploy.train.models import seeded_generator  # noqa: E402
from cyclegan_deploy.train.registry import GeneratorConfig  # noqa: E402

ARCHS = ("rrdbnet_x4", "srresnet_x4")


def tiny_sr(arch: str, seed: int = 0) -> tuple[torch.nn.Module, GeneratorConfig]:
    cfg = GeneratorConfig(arch=arch, ngf=8, n_blocks=2, grow=4)
    model = seeded_generator(cfg, seed)
    if arch.startswith("rrdbnet"):  # centre the outputs in [0, 1] so that the clamp does not hide differences
        with torch.no_grad():
            model.conv_last.bias += 0.5
    return model, cfg


@pytest.fixture(scope="module")
def sr_graphs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[torch.nn.Module, ModelMeta, Path]]:
    """arch -> (model, card, FP32 graph), exported once."""
    out = {}
    for arch in ARCHS:
        model, cfg = tiny_sr(arch)
        meta = cfg.to_meta(source=f"{arch}.pth")
        out[arch] = (model, meta, export_onnx(model, meta, tmp_path_factory.mktemp(arch) / "g_AtoB.onnx"))
    return out


@pytest.mark.parametrize(("arch", "upsampler"), [("rrdbnet_x4", "Resize"), ("srresnet_x4", "DepthToSpace")])
def test_graph_is_dynamic_with_4x_outputs(sr_graphs, arch: str, upsampler: str) -> None:
    report = check_graph(sr_graphs[arch][2])
    assert report.ok and report.op_counts[upsampler] == 2 and not report.pad_modes
    assert report.inputs == {"input": ["batch", 3, "height", "width"]}
    assert report.outputs == {"output": ["batch", 3, "4*height", "4*width"]}


@pytest.mark.parametrize(("arch", "out_range"), [("rrdbnet_x4", [0.0, 1.0]), ("srresnet_x4", [-1.0, 1.0])])
def test_onnx_card_carries_scale_and_ranges(sr_graphs, arch: str, out_range: list[float]) -> None:
    card = read_card(sr_graphs[arch][2])
    assert (card.arch, card.family, card.scale, card.multiple) == (arch, arch.split("_")[0], 4, 1)
    assert (card.input_range, card.output_range) == ([0.0, 1.0], out_range)


@pytest.mark.parametrize("arch", ARCHS)
def test_parity_at_two_sizes_with_4x_outputs(sr_graphs, tmp_path: Path, arch: str) -> None:
    model, meta, path = sr_graphs[arch]
    report = validate_onnx(model, meta, path, sizes=[(16, 16), (20, 28)], report_path=tmp_path / "p.json",
                           echo=False)
    assert report.passed and report.max_abs < 1e-4
    assert [c.shape for c in report.cases] == [[2, 3, 64, 64], [2, 3, 80, 112]]
    assert report.max_uint8_diff <= 1 and report.cases[0].mean_abs > 0  # outputs not all clamped alike
    x = to_model(sample_images(1, 17, 23, seed=5), meta.input_range)  # odd sizes, unlike the trace's 64x96
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    out = ort_session(path).run(None, {"input": x})[0]
    assert out.shape == ref.shape == (1, 3, 68, 92) and np.abs(out - ref).max() < 1e-4


def test_upsampler_decomposition_is_caught(sr_graphs, tmp_path: Path) -> None:
    """An SRResNet card on a graph without DepthToSpace (PixelShuffle lowered to reshapes) fails the checks."""
    proto = onnx.load(str(sr_graphs["rrdbnet_x4"][2]))
    prop = next(p for p in proto.metadata_props if p.key == CARD_KEY)
    card = json.loads(prop.value)
    prop.value = json.dumps({**card, "family": "srresnet", "arch": "srresnet_x4"})
    bad = tmp_path / "bad.onnx"
    onnx.save_model(proto, str(bad))
    assert any("no DepthToSpace node in an SRResNet" in p for p in check_graph(bad, raise_on_error=False).problems)


def test_gate_refuses_outputs_that_are_not_the_cards_scale(sr_graphs, tmp_path: Path) -> None:
    model, meta, path = sr_graphs["srresnet_x4"]

    def half_size(x: np.ndarray) -> np.ndarray:  # a graph whose upsampling froze or lost a stage
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()[..., ::2, ::2]

    with pytest.raises(ParityError, match=r"onnxruntime-cpu returned 2x3x32x32 for a 2x3x16x16 batch; the card "
                                          r"\(scale 4\) expects 2x3x64x64"):
        validate_candidate(model, meta, half_size, artifact=path, candidate="onnxruntime-cpu", precision="fp32",
                           sizes=[(16, 16)], report_path=tmp_path / "p.json", echo=False)


def test_real_esrgan_x2_file_exports_end_to_end(tmp_path: Path) -> None:
    """`cgdeploy export RealESRGAN_x2plus-like.pth -o out --fp16`: params_ema-wrapped, module.-prefixed."""
    model, _ = tiny_sr("rrdbnet_x2")
    src = tmp_path / "RealESRGAN_x2tiny.pth"
    torch.save({"params_ema": {f"module.{k}": v for k, v in model.state_dict().items()}}, src)
    out = tmp_path / "out"
    assert main(["export", str(src), "-o", str(out), "--fp16"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["g_AtoB.fp16.onnx", "g_AtoB.fp16.parity.json",
                                                     "g_AtoB.fp16.safety.json", "g_AtoB.onnx", "g_AtoB.parity.json"]
    card = read_card(out / "g_AtoB.onnx")
    assert (card.arch, card.scale, card.multiple, card.input_range, card.output_range, card.source) == (
        "rrdbnet_x2", 2, 2, [0.0, 1.0], [0.0, 1.0], src.name)
    for name in ("g_AtoB.parity.json", "g_AtoB.fp16.parity.json"):
        report = json.loads((out / name).read_text())
        assert report["passed"] and [c["shape"][2:] for c in report["cases"]] == [[128, 128], [96, 160]]
    # the pixel-unshuffle at a size that is neither the trace's nor a multiple of 4
    x = to_model(sample_images(1, 18, 26, seed=2), card.input_range)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    for graph, tol in (("g_AtoB.onnx", 1e-4), ("g_AtoB.fp16.onnx", 1e-2)):
        y = ort_session(out / graph).run(None, {"input": x})[0]
        assert y.shape == (1, 3, 36, 52) and np.abs(y - ref).max() < tol
    safety = json.loads((out / "g_AtoB.fp16.safety.json").read_text())
    assert safety["verdict"].startswith("FP16 verdict (norm fp32): safe") and "largest activation" in safety["verdict"]
    assert safety["activations"][0]["layer"].startswith("body")  # the residual trunk grows most


def test_bad_sr_file_is_one_cli_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, _ = tiny_sr("rrdbnet_x4")
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("conv_hr.")}
    src = tmp_path / "RealESRGAN_x4plus.pth"
    torch.save({"params_ema": state}, src)
    code, _, err = run_cli(capsys, "export", src, "-o", tmp_path / "out")
    assert code == 1
    one_error(err, str(src), "missing key(s): conv_hr.weight")
    assert not (tmp_path / "out").exists()


def test_translated_image_is_4x_its_size(sr_graphs, tmp_path: Path) -> None:
    from PIL import Image

    from cyclegan_deploy.backends import load_backend
    from cyclegan_deploy.images import translate_images

    model, meta, path = sr_graphs["rrdbnet_x4"]
    src = tmp_path / "in"
    src.mkdir()
    rgb = sample_images(1, 10, 13, seed=4)[0]
    Image.fromarray(rgb).save(src / "a.png")
    with load_backend(path, backend="onnxruntime", device="cpu") as backend:
        report = translate_images(src, tmp_path / "out", backend)
    assert [p.name for p in report.written] == ["a.png"]
    got = np.asarray(Image.open(tmp_path / "out" / "a.png"))
    assert got.shape == (40, 52, 3)
    # uint8 -> [0, 1] in, [0, 1] -> uint8 out: the card's ranges, not CycleGAN's [-1, 1]
    with torch.no_grad():
        ref = model(torch.from_numpy(rgb.transpose(2, 0, 1)[None].astype(np.float32) / 255)).numpy()[0]
    want = np.rint(np.clip(ref, 0, 1) * 255).transpose(1, 2, 0)
    assert np.abs(got.astype(int) - want).max() <= 1


def test_int8_export_of_an_sr_generator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`export --int8` on a x4 RRDBNet: NNCF's QDQ graph, calibrated on the card's [0, 1] input range, passes its
    gate and returns 4x outputs; the guard's PSNR is measured on the card's [0, 1] output range."""
    pytest.importorskip("nncf")
    from PIL import Image

    model, _ = tiny_sr("rrdbnet_x4")
    src = tmp_path / "tiny_x4.pth"
    torch.save({"params_ema": model.state_dict()}, src)
    calib = tmp_path / "calib"
    calib.mkdir()
    for i, img in enumerate(sample_images(8, 48, 64, seed=3)):  # smooth image-like frames, uint8 (H, W, 3)
        Image.fromarray(img).save(calib / f"{i}.png")
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, "export", src, "-o", out, "--int8", "--calib", calib, "--calib-size", "6",
                                "--int8-min-psnr", "30")
    assert code == 0, err
    assert "parity PASS g_AtoB.int8.onnx" in stdout
    card = read_card(out / "g_AtoB.int8.onnx")
    assert (card.precision, card.scale, card.input_range, card.output_range) == ("int8", 4, [0.0, 1.0], [0.0, 1.0])
    ops = {n.op_type for n in onnx.load(str(out / "g_AtoB.int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Resize"} <= ops
    x = to_model(sample_images(1, 20, 28, seed=4), card.input_range)
    y = ort_session(out / "g_AtoB.int8.onnx").run(None, {"input": x})[0]
    assert y.shape == (1, 3, 80, 112) and y.min() >= 0.0 and y.max() <= 1.0
    assert card.extra["int8"]["psnr_vs_fp32_db"] >= 30.0

"""`cgdeploy export --int8`: QDQ structure, the accuracy guard, the int8 parity gate, calibration sources, and
the INT8 TensorRT path up to the TensorRT calls (a stand-in module records them)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from cli_checks import one_error, run_cli
from trt_fakes import fake_tensorrt

from cyclegan_deploy.artifacts import read_card
from cyclegan_deploy.errors import DataError, ExportError, ParityError

pytest.importorskip("nncf")
onnx = pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def small_meta(tiny_resnet):
    _, meta = tiny_resnet
    meta = type(meta)(**{**meta.__dict__})
    meta.train_size = 32  # calibration images at 32x32 keep every quantization run well under a second
    return meta


@pytest.fixture(scope="module")
def int8_graph(tiny_onnx: Path, small_meta, tmp_path_factory) -> tuple[Path, object]:
    from cyclegan_deploy.export.calibration import built_in
    from cyclegan_deploy.export.int8 import export_int8

    out = tmp_path_factory.mktemp("int8") / "g_AtoB.int8.onnx"
    path, result = export_int8(tiny_onnx, out, built_in(small_meta, 8), min_psnr=10.0, echo=lambda _: None)
    return path, result


def _producers(model) -> dict:
    return {out: n for n in model.graph.node for out in n.output}


def _input_source(node, producers):
    """The node feeding a conv's data input, looking through a Pad."""
    src = producers.get(node.input[0])
    return producers.get(src.input[0]) if src is not None and src.op_type == "Pad" else src


def test_qdq_structure(int8_graph, tiny_onnx: Path) -> None:
    from onnx import TensorProto, numpy_helper

    path, _ = int8_graph
    model, fp32 = onnx.load(str(path)), onnx.load(str(tiny_onnx))
    producers = _producers(model)
    inits = {i.name: i for i in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    *inner, last = convs
    assert len(convs) == sum(n.op_type in ("Conv", "ConvTranspose") for n in fp32.graph.node)
    for conv in inner:  # weight int8 behind a DequantizeLinear, input through a Q/DQ pair
        weight_dq = producers[conv.input[1]]
        assert weight_dq.op_type == "DequantizeLinear", conv.name
        assert inits[weight_dq.input[0]].data_type == TensorProto.INT8
        assert _input_source(conv, producers).op_type == "DequantizeLinear", conv.name
    # the output conv (into Tanh) stays float: FP32 weight initializer, no Q/DQ in front
    assert last.input[1] in inits and inits[last.input[1]].data_type == TensorProto.FLOAT
    assert _input_source(last, producers).op_type != "DequantizeLinear"
    norms = [n for n in model.graph.node if n.op_type == "InstanceNormalization"]
    assert len(norms) == sum(n.op_type == "InstanceNormalization" for n in fp32.graph.node) > 0
    assert all(producers[n.input[0]].op_type in ("Conv", "ConvTranspose") for n in norms)  # float in
    # TensorRT's explicit quantization: signed int8, zero point 0, everywhere
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zp = inits[node.input[2]]
            assert zp.data_type == TensorProto.INT8 and not numpy_helper.to_array(zp).any(), node.name


def test_onnxruntime_runs_the_int8_graph(int8_graph, tiny_onnx: Path) -> None:
    """The signed rewrite keeps the graph's recorded tensor types consistent (ORT refused a uint8 value_info)."""
    import onnxruntime as ort

    from cyclegan_deploy.bench.metrics import make_input
    from cyclegan_deploy.quality import psnr

    path, result = int8_graph
    x = make_input(1, 32, 32)
    outs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
            for p in (tiny_onnx, path)]
    assert 15.0 < psnr(outs[0], outs[1]) < 90.0  # quantized (not bit-exact), yet the same picture


def test_card_records_calibration_and_guard(int8_graph) -> None:
    path, result = int8_graph
    card = read_card(path)
    assert card.precision == "int8"
    info = card.extra["int8"]
    assert info["calibration"]["kind"] == "built-in" and len(info["calibration"]["sha256"]) == 64
    assert info["calibration"]["calibration_images"] + info["calibration"]["holdout_images"] >= 8
    assert info["psnr_vs_fp32_db"] == round(result.psnr_db, 2) and info["min_psnr_db"] == 10.0
    assert info["always_float"][0]["module"] == "model.19"  # the output conv of resnet_2blocks
    assert info["kept_float"] == [] and info["guard_steps"][0]["kept_float"] == []


def test_guard_returns_the_fragile_layer_to_float(small_meta, tmp_path: Path) -> None:
    """model.4 is made fragile for int8: its input channel 0 is always 0 (conv weights and bias zero, so instance
    norm gives 0) but carries weights of 1e3, so per-channel weight scales round every other weight to 0."""
    import torch

    from cyclegan_deploy.export.calibration import built_in
    from cyclegan_deploy.export.int8 import quantize_guarded
    from cyclegan_deploy.export.onnx import export_onnx
    from cyclegan_deploy.train.models import GeneratorConfig, seeded_generator

    cfg = GeneratorConfig(arch="resnet_2blocks", ngf=8, n_blocks=2)
    model = seeded_generator(cfg, seed=0)
    with torch.no_grad():
        model.model[1].weight[0].zero_()
        model.model[1].bias[0] = 0.0  # exactly 0 in, so the norm's (x - mean) is exactly 0: no rounding noise
        model.model[4].weight[:, 0] = 1e3
    path = export_onnx(model, small_meta, tmp_path / "fragile.onnx")
    cal = built_in(small_meta, 8)
    lines: list[str] = []
    result = quantize_guarded(onnx.load(str(path)), cal.calib, cal.holdout, 30.0, echo=lines.append)
    assert result.steps[0]["psnr_db"] < 30.0  # all-int8 fails the floor ...
    assert [k["module"] for k in result.kept_float] == ["model.4"]  # ... and exactly the fragile layer goes back
    assert result.sensitivity[0]["node"] == result.kept_float[0]["node"]
    assert result.psnr_db >= 30.0 and any("model.4" in line for line in lines)


def test_guard_gives_up_when_the_floor_is_out_of_reach(tiny_onnx: Path, small_meta) -> None:
    from cyclegan_deploy.export.calibration import built_in
    from cyclegan_deploy.export.int8 import quantize_guarded

    cal = built_in(small_meta, 4)
    with pytest.raises(ExportError, match="even with all .* convolutions back in float"):
        quantize_guarded(onnx.load(str(tiny_onnx)), cal.calib, cal.holdout, 199.0, echo=lambda _: None)


def test_int8_parity_gate_fails_on_a_corrupted_graph(int8_graph, tiny_resnet, small_meta, tmp_path: Path) -> None:
    from onnx import numpy_helper

    from cyclegan_deploy import artifacts
    from cyclegan_deploy.export.calibration import built_in
    from cyclegan_deploy.export.pipeline import ExportResult, _int8_gate, gate

    model, _ = tiny_resnet
    path, _ = int8_graph
    proto = onnx.load(str(path))
    inits = {i.name: i for i in proto.graph.initializer}
    q = next(n for n in proto.graph.node if n.op_type == "QuantizeLinear" and n.input[0] != "input")
    name = q.input[1]  # the scale its DequantizeLinear shares
    scale = numpy_helper.to_array(inits[name])
    inits[name].CopyFrom(numpy_helper.from_array(scale * 40, name))  # 40x coarser steps on one activation
    bad = tmp_path / "g_AtoB.int8.onnx"
    onnx.save(proto, str(bad))
    holdout = built_in(small_meta, 8).holdout
    good = _int8_gate(model, small_meta, path, holdout, 30.0)  # the untouched graph passes the same gate
    assert good.passed and good.min_psnr_db >= 30.0
    with pytest.raises(ParityError, match="PSNR"):
        gate(lambda: _int8_gate(model, small_meta, bad, holdout, 30.0), bad, ExportResult())
    assert not bad.exists() and artifacts.rejected_path(bad).exists()
    report = json.loads(artifacts.parity_path(bad).read_text())
    assert report["passed"] is False and report["precision"] == "int8"


def _write_images(folder: Path, n: int, seed: int = 0, size: tuple[int, int] = (40, 52)) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"img{i:02d}.png"
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_calibration_folder_skips_unreadable_files(tmp_path: Path, small_meta) -> None:
    from PIL import Image

    from cyclegan_deploy.export.calibration import collect

    folder = tmp_path / "calib"
    good = _write_images(folder, 5)
    (folder / "nested").mkdir()
    Image.fromarray(np.zeros((30, 60, 3), np.uint8) + 90).save(folder / "nested" / "x.jpg")
    (folder / "garbage.png").write_bytes(b"not a png")
    (folder / "notes.txt").write_text("hello")
    lines: list[str] = []
    cal = collect(folder, tmp_path / "none.pth", small_meta, 4, echo=lines.append)
    assert cal.kind == "folder" and len(cal.calib) + len(cal.holdout) == 6
    assert all(x.shape == (1, 3, 32, 32) and x.dtype == np.float32 for x in cal.calib + cal.holdout)
    assert sorted(Path(s.split(" (")[0]).name for s in cal.skipped) == ["garbage.png", "notes.txt"]
    assert any("garbage.png" in line for line in lines) and "2 unreadable" in lines[-1]
    assert collect(folder, tmp_path / "none.pth", small_meta, 4, echo=lambda _: None).sha256 == cal.sha256
    _write_images(folder, 1, seed=7)  # img00.png changes
    assert good[0].exists() and collect(folder, tmp_path / "x", small_meta, 4, echo=lambda _: None).sha256 != cal.sha256


def test_calibration_folder_with_too_few_images_is_refused(tmp_path: Path, small_meta) -> None:
    from cyclegan_deploy.export.calibration import collect

    folder = tmp_path / "calib"
    _write_images(folder, 1)
    (folder / "bad.jpg").write_bytes(b"\xff\xd8broken")
    with pytest.raises(DataError, match=r"calib: 1 readable image.*1 unreadable.*--calib DIR"):
        collect(folder, tmp_path / "none.pth", small_meta, 4, echo=lambda _: None)


def test_calibration_finds_the_runs_training_data(tmp_path: Path, small_meta) -> None:
    from cyclegan_deploy.export.calibration import collect, training_folder

    data, run = tmp_path / "data", tmp_path / "runs" / "r1"
    _write_images(data / "trainA", 3)
    _write_images(data / "trainB", 3, seed=1)
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"dataroot": "data", "model": "cyclegan", "direction": "AtoB"}))
    assert training_folder(run, "AtoB") == (data / "trainA", None)
    assert training_folder(run / "latest_net_G_B.pth", "BtoA") == (data / "trainB", None)
    (run / "config.json").write_text(json.dumps({"dataroot": str(data), "model": "cyclegan", "direction": "BtoA"}))
    assert training_folder(run, "AtoB") == (data / "trainB", None)  # the reference swaps domains for BtoA
    (data / "train").mkdir()
    (run / "config.json").write_text(json.dumps({"dataroot": str(data), "model": "pix2pix"}))
    assert training_folder(run, "AtoB") == (data / "train", "left")
    (run / "config.json").write_text(json.dumps({"dataroot": str(tmp_path / "gone"), "model": "cyclegan"}))
    lines: list[str] = []
    assert collect(None, run, small_meta, 4, echo=lines.append).kind == "built-in"
    assert "built-in dataset" in lines[0]


def test_export_int8_cli(tiny_generator_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    calib = tmp_path / "calib"
    _write_images(calib, 8)
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, "export", tiny_generator_file, "-o", out, "--int8", "--calib", calib,
                                "--calib-size", "6", "--int8-min-psnr", "15")
    assert code == 0, err
    assert "int8 calibration: 6 calibration + 2 held-out images" in stdout
    assert "parity PASS g_AtoB.int8.onnx" in stdout
    assert read_card(out / "g_AtoB.int8.onnx").precision == "int8"
    assert json.loads((out / "g_AtoB.int8.parity.json").read_text())["tolerance"] == {"min_psnr_db": 15.0}


@pytest.mark.parametrize("args, message", [
    (["--calib", "DIR"], "only apply with --int8"),
    (["--int8", "--calib", "missing"], "--calib .*missing: no such folder"),
    (["--int8", "--fp16", "--engine"], "--engine builds from one graph"),
    (["--int8", "--int8-min-psnr", "0"], "--int8-min-psnr 0"),
])
def test_export_int8_bad_options(tiny_generator_file: Path, tmp_path: Path, args: list[str], message: str,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    import re

    args = [str(tmp_path) if a == "DIR" else str(tmp_path / a) if a == "missing" else a for a in args]
    code, _, err = run_cli(capsys, "export", tiny_generator_file, "-o", tmp_path / "out", *args)
    assert code == 1 and re.search(message, one_error(err, alone=True)), err
    assert not (tmp_path / "out").exists()


# ---- INT8 TensorRT engine, up to the TensorRT calls ----------------------------------------------------------

def test_engine_source_check_refuses_uint8_quantizers(int8_graph, tmp_path: Path) -> None:
    from onnx import numpy_helper

    from cyclegan_deploy.export.tensorrt import check_engine_source

    path, _ = int8_graph
    assert check_engine_source(path) == "int8"
    proto = onnx.load(str(path))
    node = next(n for n in proto.graph.node if n.op_type == "QuantizeLinear")
    zp = next(i for i in proto.graph.initializer if i.name == node.input[2])
    zp.CopyFrom(numpy_helper.from_array(np.zeros((), np.uint8), zp.name))
    bad = tmp_path / "g_AtoB.int8.onnx"
    onnx.save(proto, str(bad))
    with pytest.raises(ExportError, match="UINT8 zero point .*symmetric signed int8"):
        check_engine_source(bad)


def test_int8_engine_build_up_to_tensorrt(int8_graph, small_meta, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from cyclegan_deploy import engine_sidecar
    from cyclegan_deploy.export.tensorrt import BuildOptions, build_engine, derive_profile

    calls: list[tuple] = []
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(calls))
    monkeypatch.setattr(engine_sidecar, "gpu_info", lambda device=0: ("Fake GPU", "9.0"))
    path, _ = int8_graph
    plan = tmp_path / "g_AtoB.plan"
    sidecar = build_engine(path, plan, derive_profile(small_meta), BuildOptions(workspace_gb=1))
    assert ("create_network", 1 << 3) in calls  # strongly typed: the Q/DQ pairs set the int8 precision
    assert ("parse", str(path)) in calls
    assert not [c for c in calls if c[0] == "set_flag"]  # no precision builder flags (gone in 11.x)
    assert sidecar.precision == "int8" and sidecar.source_onnx == "g_AtoB.int8.onnx"
    assert plan.read_bytes() == b"engine-bytes"


def test_export_int8_engine_without_tensorrt(tiny_generator_file: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from cyclegan_deploy.export.tensorrt import tensorrt_unavailable

    if not tensorrt_unavailable():
        pytest.skip("TensorRT is installed here")
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, "export", tiny_generator_file, "-o", out, "--int8", "--engine",
                                "--int8-min-psnr", "15", "--calib-size", "8")
    assert code == 1 and "TensorRT is not installed" in one_error(err)
    assert f"trtexec --onnx={out / 'g_AtoB.int8.onnx'}" in stdout and "--stronglyTyped" in stdout
    assert (out / "g_AtoB.int8.onnx").is_file() and not (out / "g_AtoB.plan").exists()


@pytest.mark.parametrize("refuses, expect", [(1, "rebuilt"), (2, "error")])
def test_refused_timing_cache_starts_an_empty_one_or_fails(int8_graph, small_meta, tmp_path: Path, refuses: int,
                                                          expect: str, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """TensorRT's set_timing_cache returns False (no exception) for a cache from another version or GPU."""
    from cyclegan_deploy import engine_sidecar
    from cyclegan_deploy.export.tensorrt import BuildOptions, build_engine, derive_profile

    calls: list[tuple] = []
    trt = fake_tensorrt(calls)
    answers = iter([False] * refuses + [True])

    class Config:
        builder_optimization_level = 0

        def create_timing_cache(self, data):
            calls.append(("create_timing_cache", bytes(data)))
            return object()

        def set_timing_cache(self, cache, ignore_mismatch):
            return next(answers)

        def __getattr__(self, name):
            return lambda *a, **k: types.SimpleNamespace(serialize=lambda: b"new-cache")

    trt.Builder.create_builder_config = lambda self: Config()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(engine_sidecar, "gpu_info", lambda device=0: ("Fake GPU", "9.0"))
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old-cache-from-another-gpu")
    path, _ = int8_graph
    options = BuildOptions(workspace_gb=1, timing_cache=cache)
    if expect == "error":
        with pytest.raises(ExportError, match="refused an empty timing cache"):
            build_engine(path, tmp_path / "g.plan", derive_profile(small_meta), options)
        return
    build_engine(path, tmp_path / "g.plan", derive_profile(small_meta), options)
    assert [c[1] for c in calls if c[0] == "create_timing_cache"] == [b"old-cache-from-another-gpu", b""]
    assert "was refused" in capsys.readouterr().out and cache.read_bytes() == b"new-cache"

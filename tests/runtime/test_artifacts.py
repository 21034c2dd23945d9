"""The artifact layer: kinds, derived names, cards for every kind (old cards too), precision from the card,
the one atomic writer's permissions under umask 022, and light imports of the runtime."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cyclegan_deploy import artifacts
from cyclegan_deploy.errors import ConfigError
from cyclegan_deploy.metadata import ModelMeta, canonical_precision


def test_kinds_and_derived_names(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    assert [artifacts.kind_of(tmp_path / n).name for n in ("g.onnx", "g.fp16.onnx", "g.xml", "g.plan", "g.engine",
                                                            "g.pth", "g.pt")] == [
        "onnx", "onnx", "openvino-ir", "tensorrt-engine", "tensorrt-engine", "torch", "torch"]
    assert artifacts.kind_of(run).name == "torch"
    with pytest.raises(ConfigError, match=r"model.bin: unknown model file type '.bin'"):
        artifacts.kind_of(tmp_path / "model.bin")
    g = tmp_path / "g_AtoB.onnx"
    names = {
        artifacts.graph_path(g, "fp16"): "g_AtoB.fp16.onnx", artifacts.graph_path(g, "int8"): "g_AtoB.int8.onnx",
        artifacts.parity_path(g): "g_AtoB.parity.json",
        artifacts.parity_path(tmp_path / "g_AtoB.fp16.onnx"): "g_AtoB.fp16.parity.json",
        artifacts.parity_path(tmp_path / "g_AtoB.xml"): "g_AtoB.xml.parity.json",
        artifacts.parity_path(tmp_path / "g_AtoB.plan"): "g_AtoB.plan.parity.json",
        artifacts.safety_path(tmp_path / "g_AtoB.fp16.onnx"): "g_AtoB.fp16.safety.json",
        artifacts.rejected_path(tmp_path / "g_AtoB.fp16.onnx"): "g_AtoB.fp16.rejected.onnx",
        artifacts.rejected_path(tmp_path / "g_AtoB.plan"): "g_AtoB.plan.rejected",
        artifacts.sidecar_path(tmp_path / "g_AtoB.engine"): "g_AtoB.engine.json",
        artifacts.sidecar_path(tmp_path / "g_AtoB.xml"): "g_AtoB.xml.json",
        artifacts.engine_path(tmp_path, "BtoA"): "g_BtoA.plan",
        artifacts.onnx_path(tmp_path, "AtoB", "fp16"): "g_AtoB.fp16.onnx",
    }
    assert {p.name: want for p, want in names.items()} == {want: want for want in names.values()}


def test_precision_vocabulary() -> None:
    assert [canonical_precision(p) for p in ("f32", "FP32", "f16", "half", "bf16", "int8")] == [
        "fp32", "fp32", "fp16", "fp16", "bf16", "int8"]
    with pytest.raises(ConfigError, match="--precision .fp8.: use fp32, fp16, bf16, int8"):
        canonical_precision("fp8")


def test_card_without_scale_or_ranges_loads_as_scale_1() -> None:
    """Cards written before the registry: no family/scale/ranges, the reference normalisation as mean/std."""
    old = {"arch": "resnet_9blocks", "ngf": 64, "n_blocks": 9, "multiple": 4, "norm_mean": 0.5, "norm_std": 0.5,
           "precision": "fp16"}
    card = ModelMeta.from_dict(old)
    assert card.scale == 1 and card.input_range == [-1.0, 1.0] and card.output_range == [-1.0, 1.0]
    assert card.family == "" and card.precision == "fp16"
    assert ModelMeta.from_dict({"norm_mean": 0.0, "norm_std": 1.0}).input_range == [0.0, 1.0]
    assert ModelMeta.from_json(card.to_json()) == card  # survives JSON unchanged
    with pytest.raises(ConfigError, match="scale 0"):
        ModelMeta.from_dict({"scale": 0})


def test_old_onnx_card_without_scale_runs(tiny_onnx: Path, tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from cyclegan_deploy.backends import load_backend

    proto = onnx.load(str(tiny_onnx))
    card = json.loads(next(p.value for p in proto.metadata_props if p.key == "cgdeploy.model_card"))
    for key in ("scale", "family", "input_range", "output_range"):
        card.pop(key)
    card.update(norm_mean=0.5, norm_std=0.5)
    for p in proto.metadata_props:
        if p.key == "cgdeploy.model_card":
            p.value = json.dumps(card)
    old = tmp_path / "old.onnx"
    onnx.save_model(proto, str(old))
    assert artifacts.read_card(old).scale == 1
    with load_backend(old, "onnxruntime", device="cpu") as backend:
        assert backend.meta.scale == 1 and backend(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 3, 32, 32)


def test_precision_comes_from_the_card_not_the_file_name(tiny_resnet, tiny_onnx: Path, tmp_path: Path) -> None:
    """An FP32 graph saved under an FP16-looking name is still gated (and labelled) as FP32."""
    pytest.importorskip("onnxruntime")
    from cyclegan_deploy.export.validate import validate_onnx

    misnamed = tmp_path / "g_AtoB.fp16.onnx"
    misnamed.write_bytes(tiny_onnx.read_bytes())
    assert artifacts.read_card(misnamed).precision == "fp32"
    model, meta = tiny_resnet
    report = validate_onnx(model, meta, misnamed, echo=False)
    assert report.precision == "fp32" and report.tolerance == {"max_abs": 1e-4}
    assert json.loads(artifacts.parity_path(misnamed).read_text())["precision"] == "fp32"


def test_ir_card_from_rt_info_without_sidecar(tiny_onnx: Path, tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    from cyclegan_deploy.export.openvino import export_openvino

    xml = export_openvino(tiny_onnx, tmp_path / "g_AtoB.xml", "f32")
    with_sidecar = artifacts.read_card(xml)
    artifacts.sidecar_path(xml).unlink()
    from_rt_info = artifacts.read_card(xml)
    assert from_rt_info == with_sidecar and from_rt_info.arch == "resnet_2blocks"


def test_sidecar_card_errors_name_the_file(tmp_path: Path) -> None:
    xml = tmp_path / "g.xml"
    xml.write_text("<net/>")
    artifacts.sidecar_path(xml).write_text("{not json")
    with pytest.raises(ConfigError, match=r"g\.xml\.json: unreadable sidecar"):
        artifacts.read_card(xml)
    engine = tmp_path / "g.engine"
    engine.write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"g\.engine\.json: missing engine sidecar"):
        artifacts.read_card(engine)


def test_atomic_output_leaves_nothing_on_error(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError), artifacts.atomic_output(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    artifacts.write_json(target, {"psnr": float("inf"), "nan": float("nan"), "ok": [1.5]})
    assert json.loads(target.read_text()) == {"psnr": None, "nan": None, "ok": [1.5]}  # strict JSON


# ---- permissions under umask 022: every writer ----------------------------------------------------------

@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _modes(root: Path) -> dict[str, str]:
    """Every file/dir under root whose mode is not readable by group and others."""
    found = {}
    for p in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(p.stat().st_mode)
        need = 0o055 if p.is_dir() else 0o044
        if mode & need != need:
            found[str(p.relative_to(root))] = oct(mode)
    return found


def test_every_writer_honours_the_umask(umask_022, tmp_path: Path, tiny_resnet, tiny_onnx: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from cyclegan_deploy.engine_sidecar import EngineSidecar, write_sidecar
    from cyclegan_deploy.export.onnx import export_onnx
    from cyclegan_deploy.export.validate import validate_onnx
    from cyclegan_deploy.images import translate_images
    from cyclegan_deploy.sample_media import make_sample_video
    from cyclegan_deploy.train.checkpoints import atomic_save, save_generator
    from cyclegan_deploy.train.config import TrainConfig
    from cyclegan_deploy.train.runlog import LossLog, plot_losses, save_grid
    from cyclegan_deploy.train.synthetic import write_synthetic
    from cyclegan_deploy.video import VideoOptions, translate_video

    out = tmp_path / "out"
    model, meta = tiny_resnet
    artifacts.write_text(out / "a.txt", "x")
    with artifacts.atomic_dir(out / "folder") as d:
        (d / "inner.txt").write_text("x")
    save_generator(model, meta, out / "latest_net_G_A.pth")
    atomic_save({"x": torch.zeros(1)}, out / "latest.pt")
    TrainConfig().save(out / "run")
    log = LossLog(out / "run" / "losses.csv", ["G"])
    log.write(1, 1, 0.1, 0.0, {"G": 1.0})
    log.write(1, 2, 0.1, 0.1, {"G": 0.5})
    log.close()
    plot_losses(out / "run" / "losses.csv", out / "run" / "losses.png", ["G"])
    save_grid([[np.zeros((4, 4, 3), np.uint8)]], out / "run" / "grid.png")
    write_synthetic(out / "data", n_train=2, n_test=1, size=16)
    onnx_file = export_onnx(model, meta, out / "g_AtoB.onnx")
    validate_onnx(model, meta, onnx_file, sizes=[(32, 32)], batch=1, echo=False)
    write_sidecar(artifacts.sidecar_path(out / "g_AtoB.plan"), EngineSidecar(
        tensorrt_version="10.13.0.35", gpu_name="x", compute_capability="9.0",
        profile={"input_name": "input", "min": [1, 3, 32, 32], "opt": [1, 3, 32, 32], "max": [1, 3, 32, 32]},
        precision="fp32", source_onnx="g_AtoB.onnx", source_onnx_sha256="0", model_card={}))
    clip = make_sample_video(out / "clip.mp4", frames=3, size=(32, 32))
    from cyclegan_deploy.backends import load_backend

    with load_backend(tiny_onnx, "onnxruntime", device="cpu") as backend:
        translate_video(clip, out / "translated.mp4", backend, VideoOptions(progress=False))
        (out / "imgs").mkdir()
        from PIL import Image

        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(out / "imgs" / "a.png")
        translate_images(out / "imgs", out / "imgs_out", backend)
    from cyclegan_deploy.bench import BenchConfig, run_bench, write_outputs

    results = run_bench(BenchConfig(out_dir=out / "bench", onnx=tiny_onnx, specs=["onnxruntime"], sizes=[(32, 32)],
                                    warmup=1, repeats=3, max_seconds=1.0), log=lambda _: None)
    write_outputs(results, out / "bench")
    try:
        from cyclegan_deploy.export.openvino import export_openvino
    except ImportError:
        pass
    else:
        if pytest.importorskip("openvino"):
            export_openvino(onnx_file, out / "g_AtoB.xml", "f32")
    assert _modes(out) == {}


# ---- the runtime stays light --------------------------------------------------------------------------------

def test_runtime_imports_load_no_heavy_stack() -> None:
    code = ("import sys, cyclegan_deploy.cli, cyclegan_deploy.video, cyclegan_deploy.bench, cyclegan_deploy.images, "
            "cyclegan_deploy.artifacts, cyclegan_deploy.backends, cyclegan_deploy.engine_sidecar, "
            "cyclegan_deploy.scale.batch; "
            "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'openvino', 'tensorrt', 'av', 'ray', "
            "'cyclegan_deploy.export', 'cyclegan_deploy.train') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_runtime_modules_never_import_export_or_train_at_module_level() -> None:
    """Source check: in cyclegan_deploy/ (the runtime), `cyclegan_deploy.export`/`.train` are imported only
    inside functions (indented), and no backend imports another backend."""
    root = Path(__file__).resolve().parents[2] / "cyclegan_deploy"
    offenders = []
    for path in root.rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.startswith(("from cyclegan_deploy.export", "from cyclegan_deploy.train",
                                "import cyclegan_deploy.export", "import cyclegan_deploy.train")):
                offenders.append(f"{path.relative_to(root)}:{n}")
    backends = {"onnxruntime", "openvino", "torch", "tensorrt"}
    for name in backends:
        text = (root / "backends" / f"{name}.py").read_text()
        offenders += [f"backends/{name}.py imports backends.{other}" for other in backends - {name}
                      if f"cyclegan_deploy.backends.{other}" in text]
    assert offenders == []


def test_no_module_over_400_lines_without_saying_why() -> None:
    root = Path(__file__).resolve().parents[2]
    long = []
    for folder in ("cyclegan_deploy", "train", "export"):
        for path in (root / folder).rglob("*.py"):
            text = path.read_text()
            if text.count("\n") > 400 and "over 400 lines" not in text.split('"""')[1]:
                long.append(str(path.relative_to(root)))
    assert long == []


def test_commit_errors_name_the_target_not_the_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "results.csv"
    target.mkdir()  # a folder in the way: os.replace fails
    with pytest.raises(OSError) as info:
        artifacts.write_text(target, "x")
    assert info.value.filename == str(target)
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_stale_partials_of_dead_processes_are_swept_once_per_folder(tmp_path: Path) -> None:
    from cyclegan_deploy import outputs

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".g.partial-{dead.stdout.strip()}-abc.onnx"
    mine = tmp_path / f".g.partial-{os.getpid()}-xyz.onnx"
    stale.write_text("left by a killed run")
    mine.write_text("in use")
    assert outputs.clean_stale_partials(tmp_path / "g.onnx") == [stale]
    assert not stale.exists() and mine.exists()
    stale.write_text("again")
    assert outputs.clean_stale_partials(tmp_path / "g.onnx") == []  # swept once per process and folder


def test_lock_refuses_a_second_holder_and_is_released(tmp_path: Path) -> None:
    from cyclegan_deploy import outputs
    from cyclegan_deploy.errors import OutputError

    run = tmp_path / "run"
    code = ("import sys, time; from pathlib import Path; from cyclegan_deploy.outputs import locked\n"
            f"with locked(Path({str(run)!r})):\n    print('held', flush=True); time.sleep(30)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputError, match=rf"run: in use by another cgdeploy process \(PID {holder.pid}\)"):
            with outputs.locked(run):
                pass
    finally:
        holder.kill()
        holder.wait()
    with outputs.locked(run):  # the OS released the dead holder's lock
        pass
    assert not list(tmp_path.glob(".*lock"))

"""Distillation (GAN Compression's recipe) of a tiny CycleGAN teacher into a narrower ResNet student: losses fall
and the student comes closer to the teacher, exact resume, the student's card, the teacher hash check on
--resume, a plain folder of inputs, export + every CPU backend, and the one-line errors for bad teachers.

Everything is seeded and runs at 32x32 (teacher ngf 8 / 2 blocks, student ngf 4 / 1 block, 8 training images).
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_checks import leftovers, one_error, run_cli, sha256
from run_checks import ctrl_c_at

torch = pytest.importorskip("torch")

from cyclegan_deploy.train.checkpoints import load_generator, save_generator  # noqa: E402
from cyclegan_deploy.train.config import TrainConfig  # noqa: E402
from cyclegan_deploy.train.distill import (  # noqa: E402
    RESNET_FIRST_BLOCK,
    Distiller,
    card_config,
    distill_config,
    feature_pairs,
    generator_macs,
)
from cyclegan_deploy.train.evaluate import evaluate  # noqa: E402
from cyclegan_deploy.train.loop import (  # noqa: E402
    CHECKPOINT,
    DISTILL_EVAL,
    TrainResult,
    resume_config,
    seed_everything,
    train,
)
from cyclegan_deploy.train.registry import GeneratorConfig, build_generator  # noqa: E402
from cyclegan_deploy.train.synthetic import write_synthetic  # noqa: E402

N_TRAIN, N_TEST = 8, 4
TEACHER: dict[str, Any] = {"load_size": 32, "crop_size": 32, "ngf": 8, "ndf": 8, "netG": "resnet_2blocks",
                           "num_workers": 0, "samples": 2, "epochs": 2, "epochs_decay": 0, "seed": 3}
# 8 images x 3 epochs = 24 iterations; the load/crop sizes (32) come from the teacher run's config.json. At
# 2.5x the default lr the distillation L1 falls ~20% in those 24 steps (default lr: ~12%).
STUDENT: dict[str, Any] = {"ngf": 4, "n_blocks": 1, "ndf": 8, "num_workers": 0, "samples": 2, "epochs": 2,
                           "epochs_decay": 1, "save_every": 1, "lr": 0.0005}
STUDENT_CLI = ["--ngf", "4", "--n-blocks", "1", "--ndf", "8", "--epochs", "1", "--epochs-decay", "0",
               "--workers", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("syn") / "data", n_train=N_TRAIN, n_test=N_TEST, size=32, seed=1)


@pytest.fixture(scope="module")
def teacher_run(synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CycleGAN run dir (config.json, latest_net_G_A.pth, checkpoints/latest.pt) trained for 16 iterations."""
    run = tmp_path_factory.mktemp("teacher") / "run"
    train(TrainConfig.for_model("cyclegan", dataroot=str(synth), run_dir=str(run), **TEACHER))
    return run


def _student_cfg(teacher: Path, run: Path, **kw: Any) -> TrainConfig:
    return distill_config(teacher, run, **(STUDENT | kw))


@pytest.fixture(scope="module")
def student(teacher_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TrainResult, list[dict]]:
    """(run dir, result, the losses on_step saw) of an unsplit 24-iteration distillation."""
    run = tmp_path_factory.mktemp("student") / "run"
    seen: list[dict[str, float]] = []
    result = train(_student_cfg(teacher_run, run), on_step=lambda _i, losses: seen.append(dict(losses)))
    return run, result, seen


def _losses(run: Path) -> list[dict[str, str]]:
    with open(run / "losses.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "time_s"} for row in csv.DictReader(f)]


def _state(run: Path) -> dict[str, Any]:
    return torch.load(run / CHECKPOINT, weights_only=True)


def _card(path: Path) -> dict[str, Any]:
    return torch.load(path, weights_only=True)["meta"]["extra"]["distill"]


# --- the mapping of matched features ---

def test_feature_pairs_follow_relative_depth() -> None:
    # the documented example: a 6-block student's blocks 2, 4, 6 meet a 9-block teacher's 3, 6, 9 (block k sits at
    # index RESNET_FIRST_BLOCK + k - 1), after the stem's last ReLU (index 9) on both sides
    assert RESNET_FIRST_BLOCK == 10
    assert feature_pairs(6, 9) == [(9, 9), (11, 12), (13, 15), (15, 18)]
    assert feature_pairs(9, 9) == [(9, 9), (12, 12), (15, 15), (18, 18)]
    assert feature_pairs(1, 2) == [(9, 9), (10, 10), (10, 11)]  # duplicates dropped, never block 0
    assert feature_pairs(0, 9) == [(9, 9)]  # a block-less student: the stem only
    # the indices name what the docstring says in the reference layout: model[9] the last ReLU, then the blocks
    with torch.device("meta"):
        net = build_generator(GeneratorConfig(arch="resnet_9blocks", ngf=8))
    layers = list(net.model)
    assert isinstance(layers[9], torch.nn.ReLU) and not any(
        type(m).__name__ == "ResnetBlock" for m in layers[:RESNET_FIRST_BLOCK])
    assert all(type(layers[i]).__name__ == "ResnetBlock" for i in range(10, 19)) and type(layers[19]).__name__ != \
        "ResnetBlock"


# --- a tiny teacher -> student run ---

def test_distillation_loss_falls_and_the_student_comes_closer_to_the_teacher(
        synth: Path, teacher_run: Path, student: tuple[Path, TrainResult, list[dict]], tmp_path: Path) -> None:
    run, result, seen = student
    assert result.iterations == 3 * N_TRAIN and result.epochs_done == 3 and not result.stopped_early
    rows = _losses(run)
    assert list(rows[0])[3:] == ["G_distill", "G_GAN", "G_feature", "D_real", "D_fake"]
    assert len(rows) == len(seen) == 24
    assert [float(r["G_distill"]) for r in rows] == [s["G_distill"] for s in seen]  # the csv logs what on_step saw
    distill = [s["G_distill"] for s in seen]
    first, last = float(np.mean(distill[:6])), float(np.mean(distill[-6:]))
    assert last < 0.9 * first, (first, last)  # measured: 2.46 -> 1.95
    assert all(s["G_feature"] > 0 for s in seen)  # 1 student block vs 2 teacher blocks: features are matched

    # the student as it was before its first step: the loop seeds everything, then builds the Distiller
    cfg = TrainConfig.load(run)
    seed_everything(cfg.seed)
    initial = Distiller(cfg, torch.device("cpu")).nets["G"]
    seed_everything(cfg.seed)
    assert all(torch.equal(a, b) for a, b in zip(initial.state_dict().values(),
                                                 Distiller(cfg, torch.device("cpu")).nets["G"].state_dict().values(),
                                                 strict=True))  # deterministic
    # ...and it is the run's: its L1 to the teacher on the first batch is the logged first G_distill
    from cyclegan_deploy.train.data import EpochSampler, build_dataset

    x = build_dataset(cfg)[next(iter(EpochSampler(N_TRAIN, cfg.seed)))]["A"][None]
    teacher_net, _ = load_generator(teacher_run / "latest_net_G_A.pth")
    with torch.no_grad():
        first_l1 = float(torch.nn.functional.l1_loss(initial(x), teacher_net(x))) * cfg.lambda_distill
    assert first_l1 == pytest.approx(seen[0]["G_distill"], rel=1e-5)
    before_file = tmp_path / "initial_net_G.pth"
    save_generator(initial.eval(), cfg.to_meta(direction="AtoB"), before_file)
    teacher = teacher_run / "latest_net_G_A.pth"
    before = evaluate(before_file, teacher, synth, photo_side=32)
    after = evaluate(run / "latest_net_G.pth", teacher, synth, photo_side=32)
    b, a = before["held_out"], after["held_out"]
    assert b["kind"] == a["kind"] == "held-out" and a["n_images"] == N_TEST
    # measured: 15.6 dB (the untrained student's near-grey output) -> 18.3 dB
    assert a["psnr_db_mean"] > b["psnr_db_mean"] + 1.5, (b["psnr_db_mean"], a["psnr_db_mean"])
    assert a["psnr_db_min"] > b["psnr_db_min"] and a["ssim_mean"] > b["ssim_mean"]
    # the report the run wrote at its end is the same comparison (held-out images are the same; photos at 256)
    written = json.loads((run / DISTILL_EVAL).read_text())
    assert written["held_out"] == a == result.evaluation["held_out"]  # type: ignore[index]
    assert written["photos"]["side"] == 256 and written["macs"] == after["macs"]
    assert written["task"]["generator_psnr_db"] == after["task"]["generator_psnr_db"]
    for name in ("config.json", "latest_net_G.pth", "1_net_G.pth", "3_net_G.pth", "losses.png",
                 "samples/epoch_003.png"):
        assert (run / name).is_file(), name


def _split_run(teacher: Path, run: Path, stop_at: int) -> None:
    """Ctrl-C at `stop_at`, then a resume stopped by a tiny --max-minutes, then a resume to the end."""
    with pytest.raises(KeyboardInterrupt):
        train(_student_cfg(teacher, run), on_step=ctrl_c_at(stop_at))
    assert _state(run)["iteration"] == stop_at
    middle = train(resume_config(run, max_minutes=1e-6), resume=True)  # stops after its first step
    assert middle.stopped_early and stop_at < middle.iterations < 24
    end = train(resume_config(run, max_minutes=60.0), resume=True)
    assert end.iterations == 24 and not end.stopped_early


def test_resume_after_ctrl_c_and_budget_equals_an_uninterrupted_run(
        teacher_run: Path, student: tuple[Path, TrainResult, list[dict]], tmp_path: Path) -> None:
    full = student[0]
    split = tmp_path / "split"
    _split_run(teacher_run, split, stop_at=5)  # mid-epoch 1; the budget stop lands mid-epoch 1 too
    assert _losses(full) == _losses(split)  # every loss and lr, bit for bit (floats are logged with repr)
    a, b = _state(full), _state(split)
    assert a["iteration"] == b["iteration"] == 24
    assert set(a["model"]["nets"]) == {"G", "D", "F"}
    for name, sd in a["model"]["nets"].items():
        assert sd.keys() == b["model"]["nets"][name].keys()
        assert all(torch.equal(v, b["model"]["nets"][name][k]) for k, v in sd.items()), name
    for name, opt in a["model"]["optimizers"].items():
        other = b["model"]["optimizers"][name]["state"]
        assert all(torch.equal(v, other[i][k]) for i, st in opt["state"].items() for k, v in st.items()), name
    g_full, g_split = (torch.load(r / "latest_net_G.pth", weights_only=True) for r in (full, split))
    assert all(torch.equal(v, g_split["state_dict"][k]) for k, v in g_full["state_dict"].items())
    assert g_full["meta"]["extra"]["distill"]["losses"] == g_split["meta"]["extra"]["distill"]["losses"]


# --- the student's card ---

def test_student_card_names_the_teacher_its_hash_macs_and_lambdas(
        teacher_run: Path, student: tuple[Path, TrainResult, list[dict]]) -> None:
    run, result, seen = student
    teacher_file = teacher_run / "latest_net_G_A.pth"
    net, meta = load_generator(run)  # the run dir resolves to latest_net_G.pth
    assert (meta.arch, meta.ngf, meta.n_blocks, meta.direction, meta.model, meta.train_size) == (
        "resnet_1blocks", 4, 1, "AtoB", "cyclegan", 32)  # the student does the teacher's (CycleGAN) job
    card = meta.extra["distill"]
    assert card == _card(run / "latest_net_G.pth")
    assert card["teacher"] == "latest_net_G_A.pth" and card["teacher_sha256"] == sha256(teacher_file)
    assert TrainConfig.load(run).teacher_sha256 == sha256(teacher_file)
    assert (card["teacher_arch"], card["teacher_ngf"], card["teacher_n_blocks"]) == ("resnet_2blocks", 8, 2)
    _, t_meta = load_generator(teacher_file)
    for size, (h, w) in {"256x256": (256, 256), "720x1280": (720, 1280)}.items():
        m = card["macs"][size]
        assert m["student"] == generator_macs(card_config(meta), h, w)
        assert m["teacher"] == generator_macs(card_config(t_meta), h, w)
        assert 0 < m["student"] < m["teacher"], size
    assert card["mac_ratio"] == round(card["macs"]["256x256"]["teacher"] / card["macs"]["256x256"]["student"], 2)
    assert card["mac_ratio"] > 1
    assert card["lambdas"] == {"distill": 10.0, "gan": 1.0, "feature": 0.01}
    assert card["feature_pairs"] == [[9, 9], [10, 10], [10, 11]]
    assert card["losses"] == seen[-1] == result.last_losses
    assert sorted(p.name for p in run.glob("*_net_*.pth")) == ["1_net_G.pth", "2_net_G.pth", "3_net_G.pth",
                                                                "latest_net_G.pth"]  # no D, no adapters, no teacher


# --- the teacher hash on --resume ---

def test_resume_after_the_teacher_changed_is_refused(
        teacher_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    teacher = tmp_path / "teacher"
    shutil.copytree(teacher_run, teacher)
    run = tmp_path / "student"
    code, out, err = run_cli(capsys, "distill", teacher, "-o", run, *STUDENT_CLI)
    assert code == 0, err
    assert "done: 1 epochs, 8 iterations" in out
    teacher_file = Path(TrainConfig.load(run).teacher)
    assert teacher_file.name == "latest_net_G_A.pth" and teacher_file.samefile(teacher / "latest_net_G_A.pth")
    original = teacher_file.read_bytes()
    saved = torch.load(teacher_file, weights_only=True)
    saved["state_dict"]["model.1.weight"] = saved["state_dict"]["model.1.weight"] * 1.01  # still a fine generator
    torch.save(saved, teacher_file)
    checkpoint = sha256(run / CHECKPOINT)

    code, out, err = run_cli(capsys, "distill", teacher, "-o", run, "--resume", "--epochs", "2")
    assert code == 1
    line = one_error(err, str(teacher_file), "changed", "sha256", alone=True)
    assert "restore it" in line
    assert sha256(run / CHECKPOINT) == checkpoint and not leftovers(tmp_path)
    assert len(_losses(run)) == 8

    # another teacher than the run's is refused as well, naming the one given
    other = teacher / "latest_net_G_B.pth"
    code, _, err = run_cli(capsys, "distill", other, "-o", run, "--resume", "--epochs", "2")
    assert code == 1
    one_error(err, str(other), "pass that teacher", alone=True)

    teacher_file.write_bytes(original)  # restored: the run continues
    code, out, err = run_cli(capsys, "distill", teacher, "-o", run, "--resume", "--epochs", "2")
    assert code == 0, err
    assert "done: 2 epochs, 16 iterations" in out and len(_losses(run)) == 16


# --- a plain folder of inputs ---

def test_plain_image_folder_the_teacher_outputs_feed_the_discriminator(
        synth: Path, teacher_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images = tmp_path / "photos"
    images.mkdir()
    for p in sorted((synth / "trainA").glob("*.png"))[:5]:
        shutil.copy(p, images / f"a_{p.name}")
    # the teacher file alone (no run dir beside it), images from --data
    lone = tmp_path / "lone" / "teacher_net_G.pth"
    lone.parent.mkdir()
    shutil.copy(teacher_run / "latest_net_G_A.pth", lone)
    run = tmp_path / "student"
    code, out, err = run_cli(capsys, "distill", lone, "-o", run, "--data", images, "--crop-size", "32",
                             "--load-size", "32", "--lambda-gan", "0.5", "--lambda-feature", "0", *STUDENT_CLI)
    assert code == 0, err
    assert "done: 1 epochs, 5 iterations" in out
    assert "vs --against on 5 images (training images (not held out)" in out
    report = json.loads((run / DISTILL_EVAL).read_text())
    assert report["held_out"]["kind"] == "training images (not held out)" and report["held_out"]["n_images"] == 5
    assert "task" not in report  # a plain folder has no known mapping
    card = _card(run / "latest_net_G.pth")
    assert card["lambdas"] == {"distill": 10.0, "gan": 0.5, "feature": 0.0} and card["feature_pairs"] == []
    rows = _losses(run)
    assert len(rows) == 5 and all(float(r["G_feature"]) == 0.0 for r in rows)
    assert all(np.isfinite(float(r["D_real"])) for r in rows)

    # no target domain: the discriminator's "real" images are the teacher's outputs
    cfg = TrainConfig.load(run)
    from cyclegan_deploy.train.data import build_dataset

    item = build_dataset(cfg)[(0, 0)]
    assert "B" not in item
    distiller = Distiller(cfg, torch.device("cpu"))
    seen: list[torch.Tensor] = []
    distiller.nets["D"].register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    x = item["A"][None]
    distiller.optimize({"A": x})
    assert len(seen) == 3  # D(student) for G, then D(real), D(student) for D
    with torch.no_grad():
        assert torch.equal(seen[1], distiller.teacher(x))


@pytest.mark.parametrize("gan_real", ["teacher", "data"])
def test_gan_real_picks_what_the_discriminator_sees_as_real(
        synth: Path, teacher_run: Path, tmp_path: Path, gan_real: str) -> None:
    cfg = distill_config(teacher_run, tmp_path / "run", synth, gan_real=gan_real, crop_size=32, load_size=32,
                         **{k: v for k, v in STUDENT.items() if k not in ("samples", "save_every")})
    from cyclegan_deploy.train.data import build_dataset

    item = build_dataset(cfg)[(0, 0)]
    assert "B" in item  # a data root: the target domain is there to choose
    distiller = Distiller(cfg, torch.device("cpu"))
    seen: list[torch.Tensor] = []
    distiller.nets["D"].register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    x, b = item["A"][None], item["B"][None]
    distiller.optimize({"A": x, "B": b})
    with torch.no_grad():
        expected = distiller.teacher(x) if gan_real == "teacher" else b
    assert torch.equal(seen[1], expected)
    assert not torch.equal(distiller.teacher(x).detach(), b)  # the two choices really differ


def test_without_the_gan_term_the_discriminator_is_neither_run_nor_trained(
        synth: Path, teacher_run: Path, tmp_path: Path) -> None:
    opts = {k: v for k, v in STUDENT.items() if k not in ("samples", "save_every")}
    cfg = distill_config(teacher_run, tmp_path / "run", synth, lambda_gan=0.0, crop_size=32, load_size=32, **opts)
    distiller = Distiller(cfg, torch.device("cpu"))
    calls: list[int] = []
    distiller.nets["D"].register_forward_pre_hook(lambda _m, _a: calls.append(1))
    d_before = {k: v.clone() for k, v in distiller.nets["D"].state_dict().items()}
    g_before = {k: v.clone() for k, v in distiller.nets["G"].state_dict().items()}
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    losses = distiller.optimize({"A": x})
    assert calls == [] and losses["G_GAN"] == losses["D_real"] == losses["D_fake"] == 0.0
    assert losses["G_distill"] > 0
    assert all(torch.equal(v, distiller.nets["D"].state_dict()[k]) for k, v in d_before.items())
    assert any(not torch.equal(v, distiller.nets["G"].state_dict()[k]) for k, v in g_before.items())


def test_unknown_gan_real_is_a_usage_error(teacher_run: Path, synth: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "distill", teacher_run, "-o", tmp_path / "s", "--data", synth, "--gan-real", "real")
    assert code == 1 and "--gan-real 'real'" in err and "teacher, data" in err


# --- export and backends ---

def test_student_exports_with_parity_and_runs_in_every_cpu_backend(
        student: tuple[Path, TrainResult, list[dict]], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cyclegan_deploy.backends import UNAVAILABLE, available_backends, load_backend
    from cyclegan_deploy.bench.metrics import make_input

    run = student[0]
    out = tmp_path / "export"
    code, _, err = run_cli(capsys, "export", run, "-o", out)
    assert code == 0, err
    onnx_path = out / "g_AtoB.onnx"
    assert onnx_path.is_file()
    parity = json.loads((out / "g_AtoB.parity.json").read_text())
    assert parity["passed"], parity

    net, meta = load_generator(run / "latest_net_G.pth")
    card = meta.extra["distill"]
    inputs = [make_input(1, 32, 32, seed=1), make_input(2, 36, 52, seed=2)]
    with torch.no_grad():
        refs = [net(torch.from_numpy(x)).numpy() for x in inputs]
    cases = [("onnxruntime", onnx_path, "onnxruntime-cpu"), ("openvino", onnx_path, "openvino-f32"),
             ("torch", run / "latest_net_G.pth", "torch-cpu")]
    ran = []
    for need, artifact, spec in cases:
        if available_backends([need])[need].startswith(UNAVAILABLE):
            continue
        with load_backend(artifact, spec) as backend:
            assert (backend.meta.arch, backend.meta.ngf, backend.meta.direction) == ("resnet_1blocks", 4, "AtoB")
            for x, ref in zip(inputs, refs, strict=True):
                y = backend(x)
                assert y.shape == ref.shape and y.dtype == np.float32, (spec, y.shape, y.dtype)
                err_max = float(np.abs(y - ref).max())
                assert err_max <= 1e-4, f"{backend.name} {x.shape}: max abs {err_max:.2e}"
            assert backend.meta.extra["distill"] == card  # the card travels into the ONNX metadata
        ran.append(spec)
    assert "torch-cpu" in ran and "onnxruntime-cpu" in ran, ran


# --- bad teachers: one line, exit 1, nothing written ---

def _refused(capsys: pytest.CaptureFixture[str], teacher: Path, run: Path, *names: str, data: Path | None = None,
             ) -> str:
    extra = ["--data", str(data)] if data is not None else []
    code, _, err = run_cli(capsys, "distill", teacher, "-o", run, *extra, *STUDENT_CLI)
    assert code == 1, err
    line = one_error(err, *names, alone=True)
    assert not run.exists()
    return line


def test_bad_teachers_get_one_line_errors(
        synth: Path, teacher_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "student"
    missing = tmp_path / "missing_net_G.pth"
    _refused(capsys, missing, run, str(missing), "teacher not found")
    text = tmp_path / "notes_net_G.pth"
    text.write_text("this is a text file, not weights\n")
    _refused(capsys, text, run, str(text), "not a PyTorch checkpoint", data=synth)
    ckpt = teacher_run / CHECKPOINT
    _refused(capsys, ckpt, run, str(ckpt), "not a generator state dict", "training checkpoint", data=synth)
    # a discriminator's weights: a plain state dict, but no generator's keys
    d_file = tmp_path / "latest_net_D_A.pth"
    torch.save(_state(teacher_run)["model"]["nets"]["D_A"], d_file)
    _refused(capsys, d_file, run, str(d_file), "generator", data=synth)
    # a fine teacher file with no run dir beside it, and no --data
    lone = tmp_path / "lone" / "latest_net_G_A.pth"
    lone.parent.mkdir()
    shutil.copy(teacher_run / "latest_net_G_A.pth", lone)
    _refused(capsys, lone, run, str(lone), "pass --data")
    # --data that does not exist
    _refused(capsys, lone, run, str(tmp_path / "nowhere"), "data folder not found", data=tmp_path / "nowhere")
    assert not leftovers(tmp_path)


def test_a_unet_pix2pix_teacher_distills_into_a_resnet_student(tmp_path: Path) -> None:
    """A pix2pix teacher (U-Net, aligned A|B pairs): no features to match (other layout), the aligned B halves
    are the data's target domain, MACs are counted at the U-Net's padded sizes."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp_path / "p2p" / "train").mkdir(parents=True)
    for i in range(3):
        a = (rng.random((128, 128, 3)) * 255).astype(np.uint8)
        Image.fromarray(np.concatenate([a, 255 - a], 1)).save(tmp_path / "p2p" / "train" / f"{i}.png")
    teacher = tmp_path / "teacher"
    train(TrainConfig.for_model("pix2pix", dataroot=str(tmp_path / "p2p"), run_dir=str(teacher), netG="unet_128",
                                ngf=4, ndf=4, load_size=128, crop_size=128, epochs=1, epochs_decay=0, num_workers=0,
                                samples=1))
    run = tmp_path / "student"
    result = train(distill_config(teacher, run, ngf=4, n_blocks=1, ndf=4, epochs=1, epochs_decay=0, num_workers=0,
                                  samples=1))
    assert result.iterations == 3
    card = _card(run / "latest_net_G.pth")
    assert card["teacher_arch"] == "unet_128" and card["feature_pairs"] == []
    assert card["macs"]["720x1280"]["teacher"] == generator_macs(
        card_config(load_generator(teacher / "latest_net_G.pth")[1]), 768, 1280)
    assert all(float(r["G_feature"]) == 0.0 for r in _losses(run))
    assert result.evaluation is not None and result.evaluation["held_out"]["status"].startswith("unavailable")


def test_a_root_with_only_the_input_domain_trains_on_trainA_alone(synth: Path, teacher_run: Path,
                                                                  tmp_path: Path) -> None:
    """trainA/ + testA/ and no trainB/: the student trains on trainA only, so testA stays held out."""
    root = tmp_path / "onlyA"
    shutil.copytree(synth / "trainA", root / "trainA")
    shutil.copytree(synth / "testA", root / "testA")
    cfg = distill_config(teacher_run, tmp_path / "run", root, ngf=4, n_blocks=1, ndf=8, epochs=1, epochs_decay=0,
                         num_workers=0, samples=1)
    result = train(cfg)
    assert result.iterations == N_TRAIN
    assert result.evaluation is not None and result.evaluation["held_out"]["kind"] == "held-out"
    assert result.evaluation["held_out"]["n_images"] == N_TEST


def test_sizes_the_teacher_cannot_take_and_a_missing_target_domain_are_refused(
        synth: Path, teacher_run: Path, tmp_path: Path) -> None:
    from cyclegan_deploy.errors import ConfigError

    cfg = GeneratorConfig(arch="unet_128", ngf=4, norm="batch")
    unet = tmp_path / "unet_net_G.pth"
    save_generator(build_generator(cfg), cfg.to_meta(model="pix2pix", train_size=128), unet)
    with pytest.raises(ConfigError, match=r"multiples of 128.*use --crop-size 128 --load-size 128"):
        distill_config(unet, tmp_path / "run", synth, crop_size=64, load_size=64)
    with pytest.raises(ConfigError, match="--gan-real data needs the target domain"):
        distill_config(teacher_run, tmp_path / "run", synth / "trainA", gan_real="data")


def test_the_dataset_and_the_gan_real_check_read_the_same_layout(tmp_path: Path) -> None:
    """One decision (data.distill_layout) for both: a BtoA teacher's root with trainB/ and train/ pairs but no
    trainA/ reads trainB/ only, so --gan-real data is refused there rather than quietly falling back."""
    from cyclegan_deploy.train.data import distill_layout

    root = tmp_path / "root"
    (root / "train").mkdir(parents=True)
    assert distill_layout(root, "AtoB") == ("aligned", root)
    (root / "trainB").mkdir()
    assert distill_layout(root, "BtoA") == ("inputs", root / "trainB")
    assert distill_layout(root, "AtoB") == ("aligned", root)
    (root / "trainA").mkdir()
    assert distill_layout(root, "BtoA") == ("unpaired", root)
    assert distill_layout(tmp_path / "plain", "AtoB") == ("inputs", tmp_path / "plain")

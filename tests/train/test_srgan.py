"""`cgdeploy train --model srgan`: a tiny SRResNet run (pixel stage, then GAN stage) writes what every run writes
and a generator `cgdeploy export` takes; --resume after Ctrl-C in either stage equals an uninterrupted run; the
pretrained (pixel-stage) generator is kept; eval reports PSNR/SSIM on Y for SR and bicubic; the VGG54 content loss
(tested with a random-init VGG19 saved in torchvision's layout: no pretrained weights can be downloaded here);
RRDBNet trains too; bad options and data get one-line errors."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_checks import one_error, run_cli
from PIL import Image
from run_checks import ctrl_c_at

pytest.importorskip("skimage")
torch = pytest.importorskip("torch")

from cyclegan_deploy.errors import ConfigError  # noqa: E402
from cyclegan_deploy.train.checkpoints import load_generator  # noqa: E402
from cyclegan_deploy.train.config import TrainConfig  # noqa: E402
from cyclegan_deploy.train.loop import CHECKPOINT, resume_config, train  # noqa: E402
from cyclegan_deploy.train.losses import VGG54  # noqa: E402
from cyclegan_deploy.train.sr_data import write_sr_data  # noqa: E402
from cyclegan_deploy.train.synthetic import write_synthetic  # noqa: E402

TINY: dict[str, Any] = {"ngf": 8, "n_blocks": 1, "ndf": 8, "crop_size": 32, "batch_size": 2, "pretrain_epochs": 1,
                        "epochs": 1, "epochs_decay": 1, "num_workers": 0, "samples": 2, "save_every": 1,
                        "device": "cpu"}
CLI_TINY = ["--model", "srgan", "--scale", "4", "--ngf", "8", "--n-blocks", "1", "--ndf", "8", "--crop-size", "32",
            "--batch-size", "2", "--workers", "0", "--device", "cpu"]
PER_EPOCH = 6  # 3 scenes of 64x64 hold four 32x32 crops' area each: 12 samples, batch 2


@pytest.fixture(scope="module")
def sr_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in set's layout, small: 3 training scenes; held out: 2 scenes and one photograph."""
    src = tmp_path_factory.mktemp("full") / "data"
    write_sr_data(src, n_train=3, n_test=2, size=64, seed=2)
    root = tmp_path_factory.mktemp("sr") / "root"
    shutil.copytree(src / "train", root / "train", ignore=shutil.ignore_patterns("photo_*"))
    shutil.copytree(src / "test", root / "test", ignore=shutil.ignore_patterns("photo_[!c]*", "photo_coffee*"))
    return root


def _cfg(root: Path, run: Path, **kw: Any) -> TrainConfig:
    return TrainConfig.for_model("srgan", dataroot=str(root), run_dir=str(run), **(TINY | kw))


def _losses(run: Path) -> list[dict[str, str]]:
    with open(run / "losses.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "time_s"} for row in csv.DictReader(f)]


def _state(run: Path) -> dict[str, Any]:
    return torch.load(run / CHECKPOINT, weights_only=True)


@pytest.fixture(scope="module")
def sr_run(sr_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    run = tmp_path_factory.mktemp("srrun") / "run"
    return run, train(_cfg(sr_root, run))


def test_tiny_srgan_run_writes_losses_samples_generators_and_the_eval(sr_run: tuple[Path, Any]) -> None:
    run, result = sr_run
    assert result.iterations == 3 * PER_EPOCH and result.epochs_done == 3 and not result.stopped_early
    rows = _losses(run)
    assert list(rows[0])[3:] == ["G_pixel", "G_content", "G_GAN", "D_real", "D_fake"]
    pixel_stage, gan_stage = rows[:PER_EPOCH], rows[PER_EPOCH:]
    assert all(float(r["G_GAN"]) == float(r["D_real"]) == 0.0 for r in pixel_stage)
    assert all(float(r["G_GAN"]) > 0 and float(r["D_real"]) > 0 for r in gan_stage)
    assert all(r["G_pixel"] == r["G_content"] for r in rows)  # pixel-MSE content by default
    assert [float(r["lr"]) for r in rows[::PER_EPOCH]] == pytest.approx([1e-4, 1e-4, 5e-5])  # decay after both
    for name in ("config.json", "latest_net_G.pth", "pretrained_net_G.pth", "1_net_G.pth", "3_net_G.pth",
                 "losses.png", "samples/epoch_003.png", "sr_eval.json"):
        assert (run / name).is_file(), name
    grid = np.asarray(Image.open(run / "samples" / "epoch_003.png"))
    assert grid.shape == (2 * 32 + 2, 4 * 32 + 3 * 2, 3)  # 2 samples x (LR nearest | bicubic | SR | HR)
    lr_tile = grid[:32, :32]
    assert np.array_equal(lr_tile[::4, ::4].repeat(4, 0).repeat(4, 1), lr_tile)  # nearest-upscaled LR
    g, meta = load_generator(run)
    assert (meta.arch, meta.family, meta.scale, meta.model, meta.train_size, meta.ngf, meta.n_blocks) == (
        "srresnet_x4", "srresnet", 4, "srgan", 8, 8, 1)
    assert (meta.input_range, meta.output_range) == ([0.0, 1.0], [-1.0, 1.0])
    assert meta.extra["srgan"] == {"stage": "gan", "content": "pixel_mse", "lambda_adv": 1e-3}
    assert g(torch.zeros(1, 3, 5, 7)).shape == (1, 3, 20, 28)
    report = json.loads((run / "sr_eval.json").read_text())
    assert report == json.loads(json.dumps(result.evaluation))
    assert (report["scale"], report["crop_border"], report["data"]["kind"]) == (4, 4, "held-out pairs")
    assert set(report["groups"]) == {"all", "photos", "scenes"} and report["groups"]["photos"]["n_images"] == 1
    assert set(report["groups"]["all"]["psnr_y_db"]) == {"bicubic", "generator", "pretrained"}
    assert report["pretrained"]["file"].endswith("pretrained_net_G.pth")


def test_the_pretrained_generator_is_the_pixel_stage_one(sr_run: tuple[Path, Any]) -> None:
    run, _ = sr_run
    pretrained = torch.load(run / "pretrained_net_G.pth", weights_only=True)
    after_pixel_stage = torch.load(run / "1_net_G.pth", weights_only=True)
    latest = torch.load(run / "latest_net_G.pth", weights_only=True)
    sd = pretrained["state_dict"]
    assert all(torch.equal(v, after_pixel_stage["state_dict"][k]) for k, v in sd.items())
    assert not all(torch.equal(v, latest["state_dict"][k]) for k, v in sd.items())
    assert pretrained["meta"]["extra"]["srgan"]["stage"] == "pretrain"


def test_cgdeploy_export_takes_the_run(sr_run: tuple[Path, Any], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "export", sr_run[0], "-o", tmp_path / "exp")
    assert code == 0, err
    assert "parity PASS" in out + err and (tmp_path / "exp" / "g_AtoB.onnx").is_file()


def _split_run(root: Path, run: Path, stop_at: int) -> None:
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(root, run), on_step=ctrl_c_at(stop_at))
    assert _state(run)["iteration"] == stop_at
    train(resume_config(run), resume=True)


@pytest.mark.parametrize("stop_at", [3, PER_EPOCH + 3], ids=["pixel-stage", "gan-stage"])
def test_resume_after_ctrl_c_equals_an_uninterrupted_run(sr_root: Path, sr_run: tuple[Path, Any], tmp_path: Path,
                                                         stop_at: int) -> None:
    full, split = sr_run[0], tmp_path / "split"
    _split_run(sr_root, split, stop_at)
    assert _losses(full) == _losses(split)  # every loss and lr, bit for bit (floats are logged with repr)
    a, b = _state(full), _state(split)
    assert a["iteration"] == b["iteration"] == 3 * PER_EPOCH
    for name, sd in a["model"]["nets"].items():
        assert all(torch.equal(v, b["model"]["nets"][name][k]) for k, v in sd.items()), name
    for name, opt in a["model"]["optimizers"].items():
        other = b["model"]["optimizers"][name]["state"]
        assert all(torch.equal(v, other[i][k]) for i, st in opt["state"].items() for k, v in st.items()), name
    for file in ("latest_net_G.pth", "pretrained_net_G.pth"):
        x, y = (torch.load(r / file, weights_only=True)["state_dict"] for r in (full, split))
        assert all(torch.equal(v, y[k]) for k, v in x.items()), file


def test_cli_train_and_eval_report_y_psnr_ssim_for_sr_and_bicubic(sr_root: Path, sr_run: tuple[Path, Any],
                                                                   tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", sr_root, "-o", run, *CLI_TINY, "--pretrain-epochs", "1", "--epochs",
                             "0", "--epochs-decay", "1")
    assert code == 0, err
    assert "done: 2 epochs, 12 iterations" in out and "bicubic" in out and "crop_border 4" in out
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["model"], cfg["netG"], cfg["lr"], cfg["beta1"], cfg["lambda_adv"]) == ("srgan", "srresnet_x4", 1e-4,
                                                                                        0.9, 1e-3)
    code, out, err = run_cli(capsys, "eval", sr_run[0], "--json", tmp_path / "eval.json")
    assert code == 0, err
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["task"] == "super-resolution" and report["data"]["folder"] == str(sr_root / "test" / "hr")
    assert set(report["groups"]["all"]["ssim_y"]) == {"bicubic", "generator"}
    at_the_end = json.loads((sr_run[0] / "sr_eval.json").read_text())["groups"]["all"]
    for key in ("psnr_y_db", "ssim_y"):  # the same generator on the same pairs: the same numbers
        assert report["groups"]["all"][key] == {m: at_the_end[key][m] for m in ("bicubic", "generator")}
    first = report["images"][0]
    assert set(first["psnr_y_db"]) == {"bicubic", "generator"} and first["hr_size"][0] % 4 == 0
    assert out.splitlines()[1].startswith("vs HR on 3 images (held-out pairs") and "crop_border 4" in out
    assert out.splitlines()[2].startswith("  all (3): bicubic ") and "generator " in out.splitlines()[2]
    # a plain folder of HR images: LR by bicubic downscale; --against another SR generator of the same scale
    folder = tmp_path / "hr"
    shutil.copytree(sr_root / "test" / "hr", folder)
    code, out, err = run_cli(capsys, "eval", sr_run[0] / "pretrained_net_G.pth", "--against", run, "--data", folder)
    assert code == 0, err
    assert "folder of HR images" in out and "LR bicubic downscale of HR" in out and "against" in out


def test_vgg54_content_loss_from_a_torchvision_layout_file(sr_root: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    state = VGG54().state_dict()
    assert list(state)[-2:] == ["features.34.weight", "features.34.bias"]  # conv5_4 at torchvision's index
    vgg = tmp_path / "vgg19.pth"
    torch.save(state | {"classifier.0.weight": torch.zeros(4, 4)}, vgg)  # torchvision's head is ignored
    run = tmp_path / "run"
    result = train(_cfg(sr_root, run, vgg_weights=str(vgg), epochs_decay=0))
    gan_rows = _losses(run)[PER_EPOCH:]
    assert result.iterations == 2 * PER_EPOCH
    assert all(r["G_content"] != r["G_pixel"] for r in gan_rows)
    assert load_generator(run)[1].extra["srgan"]["content"] == "vgg54"
    torch.save(state | {"features.0.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ConfigError, match="VGG weights changed"):
        train(resume_config(run, vgg_weights=str(tmp_path / "other.pth"), epochs_decay=1), resume=True)
    code, _, err = run_cli(capsys, "train", sr_root, "-o", tmp_path / "r2", *CLI_TINY, "--vgg-weights",
                           run / "latest_net_G.pth")
    assert code == 1
    one_error(err, "latest_net_G.pth", "VGG19")


def test_rrdbnet_x2_trains_on_x2_data(tmp_path: Path) -> None:
    root = tmp_path / "x2"
    write_sr_data(root, scale=2, n_train=1, n_test=1, size=64, seed=3)
    for split in ("train", "test"):
        for path in (root / split).glob("*/photo_*.png"):
            path.unlink()
    run = tmp_path / "run"
    result = train(_cfg(root, run, netG="rrdbnet_x2", epochs=0, epochs_decay=1))
    _, meta = load_generator(run)
    assert (meta.arch, meta.scale, meta.output_range, meta.train_size) == ("rrdbnet_x2", 2, [0.0, 1.0], 16)
    assert result.evaluation is not None and result.evaluation["crop_border"] == 2


@pytest.mark.parametrize(("args", "words"), [
    (["--scale", "3"], ["--scale 3", "2 or 4"]),
    (["--arch", "rrdbnet_x2"], ["--arch rrdbnet_x2", "--scale is 4"]),
    (["--arch", "resnet_9blocks"], ["x2 or x4", "resnet_9blocks"]),
    (["--crop-size", "30"], ["--crop-size 30", "multiple of 4"]),
    (["--vgg-weights", "missing.pth"], ["missing.pth", "VGG19"]),
    (["--norm", "batch"], ["--norm", "fix their normalisation"]),  # was quietly replaced by the arch's own
    (["--no-dropout"], ["--dropout", "no dropout"]),
])
def test_bad_srgan_options_are_one_line_errors(sr_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               args: list[str], words: list[str]) -> None:
    code, _, err = run_cli(capsys, "train", sr_root, "-o", tmp_path / "run", *CLI_TINY, *args)
    assert code == 1
    one_error(err, *words)
    assert not (tmp_path / "run").exists()


def test_srgan_on_a_non_sr_data_root_and_sr_options_elsewhere_are_refused(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    synth = write_synthetic(tmp_path / "synth", n_train=2, n_test=1, size=32)
    code, _, err = run_cli(capsys, "train", synth, "-o", tmp_path / "run", *CLI_TINY)
    assert code == 1
    one_error(err, str(synth), "not a super-resolution data root", "data synth-sr")
    assert not (tmp_path / "run").exists()
    code, _, err = run_cli(capsys, "train", synth, "-o", tmp_path / "run", "--scale", "4")
    assert code == 1
    one_error(err, "--scale", "--model srgan")
    code, _, err = run_cli(capsys, "train", synth, "-o", tmp_path / "run", "--arch", "srresnet_x4")
    assert code == 1
    one_error(err, "srresnet_x4", "--model srgan")
    code, _, err = run_cli(capsys, "train", synth, "-o", tmp_path / "run", "--pretrain-epochs", "2")
    assert code == 1
    one_error(err, "--pretrain-epochs", "only for --model srgan")


def test_progress_total_counts_the_pixel_loss_once() -> None:
    """SRGAN logs G_pixel beside G_content (equal while pretraining or with pixel content): the bar's G total
    is the objective, content + adversarial, not the pixel MSE twice."""
    from cyclegan_deploy.train.loop import _summary
    from cyclegan_deploy.train.srgan import SRGAN

    losses = {"G_pixel": 0.25, "G_content": 0.25, "G_GAN": 0.5, "D_real": 0.125, "D_fake": 0.25}
    assert _summary(losses, SRGAN.monitor_losses) == "G 0.750  D 0.375"
    assert _summary(losses) == "G 1.000  D 0.375"  # models without monitors sum every G loss

"""Training: config defaults, losses/pool semantics, tiny seeded CycleGAN and pix2pix runs, exact resume
(epoch boundary and mid-epoch via Ctrl-C), bad data, and the `cgdeploy train` / `data synth` commands."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from run_checks import ctrl_c_at

torch = pytest.importorskip("torch")

from cyclegan_deploy.cli import main  # noqa: E402
from cyclegan_deploy.errors import ConfigError, DataError  # noqa: E402
from cyclegan_deploy.train.checkpoints import load_generator  # noqa: E402
from cyclegan_deploy.train.config import TrainConfig  # noqa: E402
from cyclegan_deploy.train.data import DataWarning  # noqa: E402
from cyclegan_deploy.train.loop import CHECKPOINT, resume_config, train  # noqa: E402
from cyclegan_deploy.train.losses import GANLoss, ImagePool  # noqa: E402
from cyclegan_deploy.train.synthetic import write_synthetic  # noqa: E402

TINY: dict[str, Any] = {"load_size": 32, "crop_size": 32, "ngf": 8, "ndf": 8, "netG": "resnet_1blocks",
                        "num_workers": 0, "samples": 2}


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("syn") / "data", n_train=4, n_test=3, size=32, seed=1)


def _cfg(data: Path, run: Path, model: str = "cyclegan", **kw: Any) -> TrainConfig:
    return TrainConfig.for_model(model, dataroot=str(data), run_dir=str(run), **(TINY | kw))


def _losses(run: Path) -> list[dict[str, str]]:
    with open(run / "losses.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "time_s"} for row in csv.DictReader(f)]


def _state(run: Path) -> dict[str, Any]:
    return torch.load(run / CHECKPOINT, weights_only=True)  # plain weights_only load must work


# --- config ---

def test_defaults_are_the_reference_ones() -> None:
    c = TrainConfig()
    assert (c.netG, c.ngf, c.ndf, c.norm, c.dropout, c.gan_mode, c.pool_size) == (
        "resnet_9blocks", 64, 64, "instance", False, "lsgan", 50)
    assert (c.lr, c.beta1, c.lambda_A, c.lambda_B, c.lambda_identity) == (0.0002, 0.5, 10.0, 10.0, 0.5)
    assert (c.epochs, c.epochs_decay, c.load_size, c.crop_size, c.preprocess, c.no_flip, c.batch_size) == (
        100, 100, 286, 256, "resize_and_crop", False, 1)
    p = TrainConfig.for_model("pix2pix")
    assert (p.netG, p.norm, p.dropout, p.gan_mode, p.pool_size, p.lambda_L1) == (
        "unet_256", "batch", True, "vanilla", 0, 100.0)
    assert TrainConfig.for_model("pix2pix", norm="instance").norm == "instance"  # explicit beats model default


def test_config_json_round_trip_and_validation(tmp_path: Path) -> None:
    c = TrainConfig.for_model("cyclegan", dataroot="d", run_dir=str(tmp_path), n_blocks=3, max_minutes=1.5)
    c.save(tmp_path)
    assert TrainConfig.load(tmp_path) == c
    assert c.to_meta().n_blocks == 3 and c.to_meta().train_size == 256
    for bad, match in (({"crop_size": 300}, "larger than --load-size"), ({"preprocess": "zoom"}, "preprocess"),
                       ({"netG": "unet_256", "crop_size": 200, "load_size": 286}, "multiple of 256"),
                       ({"netG": "resnet_xblocks"}, "block count"), ({"foo": 1}, "unknown")):
        with pytest.raises(ConfigError, match=match):
            TrainConfig.for_model("cyclegan", **bad)


def test_amp_and_cuda_never_fall_back_to_cpu(synth: Path, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this checks the CPU-only refusal")
    from cyclegan_deploy.errors import BackendUnavailableError

    with pytest.raises(ConfigError, match="--amp needs a CUDA"):
        train(_cfg(synth, tmp_path / "a", amp=True))
    with pytest.raises(BackendUnavailableError, match="--device cuda"):
        train(_cfg(synth, tmp_path / "b", device="cuda"))


# --- losses and pool ---

def test_gan_losses() -> None:
    pred = torch.tensor([[0.2, 0.9], [1.5, -0.3]])
    assert torch.isclose(GANLoss("lsgan")(pred, True), ((pred - 1) ** 2).mean())
    assert torch.isclose(GANLoss("lsgan")(pred, False), (pred**2).mean())
    assert torch.isclose(GANLoss("vanilla")(pred, True), torch.nn.functional.softplus(-pred).mean())
    assert torch.isclose(GANLoss("vanilla")(pred, False), torch.nn.functional.softplus(pred).mean())


def test_image_pool_reference_semantics_and_state() -> None:
    assert ImagePool(0).query(x := torch.randn(2, 3, 4, 4)) is x
    pool = ImagePool(3, seed=1)
    first = torch.arange(3.0).view(3, 1, 1, 1)
    assert torch.equal(pool.query(first), first)  # filling: every image returned as is
    seen_old = seen_new = False
    for step in range(20):
        new = torch.full((1, 1, 1, 1), 10.0 + step)
        before = [t.clone() for t in pool.images]
        out = pool.query(new)
        if torch.equal(out, new):
            seen_new = True
            assert all(torch.equal(a, b) for a, b in zip(before, pool.images, strict=True))
        else:  # an old image comes back and the new one takes its slot
            seen_old = True
            assert any(torch.equal(out, b) for b in before) and any(torch.equal(new, t) for t in pool.images)
    assert seen_old and seen_new
    clone = ImagePool(3)
    clone.load_state_dict(pool.state_dict())
    probe = torch.full((4, 1, 1, 1), -1.0)
    assert torch.equal(clone.query(probe.clone()), pool.query(probe.clone()))


# --- training runs ---

def test_tiny_cyclegan_generator_losses_fall_and_outputs_are_usable(synth: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = train(_cfg(synth, run, epochs=8, epochs_decay=0, save_every=4))
    assert result.iterations == 32 and result.epochs_done == 8 and not result.stopped_early
    rows = _losses(run)
    g = [sum(float(r[k]) for k in ("cycle_A", "cycle_B", "idt_A", "idt_B")) for r in rows]
    assert np.mean(g[-8:]) < 0.8 * np.mean(g[:8]), (np.mean(g[:8]), np.mean(g[-8:]))
    for name in ("config.json", "latest_net_G_A.pth", "latest_net_G_B.pth", "4_net_G_A.pth", "8_net_G_B.pth",
                 "losses.png", "samples/epoch_008.png", "synthetic_eval.json"):
        assert (run / name).is_file(), name
    assert not (run / "2_net_G_A.pth").exists()
    grid = np.asarray(Image.open(run / "samples" / "epoch_008.png"))
    assert grid.shape == (2 * 32 + 2, 6 * 32 + 5 * 2, 3)  # 2 samples x (real_A fake_B rec_A real_B fake_A rec_B)
    g_a, meta = load_generator(run)
    assert (meta.arch, meta.ngf, meta.n_blocks, meta.direction, meta.model, meta.train_size) == (
        "resnet_1blocks", 8, 1, "AtoB", "cyclegan", 32)
    assert load_generator(run, direction="BtoA")[1].direction == "BtoA"
    assert torch.equal(g_a.state_dict()["model.1.weight"], _state(run)["model"]["nets"]["G_A"]["model.1.weight"])
    assert set(result.synthetic or {}) >= {"psnr_model_db", "psnr_identity_db", "gain_db"}


def _split_run(synth: Path, run: Path, stop_at: int, **kw: Any) -> None:
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(synth, run, **kw), on_step=ctrl_c_at(stop_at))
    assert (run / CHECKPOINT).is_file()
    train(resume_config(run), resume=True)


@pytest.mark.parametrize("stop_at", [4, 6], ids=["epoch-boundary", "mid-epoch"])
def test_resume_after_ctrl_c_equals_an_uninterrupted_run(synth: Path, tmp_path: Path, stop_at: int) -> None:
    # 4 images = 4 iterations per epoch; a pool of 2 fills up, so its random swaps are exercised too
    kw = {"epochs": 1, "epochs_decay": 2, "pool_size": 2}
    train(_cfg(synth, tmp_path / "full", **kw))
    _split_run(synth, tmp_path / "split", stop_at, **kw)
    full, split = _losses(tmp_path / "full"), _losses(tmp_path / "split")
    assert len(full) == 12 and full == split  # every loss and lr, bit for bit (floats are logged with repr)
    a, b = _state(tmp_path / "full"), _state(tmp_path / "split")
    assert a["iteration"] == b["iteration"] == 12
    for group in ("nets", "optimizers"):
        for name, sd in a["model"][group].items():
            flat_a = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)} if group == "nets" else sd["state"]
            flat_b = b["model"][group][name] if group == "nets" else b["model"][group][name]["state"]
            if group == "nets":
                assert all(torch.equal(flat_a[k], flat_b[k]) for k in flat_a), name
            else:
                assert all(torch.equal(flat_a[i][k], flat_b[i][k]) for i in flat_a for k in flat_a[i]), name
    assert all(torch.equal(x, y) for x, y in zip(a["model"]["pools"]["fake_B"]["images"],
                                                 b["model"]["pools"]["fake_B"]["images"], strict=True))


def test_resume_can_extend_epochs_but_not_change_the_model(synth: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(_cfg(synth, run, epochs=1, epochs_decay=0))
    with pytest.raises(ConfigError, match="already holds a run"):
        train(_cfg(synth, run, epochs=1, epochs_decay=0))
    with pytest.raises(ConfigError, match="--ngf"):
        resume_config(run, ngf=16)
    result = train(resume_config(run, epochs=2), resume=True)
    assert result.iterations == 8 and len(_losses(run)) == 8


def test_tiny_pix2pix_run(synth: Path, tmp_path: Path) -> None:
    data = tmp_path / "aligned"
    (data / "train").mkdir(parents=True)
    for a_path in sorted((synth / "testA").glob("*.png")):
        a, b = np.asarray(Image.open(a_path)), np.asarray(Image.open(synth / "testB_true" / a_path.name))
        Image.fromarray(np.concatenate([a, b], 1)).save(data / "train" / a_path.name)
    run = tmp_path / "run"
    result = train(_cfg(data, run, "pix2pix", netG="unet_128", load_size=128, crop_size=128, epochs=4,
                        epochs_decay=0))
    rows = _losses(run)
    assert result.iterations == 12 and list(rows[0])[3:] == ["G_GAN", "G_L1", "D_real", "D_fake"]
    l1 = [float(r["G_L1"]) for r in rows]
    assert np.mean(l1[-3:]) < np.mean(l1[:3])
    assert result.synthetic is None  # the aligned root has no mapping.json
    g, meta = load_generator(run)
    assert (meta.arch, meta.norm, meta.model) == ("unet_128", "batch", "pix2pix")
    assert torch.load(run / "latest_net_G.pth", weights_only=True)["meta"]["dropout"] is True
    assert g(torch.zeros(1, 3, 128, 128)).shape == (1, 3, 128, 128)


def test_bad_data_fails_before_writing_and_corrupt_files_are_skipped(synth: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="trainB: folder not found"):
        (tmp_path / "only_a" / "trainA").mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(tmp_path / "only_a" / "trainA" / "x.png")
        train(_cfg(tmp_path / "only_a", tmp_path / "run0"))
    assert not (tmp_path / "run0").exists()
    data = tmp_path / "data"
    for folder in ("trainA", "trainB"):
        (data / folder).mkdir(parents=True)
        for p in sorted((synth / folder).glob("*.png"))[:2]:
            (data / folder / p.name).write_bytes(p.read_bytes())
    (data / "trainA" / "zz_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.warns(DataWarning, match="zz_corrupt.png"):
        result = train(_cfg(data, tmp_path / "run1", epochs=1, epochs_decay=0))
    assert result.iterations == 2


# --- CLI ---

def test_cli_data_synth_and_train(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["data", "synth", str(data), "--n-train", "3", "--n-test", "2", "--size", "32", "--seed", "3"]) == 0
    assert json.loads((data / "mapping.json").read_text())["seed"] == 3
    args = ["train", str(data), "--model", "cyclegan", "-o", str(run), "--epochs", "1", "--epochs-decay", "1",
            "--load-size", "32", "--crop-size", "32", "--ngf", "8", "--ndf", "8", "--arch", "resnet_1blocks",
            "--workers", "0", "--lambda-identity", "0", "--seed", "2", "--device", "cpu"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "done: 2 epochs, 6 iterations" in out and "synthetic held-out PSNR" in out
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["lambda_identity"], cfg["seed"], cfg["netG"], cfg["lr"]) == (0.0, 2, "resnet_1blocks", 0.0002)
    assert main(args) == 1  # the run exists: refused, not overwritten
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", str(data), "-o", str(run), "--resume", "--ngf", "16"]) == 1
    assert "--ngf" in capsys.readouterr().err
    assert main(["train", str(data), "-o", str(run), "--resume", "--epochs", "2"]) == 0
    assert "done: 3 epochs, 9 iterations" in capsys.readouterr().out
    assert main(["train", str(tmp_path / "missing"), "-o", str(tmp_path / "r2")]) == 1
    assert "data root not found" in capsys.readouterr().err

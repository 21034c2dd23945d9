"""`cgdeploy eval` and train/evaluate.py: PSNR/SSIM on known arrays, the MAC count of the reference ResNet-9 by
hand, evaluate() of a generator against itself and against another (task PSNR = evaluate_synthetic's), and the
CLI (summary, --json, refusals)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from cli_checks import leftovers, one_error, run_cli, sha256
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("skimage")

from cyclegan_deploy.artifacts import json_safe  # noqa: E402
from cyclegan_deploy.quality import PHOTOS, psnr, ssim  # noqa: E402
from cyclegan_deploy.train.checkpoints import load_generator, save_generator  # noqa: E402
from cyclegan_deploy.train.distill import card_config, generator_macs  # noqa: E402
from cyclegan_deploy.train.evaluate import evaluate, image_metrics  # noqa: E402
from cyclegan_deploy.train.models import GeneratorConfig, seeded_generator  # noqa: E402
from cyclegan_deploy.train.synthetic import evaluate_synthetic, translate_uint8, write_synthetic  # noqa: E402

N_TEST = 3
C1 = (0.01 * 255) ** 2  # SSIM's luminance constant at data range 255


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("syn") / "data", n_train=2, n_test=N_TEST, size=32, seed=4)


@pytest.fixture(scope="module")
def student_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded narrow ResNet (ngf 4, 1 block) saved as a generator file."""
    cfg = GeneratorConfig(arch="resnet_1blocks", ngf=4, n_blocks=1)
    path = tmp_path_factory.mktemp("student") / "student_net_G.pth"
    save_generator(seeded_generator(cfg, seed=5), cfg.to_meta(source="student", train_size=32), path)
    return path


# --- image metrics on known arrays ---

def _texture(seed: int, lo: int = 0, hi: int = 240, shape: tuple[int, ...] = (20, 24, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(lo, hi + 1, shape, dtype=np.uint8)


@pytest.mark.parametrize("d", [1, 3, 5])
def test_constant_offset_gives_the_closed_form_psnr(d: int) -> None:
    a = _texture(d)
    expected = 10 * math.log10(255**2 / d**2)  # MSE is exactly d^2
    up = a + np.uint8(d)  # a <= 240: no wrap-around
    assert psnr(a, up, 255.0) == pytest.approx(expected, rel=1e-12)
    report = image_metrics([a], [up])
    assert report["n_images"] == 1 and report["psnr_db"] == [round(expected, 3)]
    assert report["psnr_db_mean"] == report["psnr_db_min"] == round(expected, 3)
    # symmetric in its arguments and in the sign of the offset (where nothing clips)
    a2 = _texture(d + 10, lo=d, hi=255)
    down = a2 - np.uint8(d)
    assert image_metrics([down], [a2])["psnr_db"] == image_metrics([a2], [down])["psnr_db"] == [round(expected, 3)]


def test_identical_images_give_infinite_psnr_and_ssim_one() -> None:
    a, b = _texture(1), _texture(2)
    report = image_metrics([a, b], [a.copy(), b.copy()])
    assert report["psnr_db"] == [math.inf, math.inf] and report["psnr_db_mean"] == report["psnr_db_min"] == math.inf
    assert report["ssim"] == [1.0, 1.0] and report["ssim_mean"] == report["ssim_min"] == 1.0
    assert ssim(a, a.copy()) == 1.0
    # one identical pair among others: the mean is inf, the worst is the finite one
    mixed = image_metrics([a, b], [a.copy(), b + np.uint8(2)])
    assert mixed["psnr_db_mean"] == math.inf and mixed["psnr_db_min"] == round(10 * math.log10(255**2 / 4), 3)


@pytest.mark.parametrize("x,y", [(10, 200), (100, 101), (0, 255), (128, 64), (37, 37)])
def test_ssim_of_constant_images_is_the_luminance_term(x: int, y: int) -> None:
    # constant images have zero variance and covariance, so SSIM = (2xy + C1)(C2) / ((x^2 + y^2 + C1)(C2)) = the
    # luminance term. scikit-image (uniform 7x7 window, reflect padding, border of 3 cropped, sample covariance)
    # gives exactly that: a window mean of a constant is the constant, the variances are 0 up to rounding (~1e-12,
    # against C2 = 58.5), and the mean over the cropped map of equal values is that value.
    a, b = np.full((16, 16, 3), x, np.uint8), np.full((16, 16, 3), y, np.uint8)
    expected = (2 * x * y + C1) / (x * x + y * y + C1)
    assert abs(ssim(a, b) - expected) < 1e-6
    assert image_metrics([a], [b])["ssim"] == [round(expected, 4)]


def test_mean_and_min_aggregate_over_pairs() -> None:
    refs = [_texture(s) for s in range(4)]
    offsets = [1, 2, 4, 8]
    cands = [r + np.uint8(d) for r, d in zip(refs, offsets, strict=True)]
    p = [10 * math.log10(255**2 / d**2) for d in offsets]
    s = [ssim(r, c) for r, c in zip(refs, cands, strict=True)]
    report = image_metrics(refs, cands)
    assert report["n_images"] == 4
    assert report["psnr_db"] == [round(v, 3) for v in p]
    assert report["psnr_db_mean"] == round(float(np.mean(p)), 3) and report["psnr_db_min"] == round(p[-1], 3)
    assert report["ssim"] == [round(v, 4) for v in s]
    assert report["ssim_mean"] == round(float(np.mean(s)), 4) and report["ssim_min"] == round(min(s), 4)
    assert s == sorted(s, reverse=True) and s[0] < 1.0  # a larger offset is less similar, never identical
    for bad in (([], []), (refs[:2], cands[:3])):
        with pytest.raises(ValueError, match="equally many"):
            image_metrics(*bad)


# --- MACs ---

def _resnet_macs(ngf: int, n_blocks: int, h: int, w: int) -> int:
    """Conv MACs of the reference ResnetGenerator by formula: out pixels x Cin x Cout x k^2 per conv; a
    ConvTranspose counts its input pixels x Cin x Cout x k^2 (its real multiply-adds)."""
    stem = h * w * 3 * ngf * 7 * 7
    down = (h // 2) * (w // 2) * ngf * (2 * ngf) * 9 + (h // 4) * (w // 4) * (2 * ngf) * (4 * ngf) * 9
    blocks = 2 * n_blocks * (h // 4) * (w // 4) * (4 * ngf) * (4 * ngf) * 9
    up = (h // 4) * (w // 4) * (4 * ngf) * (2 * ngf) * 9 + (h // 2) * (w // 2) * (2 * ngf) * ngf * 9
    out = h * w * ngf * 3 * 7 * 7
    return stem + down + blocks + up + out


def test_generator_macs_match_the_hand_count() -> None:
    reference = GeneratorConfig(arch="resnet_9blocks", ngf=64)
    assert _resnet_macs(64, 9, 256, 256) == 49_551_507_456  # GAN Compression's 49.55 GMAC (real, not dense)
    assert generator_macs(reference, 256, 256) == 49_551_507_456
    assert generator_macs(reference, 720, 1280) == _resnet_macs(64, 9, 720, 1280)
    student = GeneratorConfig(arch="resnet_1blocks", ngf=4, n_blocks=1)
    assert generator_macs(student, 32, 32) == _resnet_macs(4, 1, 32, 32)
    assert generator_macs(GeneratorConfig(arch="resnet_6blocks", ngf=16), 256, 256) == _resnet_macs(16, 6, 256, 256)


# --- evaluate() ---

def test_a_generator_against_itself_is_identical_everywhere(tiny_generator_file: Path, synth: Path) -> None:
    report = evaluate(tiny_generator_file, tiny_generator_file, synth, photo_side=32)
    _, meta = load_generator(tiny_generator_file)
    for size, (h, w) in {"256x256": (256, 256), "720x1280": (720, 1280)}.items():
        macs = generator_macs(card_config(meta), h, w)
        assert report["macs"][size] == {"generator": macs, "against": macs, "ratio": 1.0}
    held = report["held_out"]
    assert (held["kind"], held["folder"], held["n_images"]) == ("held-out", str(synth / "testA"), N_TEST)
    photos = report["photos"]
    assert photos["names"] == list(PHOTOS) and photos["side"] == 32 and photos["n_images"] == len(PHOTOS)
    for r in (held, photos):
        assert r["psnr_db_mean"] == r["psnr_db_min"] == math.inf and set(r["psnr_db"]) == {math.inf}
        assert r["ssim_mean"] == r["ssim_min"] == 1.0
    net, _ = load_generator(tiny_generator_file)
    truth = evaluate_synthetic(net, synth)
    assert report["task"] == {"n_images": N_TEST, "identity_psnr_db": truth["psnr_identity_db"],
                              "generator_psnr_db": truth["psnr_model_db"], "against_psnr_db": truth["psnr_model_db"],
                              "delta_db": 0.0}
    assert report["generator"]["sha256"] == sha256(tiny_generator_file) and report["generator"]["ngf"] == 8


def test_a_student_against_a_teacher(student_file: Path, tiny_generator_file: Path, synth: Path) -> None:
    report = evaluate(student_file, tiny_generator_file, synth, photo_side=32)
    g_net, g_meta = load_generator(student_file)
    t_net, t_meta = load_generator(tiny_generator_file)
    assert (report["generator"]["arch"], report["against"]["arch"]) == ("resnet_1blocks", "resnet_2blocks")
    m = report["macs"]["256x256"]
    assert m["generator"] == _resnet_macs(4, 1, 256, 256) and m["against"] == _resnet_macs(8, 2, 256, 256)
    assert m["ratio"] == round(m["against"] / m["generator"], 2) > 1
    # the held-out numbers are image_metrics of the two generators' uint8 outputs on testA
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted((synth / "testA").glob("*.png"))])
    expected = image_metrics(list(translate_uint8(t_net, images)), list(translate_uint8(g_net, images)))
    assert {k: report["held_out"][k] for k in expected} == expected
    assert math.isfinite(expected["psnr_db_mean"]) and expected["ssim_mean"] < 1.0
    assert math.isfinite(report["photos"]["psnr_db_mean"])
    g_task, t_task = evaluate_synthetic(g_net, synth), evaluate_synthetic(t_net, synth)
    assert report["task"] == {"n_images": N_TEST, "identity_psnr_db": g_task["psnr_identity_db"],
                              "generator_psnr_db": g_task["psnr_model_db"], "against_psnr_db": t_task["psnr_model_db"],
                              "delta_db": round(g_task["psnr_model_db"] - t_task["psnr_model_db"], 3)}

    alone = evaluate(student_file, data=synth)  # no --against: MACs and task PSNR only
    assert set(alone) == {"generator", "macs", "task"}
    assert alone["macs"]["256x256"] == {"generator": m["generator"]}
    assert alone["task"] == {k: report["task"][k] for k in ("n_images", "identity_psnr_db", "generator_psnr_db")}

    folder = evaluate(student_file, tiny_generator_file, synth / "testA", photo_side=32)  # a plain folder
    assert folder["held_out"]["kind"] == "folder" and "task" not in folder
    assert {k: folder["held_out"][k] for k in expected} == expected
    training = evaluate(student_file, tiny_generator_file, synth / "testA", photo_side=32, training_folder=True)
    assert training["held_out"]["kind"] == "training images (not held out)"


# --- the CLI ---

def test_cli_eval_summary_json_and_refusals(student_file: Path, tiny_generator_file: Path, synth: Path,
                                            tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_json = tmp_path / "report.json"
    args = ["eval", student_file, "--against", tiny_generator_file, "--data", synth, "--photo-size", "32"]
    code, out, err = run_cli(capsys, *args, "--json", out_json)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "generator student_net_G.pth: resnet_1blocks ngf 4  vs  latest_net_G_A.pth: resnet_2blocks ngf 8"
    assert lines[1].startswith("MACs at 256x256: ") and "x fewer)" in lines[1]
    assert lines[2].startswith("MACs at 720x1280: ")
    assert lines[3].startswith(f"vs --against on {N_TEST} images (held-out {synth / 'testA'}): PSNR mean ")
    assert lines[4].startswith(f"vs --against on {len(PHOTOS)} natural photos (") and "at 32)" in lines[4]
    assert lines[5].startswith(f"task PSNR vs the true mapping ({N_TEST} built-in held-out pairs): ")
    assert lines[6] == f"report -> {out_json}"
    report = json.loads(out_json.read_text())
    expected = json_safe(evaluate(student_file, tiny_generator_file, synth, photo_side=32))
    assert report == json.loads(json.dumps(expected))
    assert f"PSNR mean {report['held_out']['psnr_db_mean']} dB" in lines[3]

    before = sha256(out_json)
    code, out, err = run_cli(capsys, *args, "--json", out_json)
    assert code == 1 and not out
    one_error(err, str(out_json), "--force", alone=True)
    assert sha256(out_json) == before and not leftovers(tmp_path)
    code, _, err = run_cli(capsys, *args, "--json", out_json, "--force")
    assert code == 0, err
    assert json.loads(out_json.read_text()) == report  # deterministic

    # against itself: inf PSNR is written as null in the strict JSON
    self_json = tmp_path / "self.json"
    code, out, err = run_cli(capsys, "eval", tiny_generator_file, "--against", tiny_generator_file, "--data", synth,
                             "--photo-size", "32", "--json", self_json)
    assert code == 0, err
    assert "PSNR mean inf dB" in out
    held = json.loads(self_json.read_text())["held_out"]
    assert held["psnr_db_mean"] is None and held["ssim_mean"] == 1.0

    missing = tmp_path / "nope_net_G.pth"
    for bad in (["eval", missing], ["eval", student_file, "--against", missing]):
        code, out, err = run_cli(capsys, *bad)
        assert code == 1 and not out
        one_error(err, str(missing), "no such file", alone=True)
    code, _, err = run_cli(capsys, "eval", student_file, "--photo-size", "8")
    assert code == 1
    one_error(err, "--photo-size 8", alone=True)
    assert not (tmp_path / "nope_net_G.pth").exists()


def test_cli_eval_takes_the_data_of_the_generators_run(student_file: Path, tiny_generator_file: Path,
                                                       synth: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "latest_net_G.pth").write_bytes(student_file.read_bytes())
    (run / "config.json").write_text(json.dumps({"dataroot": str(synth)}))
    code, out, err = run_cli(capsys, "eval", run, "--against", tiny_generator_file, "--photo-size", "32")
    assert code == 0, err
    assert f"(held-out {synth / 'testA'})" in out and "task PSNR vs the true mapping" in out
    code, out, err = run_cli(capsys, "eval", tiny_generator_file)  # no run, no --data: MACs only
    assert code == 0, err
    assert out.splitlines()[0] == "generator latest_net_G_A.pth: resnet_2blocks ngf 8" and "task" not in out
    assert len(out.splitlines()) == 3


def test_macs_are_counted_at_the_padded_size_a_unet_really_runs() -> None:
    # unet_128 takes multiples of 128: 720x1280 runs as 768x1280 (the count must not crash in the skip concat)
    from cyclegan_deploy.bench.metrics import count_macs_torch
    from cyclegan_deploy.train.distill import generator_macs
    from cyclegan_deploy.train.registry import GeneratorConfig, build_generator

    cfg = GeneratorConfig(arch="unet_128", ngf=4, norm="batch")
    with torch.device("meta"):
        net = build_generator(cfg)
    assert generator_macs(cfg, 720, 1280) == count_macs_torch(net, 768, 1280)["macs"]
    assert generator_macs(cfg, 768, 1280) == count_macs_torch(net, 768, 1280)["macs"]


def test_ssim_fits_its_window_to_tiny_images() -> None:
    from cyclegan_deploy.quality import ssim
    from cyclegan_deploy.train.evaluate import image_metrics

    small = _texture(1, shape=(6, 6, 3))
    assert ssim(small, small) == pytest.approx(1.0)  # a 5x5 window: no error on a 6x6 image
    assert 0 < ssim(small, _texture(2, shape=(6, 6, 3))) < 1
    tiny = _texture(3, shape=(2, 9, 3))
    assert math.isnan(ssim(tiny, tiny))  # no window fits under 3 pixels: NaN, left out of the aggregates
    m = image_metrics([small, tiny], [small, tiny])
    assert m["ssim_mean"] == m["ssim_min"] == 1.0 and math.isnan(m["ssim"][1])


def test_pix2pix_test_pairs_give_the_input_halves(student_file: Path, tmp_path: Path) -> None:
    from PIL import Image

    from cyclegan_deploy.train.evaluate import held_out

    (tmp_path / "p2p" / "test").mkdir(parents=True)
    a, b = _texture(4, shape=(8, 10, 3)), _texture(5, shape=(8, 10, 3))
    Image.fromarray(np.concatenate([a, b], 1)).save(tmp_path / "p2p" / "test" / "0.png")
    _, meta = load_generator(student_file)
    images, kind, _ = held_out(tmp_path / "p2p", meta)
    assert kind.startswith("held-out") and np.array_equal(images[0], a)
    meta.direction = "BtoA"
    assert np.array_equal(held_out(tmp_path / "p2p", meta)[0][0], b)


def test_a_folder_is_bounded_in_count_and_size(student_file: Path, tmp_path: Path) -> None:
    from PIL import Image

    from cyclegan_deploy.train.evaluate import MAX_IMAGES, MAX_SIDE, held_out

    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(MAX_IMAGES + 3):
        Image.fromarray(_texture(i, shape=(4, 4, 3))).save(folder / f"{i:03d}.png")
    Image.fromarray(_texture(9, shape=(MAX_SIDE + 88, 10, 3))).save(folder / "z_tall.png")
    _, meta = load_generator(student_file)
    images, kind, _ = held_out(folder, meta)
    assert len(images) == MAX_IMAGES and kind == f"folder, {MAX_IMAGES} of {MAX_IMAGES + 4}"
    assert images[-1].shape[:2] == (MAX_SIDE, round(10 * MAX_SIDE / (MAX_SIDE + 88)))  # the tall one (last), downscaled


def test_eval_refuses_mismatched_directions_devices_and_sizes(student_file: Path, tiny_generator_file: Path,
                                                              tmp_path: Path) -> None:
    from cyclegan_deploy.errors import CgDeployError
    from cyclegan_deploy.train.evaluate import evaluate

    _, meta = load_generator(student_file)
    net, _ = load_generator(student_file)
    meta.direction = "BtoA"
    flipped = tmp_path / "g_BtoA_net_G.pth"
    save_generator(net, meta, flipped)
    with pytest.raises(CgDeployError, match="maps AtoB but .* maps BtoA"):
        evaluate(flipped, tiny_generator_file)
    with pytest.raises(CgDeployError, match="--device 'foo'"):
        evaluate(student_file, device="foo")
    with pytest.raises(CgDeployError, match="--photo-size 100000"):
        evaluate(student_file, tiny_generator_file, photo_side=100000)

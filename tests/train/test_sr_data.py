"""`cgdeploy data synth-sr` and the SR training set: the layout, LR = bicubic(HR) exactly as documented (PIL
BICUBIC, antialiased), held-out images never in train, the same seed giving the same files, the overwrite rule,
and SRDataset's aligned crops (stored LR or LR made on the fly alike)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_checks import leftovers, one_error, run_cli
from PIL import Image

pytest.importorskip("skimage")
torch = pytest.importorskip("torch")

from cyclegan_deploy.errors import DataError  # noqa: E402
from cyclegan_deploy.frames import from_model  # noqa: E402
from cyclegan_deploy.quality import PHOTOS  # noqa: E402
from cyclegan_deploy.train.config import TrainConfig  # noqa: E402
from cyclegan_deploy.train.sr_data import CARD_NAME, TRAIN_PHOTOS, write_sr_data  # noqa: E402
from cyclegan_deploy.train.sr_dataset import SRDataset  # noqa: E402

N_TRAIN, N_TEST, SIZE = 3, 2, 64


@pytest.fixture(scope="module")
def sr_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("srdata") / "data"
    write_sr_data(out, scale=4, n_train=N_TRAIN, n_test=N_TEST, size=SIZE, seed=1)
    return out


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _digest(path: Path) -> str:
    return hashlib.sha256(_rgb(path).tobytes()).hexdigest()


def test_layout_card_and_held_out_photographs(sr_root: Path) -> None:
    card = json.loads((sr_root / CARD_NAME).read_text())
    assert (card["format"], card["scale"], card["seed"], card["scene_size"]) == ("cgdeploy-sr-data-v1", 4, 1, SIZE)
    expected = {"train": {f"scene_{i:06d}.png" for i in range(N_TRAIN)} | {f"photo_{n}.png" for n in TRAIN_PHOTOS},
                "test": {f"scene_{i:06d}.png" for i in range(N_TEST)} | {f"photo_{n}.png" for n in PHOTOS}}
    for split, names in expected.items():
        for folder in ("hr", "lr"):
            assert {p.name for p in (sr_root / split / folder).iterdir()} == names, (split, folder)
        assert set(card["files"][split]) == names
    assert card["n_test"] == N_TEST + len(PHOTOS) and "bicubic" in card["lr"].lower()
    test_files = card["files"]["test"]
    assert test_files["photo_chelsea.png"] == "photo" and test_files["scene_000000.png"] == "scene"
    assert leftovers(sr_root.parent) == []


def test_lr_is_pil_bicubic_of_the_modcropped_hr_exactly(sr_root: Path) -> None:
    for split in ("train", "test"):
        for hr_path in sorted((sr_root / split / "hr").iterdir()):
            hr, lr = _rgb(hr_path), _rgb(sr_root / split / "lr" / hr_path.name)
            assert hr.shape[0] % 4 == 0 and hr.shape[1] % 4 == 0, hr_path.name
            # the documented recipe, written out here: PIL's Image.resize with BICUBIC to 1/4, no reducing_gap
            expected = Image.fromarray(hr).resize((hr.shape[1] // 4, hr.shape[0] // 4), Image.Resampling.BICUBIC)
            assert np.array_equal(lr, np.asarray(expected)), hr_path.name
    # chelsea is 300x451: cut to 300x448 at the right, not resized
    assert _rgb(sr_root / "test" / "hr" / "photo_chelsea.png").shape == (300, 448, 3)


def test_no_held_out_image_is_a_training_image(sr_root: Path) -> None:
    train = {_digest(p) for p in (sr_root / "train" / "hr").iterdir()}
    test = {_digest(p) for p in (sr_root / "test" / "hr").iterdir()}
    assert len(test) == N_TEST + len(PHOTOS) and not train & test
    # not even chelsea's twin: skimage.data.cat() is chelsea, and it is not among the training photographs
    assert "cat" not in TRAIN_PHOTOS


def test_same_seed_same_files_and_the_overwrite_rule(sr_root: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "again"
    code, stdout, _ = run_cli(capsys, "data", "synth-sr", out, "--n-train", N_TRAIN, "--n-test", N_TEST, "--size",
                              SIZE, "--seed", 1)
    assert code == 0 and stdout.count("\n") == 1
    assert stdout.startswith(f"wrote {N_TRAIN + len(TRAIN_PHOTOS)} training pairs ({N_TRAIN} scenes + "
                             f"{len(TRAIN_PHOTOS)} photographs) and {N_TEST + len(PHOTOS)} held-out pairs")
    for path in sorted(sr_root.rglob("*.png")):
        assert (out / path.relative_to(sr_root)).read_bytes() == path.read_bytes(), path
    before = (out / CARD_NAME).read_bytes()
    code, _, err = run_cli(capsys, "data", "synth-sr", out, "--size", SIZE)
    assert code == 1
    one_error(err, str(out), "--force")
    assert (out / CARD_NAME).read_bytes() == before
    code, _, _ = run_cli(capsys, "data", "synth-sr", out, "--n-train", 1, "--n-test", 1, "--size", SIZE, "--force",
                         "--scale", 2)
    assert code == 0 and json.loads((out / CARD_NAME).read_text())["scale"] == 2
    assert len(list((out / "train" / "hr").glob("scene_*.png"))) == 1


@pytest.mark.parametrize(("args", "words"), [(["--scale", "3"], ["--scale 3", "2 or 4"]),
                                             (["--size", "32"], ["--size 32", "64"]),
                                             (["--n-test", "0"], ["--n-test"])])
def test_bad_options_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                         words: list[str]) -> None:
    code, _, err = run_cli(capsys, "data", "synth-sr", tmp_path / "out", *args)
    assert code == 1
    one_error(err, *words)
    assert not (tmp_path / "out").exists()


def _cfg(root: Path, **kw: object) -> TrainConfig:
    values = {"ngf": 8, "n_blocks": 1, "crop_size": 32, "num_workers": 0} | kw
    return TrainConfig.for_model("srgan", dataroot=str(root), **values)


def _find(image: np.ndarray, patch: np.ndarray) -> tuple[int, int]:
    """(y, x) where `patch` lies in `image` (exactly once)."""
    ph, pw = patch.shape[:2]
    hits = [(y, x) for y in range(image.shape[0] - ph + 1) for x in range(image.shape[1] - pw + 1)
            if np.array_equal(image[y:y + ph, x:x + pw], patch)]
    assert len(hits) == 1, hits
    return hits[0]


def test_sr_dataset_gives_aligned_crops_in_the_generators_ranges(sr_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(sr_root / "train", root / "train", ignore=shutil.ignore_patterns("photo_*"))
    dataset = SRDataset(_cfg(root, no_flip=True), root)
    assert len(dataset) == N_TRAIN * (SIZE * SIZE // 32**2)  # a 64x64 scene holds four 32x32 crops' area
    for key in [(0, 11), (5, 12), (len(dataset) - 1, 13)]:
        item = dataset[key]
        assert item["A"].shape == (3, 8, 8) and item["B"].shape == (3, 32, 32)
        assert 0.0 <= float(item["A"].min()) and float(item["B"].min()) < 0.0  # LR in [0, 1], HR in [-1, 1]
        lr = from_model(item["A"][None].numpy(), (0.0, 1.0))[0]
        hr = from_model(item["B"][None].numpy(), (-1.0, 1.0))[0]
        name = Path(item["B_path"]).name
        y, x = _find(_rgb(root / "train" / "lr" / name), lr)
        assert np.array_equal(_rgb(root / "train" / "hr" / name)[4 * y:4 * y + 32, 4 * x:4 * x + 32], hr)
    flipped = SRDataset(_cfg(root), root)[(0, 11)]
    assert flipped["A"].shape == (3, 8, 8)
    # without train/lr the LR is made on the fly by the same downscale: the same samples
    shutil.rmtree(root / "train" / "lr")
    on_the_fly = SRDataset(_cfg(root), root)[(0, 11)]
    assert torch.equal(on_the_fly["A"], flipped["A"]) and torch.equal(on_the_fly["B"], flipped["B"])


def test_sr_dataset_refuses_missing_mismatched_and_small_images(sr_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(sr_root / "train", root / "train", ignore=shutil.ignore_patterns("photo_*"))
    with pytest.raises(DataError, match="scale"):  # LR made for x4, trained at x2
        SRDataset(_cfg(root, netG="srresnet_x2"), root).pair(0)
    with pytest.raises(DataError, match="smaller than --crop-size 96"):
        SRDataset(_cfg(root, crop_size=96), root)
    (root / "train" / "lr" / "scene_000001.png").unlink()
    with pytest.raises(DataError, match="missing LR image"):
        SRDataset(_cfg(root), root)
    with pytest.raises(DataError, match="not a super-resolution data root"):
        SRDataset(_cfg(tmp_path), tmp_path)

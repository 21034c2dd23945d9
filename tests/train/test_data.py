"""Datasets: layout, scanning (recursive, sorted, skipped files), RGB conversion, transforms, sampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from cyclegan_deploy.errors import DataError  # noqa: E402
from cyclegan_deploy.train.config import TrainConfig  # noqa: E402
from cyclegan_deploy.train.data import (  # noqa: E402
    AlignedDataset,
    DataWarning,
    EpochSampler,
    SingleDataset,
    UnpairedDataset,
    apply_transform,
    draw_params,
    list_images,
    make_loader,
)


def _img(path: Path, size: tuple[int, int] = (40, 36), mode: str = "RGB", value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    arr = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    Image.fromarray(arr.squeeze(-1) if channels == 1 else arr, mode).save(path)
    return path


def _cfg(**kw: object) -> TrainConfig:
    base: dict[str, object] = {"load_size": 36, "crop_size": 32, "num_workers": 0}
    base.update(kw)
    return TrainConfig.for_model("cyclegan", **base)


@pytest.fixture
def unpaired(tmp_path: Path) -> Path:
    for i in range(5):
        _img(tmp_path / "trainA" / f"a{i}.png", value=i)
    for i in range(3):
        _img(tmp_path / "trainB" / "nested" / f"b{i}.jpg", value=10 + i)
    return tmp_path


def test_list_images_is_recursive_sorted_and_reports_skipped_files(tmp_path: Path) -> None:
    _img(tmp_path / "z.png")
    _img(tmp_path / "sub" / "a.png")
    _img(tmp_path / "b.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8garbage")
    (tmp_path / ".DS_Store").write_bytes(b"\0\0")
    with pytest.warns(DataWarning) as record:
        paths = list_images(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == ["b.jpg", "sub/a.png", "z.png"]
    assert len(record) == 1  # reported once, in one message naming every skipped file
    message = str(record[0].message)
    assert str(tmp_path / "broken.jpg") in message and str(tmp_path / "notes.txt") in message
    assert ".DS_Store" not in message


def test_missing_and_empty_domains_name_the_folder(tmp_path: Path) -> None:
    _img(tmp_path / "trainA" / "a.png")
    with pytest.raises(DataError, match="trainB: folder not found"):
        UnpairedDataset(_cfg(), tmp_path)
    (tmp_path / "trainB").mkdir()
    (tmp_path / "trainB" / "readme.txt").write_text("x")
    with pytest.warns(DataWarning), pytest.raises(DataError, match=r"trainB: no readable images"):
        UnpairedDataset(_cfg(), tmp_path)
    with pytest.raises(DataError, match="data root not found"):
        UnpairedDataset(_cfg(), tmp_path / "nope")
    with pytest.raises(DataError, match="train: folder not found"):
        AlignedDataset(_cfg(), tmp_path)


def test_gray_and_rgba_become_rgb(tmp_path: Path) -> None:
    _img(tmp_path / "g.png", mode="L")
    _img(tmp_path / "r.png", mode="RGBA")
    ds = SingleDataset(_cfg(preprocess="none", no_flip=True), tmp_path)
    for i in range(2):
        x = ds[i]["A"]
        assert x.shape == (3, 36, 40) and x.dtype == torch.float32
    gray = np.asarray(Image.open(tmp_path / "g.png"))
    x = ds[0]["A"].numpy()
    assert np.allclose(x[0], gray / 127.5 - 1, atol=1e-6) and np.array_equal(x[0], x[2])


def test_reference_transforms(tmp_path: Path) -> None:
    img = Image.open(_img(tmp_path / "x.png", size=(50, 30)))
    rng = np.random.default_rng(0)
    for preprocess, shape in (("resize_and_crop", (3, 32, 32)), ("crop", (3, 28, 28)), ("none", (3, 32, 48)),
                              ("scale_width", (3, 32, 36)), ("scale_width_and_crop", (3, 28, 28))):
        crop = 28 if "crop" in preprocess and preprocess != "resize_and_crop" else 32
        cfg = _cfg(preprocess=preprocess, crop_size=crop, load_size=36)
        x = apply_transform(img, cfg, draw_params(cfg, img.size, rng))
        assert tuple(x.shape) == shape, preprocess
        assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    # flip is a horizontal mirror of the unflipped crop
    cfg = _cfg(preprocess="crop", crop_size=28)
    from cyclegan_deploy.train.data import TransformParams

    a = apply_transform(img, cfg, TransformParams(3, 1, False))
    b = apply_transform(img, cfg, TransformParams(3, 1, True))
    assert torch.equal(a.flip(-1), b)
    assert torch.equal(a, torch.from_numpy(np.asarray(img)[1:29, 3:31].transpose(2, 0, 1).astype(np.float32)
                                           / 127.5 - 1.0))


def test_aligned_halves_get_the_same_crop_and_flip(tmp_path: Path) -> None:
    half = np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    (tmp_path / "train").mkdir()
    Image.fromarray(np.concatenate([half, 255 - half], 1)).save(tmp_path / "train" / "p.png")
    ds = AlignedDataset(TrainConfig.for_model("pix2pix", load_size=40, crop_size=32, netG="resnet_2blocks"), tmp_path)
    for seed in range(6):
        item = ds[(0, seed)]
        assert torch.allclose(item["A"], -item["B"], atol=1e-6)  # 255 - x maps to -x in [-1, 1]


def test_unpaired_items_are_deterministic_per_key_and_b_is_random(unpaired: Path) -> None:
    ds = UnpairedDataset(_cfg(), unpaired)
    assert len(ds) == 5
    assert torch.equal(ds[(2, 7)]["A"], ds[(2, 7)]["A"]) and ds[(2, 7)]["B_path"] == ds[(2, 7)]["B_path"]
    assert ds[(2, 7)]["A_path"].endswith("a2.png")
    b_picks = {ds[(0, s)]["B_path"] for s in range(20)}
    assert len(b_picks) == 3  # B drawn at random, not paired with A's index


def test_sampler_order_per_epoch_and_resume_offset() -> None:
    s = EpochSampler(10, seed=3)
    s.set_epoch(1)
    e1 = list(s)
    s.set_epoch(2)
    e2 = list(s)
    assert sorted(i for i, _ in e1) == list(range(10)) and [i for i, _ in e1] != [i for i, _ in e2]
    s.set_epoch(1, start=4)
    assert list(s) == e1[4:] and len(s) == 6
    assert list(EpochSampler(10, seed=3).__iter__()) == e1  # fresh sampler, same order: nothing global involved


def test_loader_batches_do_not_depend_on_workers(unpaired: Path) -> None:
    batches = []
    for workers in (0, 2):
        cfg = _cfg(num_workers=workers, batch_size=2)
        sampler = EpochSampler(5, seed=0)
        sampler.set_epoch(3)
        batches.append(list(make_loader(UnpairedDataset(cfg, unpaired), cfg, sampler)))
    assert len(batches[0]) == 3
    for b0, b2 in zip(*batches, strict=True):
        assert torch.equal(b0["A"], b2["A"]) and torch.equal(b0["B"], b2["B"]) and b0["B_path"] == b2["B_path"]


def test_image_that_fails_to_decode_is_reported_and_skipped(tmp_path: Path) -> None:
    good = _img(tmp_path / "a.png")
    data = good.read_bytes()
    (tmp_path / "b.png").write_bytes(data[: len(data) // 2])  # truncated: header fine, pixels missing
    with pytest.warns(DataWarning):
        ds = SingleDataset(_cfg(preprocess="none"), tmp_path)
        items = [ds[i] for i in range(len(ds))]
    assert all(item["A_path"] == str(good) for item in items)

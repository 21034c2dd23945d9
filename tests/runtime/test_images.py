"""`translate_images`: same size out as in, grey/RGBA/palette/16-bit inputs, EXIF rotation, unreadable files
skipped and listed, batching of same-size images, atomic writes; parity vs direct backend calls (PNG: exact).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cyclegan_deploy import frames as F
from cyclegan_deploy.errors import ConfigError, MediaError
from cyclegan_deploy.images import translate_images
from cyclegan_deploy.metadata import ModelMeta


class PixelModel:
    """Per-pixel colour mix + tanh in numpy: deterministic, so PNG outputs must match exactly."""

    name = "numpy-test"

    def __init__(self) -> None:
        self.meta = ModelMeta(arch="resnet_2blocks", ngf=8, n_blocks=2, multiple=4)
        self.w = np.array([[0.2, 0.7, 0.1], [0.6, -0.3, 0.5], [-0.4, 0.3, 0.9]], np.float32)
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.shapes.append(x.shape)
        return np.tanh(np.einsum("oc,nchw->nohw", self.w, x) * 1.2).astype(np.float32)

    def close(self) -> None:
        pass


def expected(model, rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    return F.from_model(F.crop(model(F.pad_to_multiple(F.to_model(rgb), model.meta.multiple)), h, w))[0]


def rgb_image(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture()
def folder(tmp_path) -> Path:
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(rgb_image(20, 30, 0)).save(src / "a.png")
    Image.fromarray(rgb_image(20, 30, 1)).save(src / "sub" / "b.png")
    Image.fromarray(rgb_image(20, 30, 2)).save(src / "c.png")
    Image.fromarray(rgb_image(21, 33, 3)[..., 0]).save(src / "gray.png")  # odd size, mode L
    rgba = np.dstack([rgb_image(18, 26, 4), np.linspace(0, 255, 18 * 26).reshape(18, 26).astype(np.uint8)])
    Image.fromarray(rgba, "RGBA").save(src / "alpha.png")
    Image.fromarray(rgb_image(16, 16, 5)).convert("P", palette=Image.ADAPTIVE).save(src / "pal.gif")
    Image.fromarray((np.arange(12 * 14).reshape(12, 14) * 300).astype(np.uint16)).save(src / "deep.png")
    Image.fromarray(rgb_image(24, 32, 6)).save(src / "photo.jpg", quality=90)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    data = (src / "photo.jpg").read_bytes()
    (src / "cut.jpg").write_bytes(data[: len(data) // 3])
    (src / "notes.txt").write_text("not an image")
    return src


def test_folder_sizes_modes_and_skips(folder, tmp_path):
    out = tmp_path / "out"
    model = PixelModel()
    report = translate_images(folder, out, model, batch=2)
    names = sorted(str(p.relative_to(out)) for p in report.written)
    assert names == ["a.png", "alpha.png", "c.png", "deep.png", "gray.png", "pal.png", "photo.jpg", "sub/b.png"]
    assert sorted(p.name for p, _ in report.skipped) == ["broken.png", "cut.jpg"]
    assert all("unreadable" in why for _, why in report.skipped)
    for src_name in ["a.png", "sub/b.png", "gray.png", "alpha.png", "deep.png", "photo.jpg"]:
        with Image.open(folder / src_name) as im_in, Image.open(out / src_name) as im_out:
            assert im_out.size == im_in.size
    with Image.open(folder / "gray.png") as im:
        gray = np.asarray(im.convert("RGB"))
    assert np.array_equal(np.asarray(Image.open(out / "gray.png")), expected(PixelModel(), gray))
    with Image.open(out / "alpha.png") as im:  # alpha kept, colour translated from the RGB part
        assert im.mode == "RGBA"
        got = np.asarray(im)
    with Image.open(folder / "alpha.png") as im:
        src_rgba = np.asarray(im)
    assert np.array_equal(got[..., 3], src_rgba[..., 3])
    assert np.array_equal(got[..., :3], expected(PixelModel(), src_rgba[..., :3]))
    deep = np.asarray(Image.open(out / "deep.png"))
    assert deep.shape == (12, 14, 3) and deep.std() > 5  # 16-bit scaled to 8-bit, not clipped to white
    assert not [p for p in out.rglob("*") if "partial" in p.name]


def test_same_size_images_are_batched(folder, tmp_path):
    model = PixelModel()
    translate_images(folder, tmp_path / "out", model, batch=2)
    sizes = [s[2:] for s in model.shapes]
    # a.png, c.png, sub/b.png are 20x30 (padded to 20x32): one batch of 2, then one of 1
    assert sorted(s[0] for s in model.shapes if s[2:] == (20, 32)) == [1, 2]
    assert len(sizes) == len(model.shapes) and sum(s[0] for s in model.shapes) == 8


def test_single_image_and_exif_rotation(tmp_path):
    img = rgb_image(20, 36, 7)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": a phone photo taken upright
    Image.fromarray(img).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    report = translate_images(tmp_path / "phone.jpg", tmp_path / "out", PixelModel())
    assert report.written == [tmp_path / "out" / "phone.jpg"]
    with Image.open(report.written[0]) as im:
        assert im.size == (20, 36)  # written upright: width and height swapped vs the stored pixels


def test_real_backend_tiny_onnx(tmp_path, tiny_onnx):
    from cyclegan_deploy.backends import load_backend

    src = tmp_path / "img.png"
    img = rgb_image(30, 42, 8)
    Image.fromarray(img).save(src)
    backend = load_backend(tiny_onnx, backend="onnxruntime", device="cpu")
    try:
        report = translate_images(src, tmp_path / "out", backend)
        ref = expected(backend, img)
    finally:
        backend.close()
    got = np.asarray(Image.open(report.written[0]))
    assert got.shape == (30, 42, 3) and np.abs(got.astype(int) - ref).max() <= 1


def test_errors(tmp_path):
    model = PixelModel()
    with pytest.raises(MediaError, match="no such file"):
        translate_images(tmp_path / "missing", tmp_path / "out", model)
    bad = tmp_path / "bad"
    bad.mkdir()
    with pytest.raises(MediaError, match="no images found"):
        translate_images(bad, tmp_path / "out", model)
    (bad / "x.png").write_bytes(b"nope")
    with pytest.raises(MediaError, match="no image could be translated.*x.png"):
        translate_images(bad, tmp_path / "out", model)
    with pytest.raises(ConfigError, match="input folder"):
        translate_images(bad, bad, model)


def test_output_inside_input_is_not_reread(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(rgb_image(8, 8, 9)).save(src / "a.png")
    for _ in range(2):
        report = translate_images(src, src / "out", PixelModel())
        assert report.written == [src / "out" / "a.png"]


def test_cli_translate(tmp_path, tiny_onnx, capsys):
    from cyclegan_deploy.cli import main

    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(rgb_image(10, 12, 10)).save(src / "a.png")
    (src / "b.png").write_bytes(b"broken")
    rc = main(["translate", str(src), "-o", str(tmp_path / "out"), "--model", str(tiny_onnx)])
    captured = capsys.readouterr()
    assert rc == 0 and "translated 1 image(s), skipped 1" in captured.out and "b.png" in captured.out
    rc = main(["translate", str(src / "b.png"), "-o", str(tmp_path / "out"), "--model", str(tiny_onnx)])
    assert rc == 1 and capsys.readouterr().err.startswith("error: ")


def test_two_inputs_for_one_output_name_are_not_overwritten(tmp_path):
    """pic.gif is written as pic.png: with a pic.png beside it, the GIF is skipped and listed, not written
    over the PNG's output (or the PNG over the GIF's)."""
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(rgb_image(8, 8, 11)).save(src / "pic.png")
    Image.fromarray(rgb_image(8, 8, 12)).convert("P", palette=Image.ADAPTIVE).save(src / "pic.gif")
    report = translate_images(src, tmp_path / "out", PixelModel())
    assert report.written == [tmp_path / "out" / "pic.png"]
    assert [(p.name, "same output name" in why) for p, why in report.skipped] == [("pic.gif", True)]
    with Image.open(tmp_path / "out" / "pic.png") as im:
        assert np.array_equal(np.asarray(im), expected(PixelModel(), rgb_image(8, 8, 11)))

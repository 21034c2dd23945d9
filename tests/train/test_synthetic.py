"""The built-in known-mapping dataset: determinism, unpaired layout, the stored f, and the PSNR evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cyclegan_deploy.errors import DataError
from cyclegan_deploy.quality import psnr  # noqa: E402
from cyclegan_deploy.train.synthetic import (
    DEFAULT_MAPPING,
    MAPPING_NAME,
    apply_mapping,
    read_mapping,
    write_synthetic,
)


def _read(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))])


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("syn") / "data", n_train=6, n_test=4, size=32, seed=5)


def test_layout_and_card(synth: Path) -> None:
    for folder, n in (("trainA", 6), ("trainB", 6), ("testA", 4), ("testB_true", 4)):
        assert len(list((synth / folder).glob("*.png"))) == n
    card = json.loads((synth / MAPPING_NAME).read_text())
    assert card["seed"] == 5 and card["size"] == 32 and card["mapping"] == DEFAULT_MAPPING
    assert read_mapping(synth) == DEFAULT_MAPPING
    assert _read(synth / "trainA").shape == (6, 32, 32, 3)
    assert not list(synth.parent.glob(".*partial*"))  # the temp folder was renamed, nothing left behind


def test_same_seed_same_files_other_seed_other_files(synth: Path, tmp_path: Path) -> None:
    again = write_synthetic(tmp_path / "again", n_train=6, n_test=4, size=32, seed=5)
    other = write_synthetic(tmp_path / "other", n_train=6, n_test=4, size=32, seed=6)
    for folder in ("trainA", "trainB", "testA", "testB_true"):
        assert np.array_equal(_read(synth / folder), _read(again / folder)), folder
        assert not np.array_equal(_read(synth / folder), _read(other / folder)), folder


def test_test_pairs_are_the_stored_mapping_and_train_is_unpaired(synth: Path) -> None:
    a, b_true = _read(synth / "testA"), _read(synth / "testB_true")
    assert np.array_equal(b_true, apply_mapping(a, read_mapping(synth)))
    train_a, train_b = _read(synth / "trainA"), _read(synth / "trainB")
    # B is f of *other* scenes: no B image is f of any A image
    mapped = apply_mapping(train_a)
    assert all(not np.array_equal(mapped[i], train_b[j]) for i in range(6) for j in range(6))
    # the mapping is far from identity, so identity is a poor baseline
    assert psnr(a, b_true, 255.0) < 15.0


def test_apply_mapping_matches_the_formula() -> None:
    x = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [10, 200, 90]]], dtype=np.uint8)
    m = DEFAULT_MAPPING
    xf = x.astype(np.float64) / 255
    want = np.clip(xf @ np.array(m["matrix"]).T + np.array(m["bias"]), 0, 1) ** np.array(m["gamma"])
    assert np.array_equal(apply_mapping(x), np.rint(want * 255).astype(np.uint8))
    # a hand-checked value: black -> the bias, through the gamma
    assert apply_mapping(x)[0, 0].tolist() == [round(0.02**0.8 * 255), 0, round(0.03 * 255)]
    with pytest.raises(DataError):
        apply_mapping(x.astype(np.float32))  # type: ignore[arg-type]


def test_refuses_to_overwrite_and_validates(synth: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="already exists"):
        write_synthetic(synth, n_train=1, n_test=1, size=32)
    with pytest.raises(DataError, match="n-train"):
        write_synthetic(tmp_path / "x", n_train=0)
    with pytest.raises(DataError, match="mapping.json: not found"):
        read_mapping(tmp_path)


def test_evaluate_synthetic_scores_exact_f_high_and_identity_zero_gain(synth: Path) -> None:
    torch = pytest.importorskip("torch")
    from cyclegan_deploy.train.synthetic import evaluate_synthetic

    class TrueF(torch.nn.Module):
        """f written in torch on [-1, 1] tensors: what a perfect G_AtoB would compute."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            rgb = (x + 1) / 2
            m, b, g = (torch.tensor(DEFAULT_MAPPING[k], dtype=torch.float64) for k in ("matrix", "bias", "gamma"))
            y = torch.einsum("oc,nchw->nohw", m, rgb.double()) + b[None, :, None, None]
            return (y.clamp(0, 1) ** g[None, :, None, None] * 2 - 1).float()

    perfect = evaluate_synthetic(TrueF(), synth)
    identity = evaluate_synthetic(torch.nn.Identity(), synth)
    assert perfect["psnr_model_db"] > 50 and perfect["gain_db"] > 35
    assert identity["gain_db"] == 0.0 and identity["psnr_identity_db"] == perfect["psnr_identity_db"]
    assert perfect["n_images"] == 4

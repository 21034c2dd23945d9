"""Super-resolution families: SRResNet (SRGAN) and RRDBNet (ESRGAN / Real-ESRGAN).

The expected keys and shapes are written from BasicSR's published RRDBNet layout (basicsr/archs/rrdbnet_arch.py;
Real-ESRGAN's .pth files), not read back from our modules: a file saved by Real-ESRGAN must load unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from cyclegan_deploy.errors import CheckpointError, ConfigError  # noqa: E402
from cyclegan_deploy.train import registry  # noqa: E402
from cyclegan_deploy.train.checkpoints import load_generator  # noqa: E402
from cyclegan_deploy.train.models import seeded_generator  # noqa: E402
from cyclegan_deploy.train.registry import GeneratorConfig, build_generator  # noqa: E402
from cyclegan_deploy.train.sr_models import SRGANDiscriminator  # noqa: E402

FEAT, GROW = 8, 4


def rrdb(scale: int, blocks: int = 2, seed: int = 0) -> torch.nn.Module:
    return seeded_generator(GeneratorConfig(arch=f"rrdbnet_x{scale}", ngf=FEAT, n_blocks=blocks, grow=GROW), seed)


def srresnet(scale: int, blocks: int = 2, seed: int = 0) -> torch.nn.Module:
    return seeded_generator(GeneratorConfig(arch=f"srresnet_x{scale}", ngf=FEAT, n_blocks=blocks), seed)


def published_rrdb_keys(blocks: int) -> set[str]:
    """Every key of a BasicSR RRDBNet with `blocks` RRDBs (the trunk convs have weight and bias)."""
    names = ["conv_first", "conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]
    names += [f"body.{i}.rdb{j}.conv{k}" for i in range(blocks) for j in (1, 2, 3) for k in range(1, 6)]
    return {f"{n}.{p}" for n in names for p in ("weight", "bias")}


@pytest.mark.parametrize(("scale", "in_ch"), [(4, 3), (2, 12), (1, 48)])
def test_rrdbnet_has_the_published_key_layout(scale: int, in_ch: int) -> None:
    state = rrdb(scale).state_dict()
    assert set(state) == published_rrdb_keys(2)
    assert state["conv_first.weight"].shape == (FEAT, in_ch, 3, 3)  # x2/x1: pixel-unshuffled by 2/4 first
    assert state["body.0.rdb1.conv1.weight"].shape == (GROW, FEAT, 3, 3)
    assert state["body.1.rdb3.conv4.weight"].shape == (GROW, FEAT + 3 * GROW, 3, 3)
    assert state["body.0.rdb2.conv5.weight"].shape == (FEAT, FEAT + 4 * GROW, 3, 3)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        assert state[f"{name}.weight"].shape == (FEAT, FEAT, 3, 3)
    assert state["conv_last.weight"].shape == (3, FEAT, 3, 3)


@pytest.mark.parametrize("scale", [2, 4])
def test_srresnet_layout(scale: int) -> None:
    state = srresnet(scale).state_dict()
    assert state["conv_first.weight"].shape == (FEAT, 3, 9, 9) and state["act_first.weight"].shape == (1,)
    assert state["body.1.conv2.weight"].shape == (FEAT, FEAT, 3, 3) and "body.1.bn2.running_var" in state
    assert "body.0.conv1.bias" not in state  # a conv feeding a BN has no bias
    ups = {k.split(".")[1] for k in state if k.startswith("upsample.")}
    assert ups == {str(i) for i in range(scale.bit_length() - 1)}  # one PixelShuffle x2 stage per factor 2
    assert state["upsample.0.conv.weight"].shape == (4 * FEAT, FEAT, 3, 3)
    assert state["conv_last.weight"].shape == (3, FEAT, 9, 9)


@pytest.mark.parametrize(("arch", "low", "high"), [("rrdbnet_x4", 0, 1), ("rrdbnet_x2", 0, 1), ("rrdbnet_x1", 0, 1),
                                                   ("srresnet_x4", -1, 1), ("srresnet_x2", -1, 1)])
def test_output_size_and_range(arch: str, low: float, high: float) -> None:
    torch.manual_seed(0)
    model = build_generator(GeneratorConfig(arch=arch, ngf=FEAT, n_blocks=1, grow=GROW)).eval()  # default init
    scale = int(arch.rsplit("x", 1)[1])
    with torch.no_grad():
        y = model(torch.rand(2, 3, 16, 20))
    assert y.shape == (2, 3, 16 * scale, 20 * scale)
    assert low <= float(y.min()) and float(y.max()) <= high


def test_pixel_unshuffle_orders_channels_as_basicsr() -> None:
    """BasicSR's pixel_unshuffle: view (b, c, h, s, w, s), permute (0, 1, 3, 5, 2, 4): channel c*s*s + dy*s + dx."""
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    basicsr = x.view(2, 3, 2, 2, 3, 2).permute(0, 1, 3, 5, 2, 4).reshape(2, 12, 2, 3)
    assert torch.equal(torch.nn.functional.pixel_unshuffle(x, 2), basicsr)


@pytest.mark.parametrize("cfg", [
    GeneratorConfig(arch="rrdbnet_x4", ngf=FEAT, n_blocks=2, grow=GROW),
    GeneratorConfig(arch="rrdbnet_x2", ngf=16, n_blocks=1, grow=GROW),
    GeneratorConfig(arch="rrdbnet_x1", ngf=FEAT, n_blocks=3, grow=6),
    GeneratorConfig(arch="srresnet_x4", ngf=FEAT, n_blocks=2),
    GeneratorConfig(arch="srresnet_x2", ngf=12, n_blocks=0),
])
def test_arch_scale_width_depth_inferred_from_keys(cfg: GeneratorConfig) -> None:
    found = registry.detect(build_generator(cfg).state_dict())
    assert (found.arch, found.scale, found.ngf, found.n_blocks, found.input_nc, found.output_nc) == (
        cfg.arch, cfg.scale, cfg.ngf, cfg.n_blocks, 3, 3)
    if cfg.family.name == "rrdbnet":
        assert found.grow == cfg.grow


@pytest.mark.parametrize(("arch", "scale", "multiple", "norm", "out_range"), [
    ("rrdbnet_x4", 4, 1, "none", [0.0, 1.0]), ("rrdbnet_x2", 2, 2, "none", [0.0, 1.0]),
    ("rrdbnet_x1", 1, 4, "none", [0.0, 1.0]), ("srresnet_x4", 4, 1, "batch", [-1.0, 1.0])])
def test_cards_carry_scale_multiple_and_ranges(arch: str, scale: int, multiple: int, norm: str,
                                               out_range: list[float]) -> None:
    card = GeneratorConfig(arch=arch, norm="instance").to_meta()  # the architecture fixes its norm
    assert (card.scale, card.multiple, card.min_size, card.norm) == (scale, multiple, multiple, norm)
    assert (card.input_range, card.output_range) == ([0.0, 1.0], out_range)
    assert (card.ngf, card.n_blocks) == ((64, 23) if arch.startswith("rrdb") else (64, 16))  # the papers' defaults


def test_unknown_sr_scales_are_refused() -> None:
    for arch in ("rrdbnet_x3", "srresnet_x1", "srresnet_x8"):
        with pytest.raises(ConfigError, match=f"unknown --arch '{arch}'.*srresnet_x4.*rrdbnet_x2"):
            GeneratorConfig(arch=arch)


def _check_same(path: Path, ref: torch.nn.Module, arch: str) -> None:
    model, meta = load_generator(path)
    assert (meta.arch, meta.family, meta.ngf, meta.n_blocks) == (arch, arch.split("_")[0], FEAT, 2)
    x = torch.rand(1, 3, 12, 16)
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))


@pytest.mark.parametrize("wrapper", ["bare", "params", "params_ema", "both", "module"])
@pytest.mark.parametrize("arch", ["rrdbnet_x4", "rrdbnet_x2", "srresnet_x4"])
def test_published_files_load(tmp_path: Path, arch: str, wrapper: str) -> None:
    make = rrdb if arch.startswith("rrdb") else srresnet
    ref, other = make(int(arch[-1]), seed=1), make(int(arch[-1]), seed=2)
    state = ref.state_dict()
    saved = {"bare": state, "params": {"params": state}, "params_ema": {"params_ema": state},
             # BasicSR writes both; the EMA weights are the published ones
             "both": {"params": other.state_dict(), "params_ema": state},
             "module": {"params_ema": {f"module.{k}": v for k, v in state.items()}}}[wrapper]
    path = tmp_path / "RealESRGAN_x4plus.pth"
    torch.save(saved, path)
    _check_same(path, ref, arch)


def _old_esrgan_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The original ESRGAN repository's layout of the same weights (facts from spandrel's converter)."""
    n = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("body."))
    fixed = {"conv_first": "model.0", "conv_body": f"model.1.sub.{n}", "conv_up1": "model.3", "conv_up2": "model.6",
             "conv_hr": "model.8", "conv_last": "model.10"}
    out = {}
    for key, value in state.items():
        m = re.fullmatch(r"body\.(\d+)\.rdb(\d)\.conv(\d)\.(weight|bias)", key)
        name, _, leaf = key.rpartition(".")
        out[f"model.1.sub.{m[1]}.RDB{m[2]}.conv{m[3]}.0.{m[4]}" if m else f"{fixed[name]}.{leaf}"] = value
    return out


def _bsrgan_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """BSRGAN/RealSR's names for the same layers."""
    names = {"conv_body": "trunk_conv", "conv_up1": "upconv1", "conv_up2": "upconv2", "conv_hr": "HRconv"}
    out = {}
    for key, value in state.items():
        key = re.sub(r"^body\.(\d+)\.rdb(\d)\.", r"RRDB_trunk.\1.RDB\2.", key)
        name, _, leaf = key.rpartition(".")
        out[f"{names.get(name, name)}.{leaf}"] = value
    return out


@pytest.mark.parametrize("layout", [_old_esrgan_keys, _bsrgan_keys])
def test_older_rrdbnet_layouts_load(tmp_path: Path, layout: Callable[[dict], dict]) -> None:
    ref = rrdb(4)
    path = tmp_path / "ESRGAN_x4.pth"
    torch.save(layout(ref.state_dict()), path)
    _check_same(path, ref, "rrdbnet_x4")


def _one_line(e: pytest.ExceptionInfo[CheckpointError], path: Path, *parts: str) -> None:
    text = str(e.value)
    assert text.startswith(str(path)) and "\n" not in text, text
    for part in parts:
        assert part in text, text


def test_bad_sr_files_get_one_line_errors(tmp_path: Path) -> None:
    state = rrdb(4, blocks=3).state_dict()
    cases: dict[str, tuple[dict[str, torch.Tensor], tuple[str, ...]]] = {
        "missing_block": ({k: v for k, v in state.items() if not k.startswith("body.1.")},
                          ("missing key(s): body.1.rdb1.conv1.weight", "not a complete generator")),
        "missing_up": ({k: v for k, v in state.items() if not k.startswith("conv_up1.")},
                       ("missing key(s): conv_up1.weight",)),
        "wrong_shape": ({**state, "conv_hr.weight": torch.zeros(FEAT, FEAT + 1, 3, 3)},
                        ("wrong shape(s): conv_hr.weight [8, 9, 3, 3] (model [8, 8, 3, 3])",)),
        "x8": ({**state, "conv_up3.weight": state["conv_up2.weight"]}, ("3 upsampling conv(s)", "not supported")),
        "esrgan_plus": ({**_old_esrgan_keys(state), "model.1.sub.0.RDB1.conv1x1.weight": torch.zeros(1)},
                        ("ESRGAN+",)),
        "unknown": ({"conv_first.weight": torch.zeros(8, 3, 5, 5), "head.weight": torch.zeros(1)},
                    ("an SRResNet", "an RRDBNet")),
    }
    for name, (bad, parts) in cases.items():
        path = tmp_path / f"{name}.pth"
        torch.save({"params_ema": bad}, path)
        with pytest.raises(CheckpointError) as e:
            load_generator(path)
        _one_line(e, path, *parts)
    good = tmp_path / "good.pth"
    torch.save({"params_ema": state}, good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError) as e:
        load_generator(truncated)
    _one_line(e, truncated, "truncated")


def test_sr_discriminator_takes_any_crop() -> None:
    torch.manual_seed(0)
    d = SRGANDiscriminator(ndf=FEAT, hidden=32).eval()
    convs = [m for m in d.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 8, 16, 16, 32, 32, 64, 64]  # 64 -> 512 at ndf 64
    assert [c.stride[0] for c in convs] == [1, 2, 1, 2, 1, 2, 1, 2]
    with torch.no_grad():
        assert d.features(torch.rand(1, 3, 96, 96)).shape[-2:] == (6, 6)  # the paper's crops need no pooling
        for h, w in ((96, 96), (24, 40), (64, 48)):
            assert d(torch.rand(2, 3, h, w)).shape == (2, 1)

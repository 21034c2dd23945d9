"""Checkpoint loading: reference files as published (bare state dicts, legacy instance-norm keys,
wrapper prefixes), architecture inference, refusal of arbitrary pickles, our generator files."""

from __future__ import annotations

import collections
import pickle
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from cyclegan_deploy.errors import CheckpointError, ConfigError  # noqa: E402
from cyclegan_deploy.train.checkpoints import (  # noqa: E402
    infer_generator_config,
    load_generator,
    save_generator,
    strip_prefixes,
)
from cyclegan_deploy.train.models import GeneratorConfig, build_generator, init_weights  # noqa: E402


def seeded(cfg: GeneratorConfig, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    g = build_generator(cfg)
    init_weights(g)
    return g.eval()


def with_legacy_instance_norm_keys(state: dict, model: torch.nn.Module) -> collections.OrderedDict:
    """What PyTorch < 0.4 wrote under InstanceNorm2d layers: running stats that today's layer lacks."""
    out = collections.OrderedDict(state)
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.InstanceNorm2d):
            out[f"{name}.running_mean"] = torch.zeros(m.num_features)
            out[f"{name}.running_var"] = torch.ones(m.num_features)
    return out


def test_reference_file_with_legacy_keys_loads_and_matches(tmp_path: Path) -> None:
    cfg = GeneratorConfig(arch="resnet_3blocks", ngf=8, n_blocks=3)
    ref = seeded(cfg)
    legacy = with_legacy_instance_norm_keys(ref.state_dict(), ref)
    assert any(k.endswith("running_mean") for k in legacy)
    path = tmp_path / "latest_net_G_B.pth"
    torch.save(legacy, path)

    model, meta = load_generator(path)
    assert (meta.arch, meta.ngf, meta.n_blocks, meta.norm, meta.direction) == ("resnet_3blocks", 8, 3,
                                                                                "instance", "BtoA")
    assert len(meta.source_sha256) == 64
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))


def test_prefixes_are_stripped(tmp_path: Path) -> None:
    ref = seeded(GeneratorConfig(arch="resnet_2blocks", ngf=4, n_blocks=2))
    wrapped = {f"module._orig_mod.{k}": v for k, v in ref.state_dict().items()}
    assert set(strip_prefixes(wrapped)) == set(ref.state_dict())
    path = tmp_path / "dp_net_G_A.pth"
    torch.save(wrapped, path)
    model, _ = load_generator(path)
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))


@pytest.mark.parametrize("cfg", [
    GeneratorConfig(arch="resnet_9blocks", ngf=16),
    GeneratorConfig(arch="resnet_6blocks", ngf=8, norm="batch", dropout=True),
    GeneratorConfig(arch="resnet_6blocks", ngf=8, norm="none"),
    GeneratorConfig(arch="unet_256", ngf=8, norm="batch", dropout=True),
    GeneratorConfig(arch="unet_128", ngf=4, norm="instance"),
    GeneratorConfig(arch="resnet_2blocks", ngf=4, input_nc=1, output_nc=3, n_blocks=2),
])
def test_architecture_inferred_from_keys(cfg: GeneratorConfig) -> None:
    got = infer_generator_config(build_generator(cfg).state_dict())
    assert (got.arch, got.ngf, got.norm, got.input_nc, got.output_nc) == (
        cfg.arch, cfg.ngf, cfg.norm, cfg.input_nc, cfg.output_nc)
    if cfg.arch.startswith("resnet"):  # U-Net dropout has no parameters, so it cannot be inferred
        assert got.dropout == cfg.dropout


def test_pix2pix_reference_generator_loads_in_eval_mode(tmp_path: Path) -> None:
    cfg = GeneratorConfig(arch="unet_128", ngf=4, norm="batch", dropout=True)
    ref = seeded(cfg)
    for m in ref.modules():  # non-trivial running stats so eval mode is really used
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "facades_label2photo.pth"
    torch.save(ref.state_dict(), path)
    model, meta = load_generator(path)
    assert not model.training and meta.arch == "unet_128" and meta.model == "pix2pix" and meta.multiple == 128
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(model(x), ref.eval()(x))


def test_wrong_arch_option_says_which_fit(tmp_path: Path) -> None:
    path = tmp_path / "latest_net_G_A.pth"
    torch.save(build_generator(GeneratorConfig(arch="resnet_9blocks", ngf=8)).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"the keys fit --arch resnet_9blocks --ngf 8 --norm instance"):
        load_generator(path, arch="resnet_6blocks")


class Evil:
    def __reduce__(self):  # would run code on unpickling
        return (print, ("pwned",))


def test_refuses_arbitrary_pickle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "evil_net_G.pth"
    torch.save({"model": Evil()}, path)
    with pytest.raises(CheckpointError, match="not a plain state dict"):
        load_generator(path)
    assert "pwned" not in capsys.readouterr().out


def test_raw_pickle_and_garbage_are_refused(tmp_path: Path) -> None:
    raw = tmp_path / "raw.pth"
    raw.write_bytes(pickle.dumps({"a": 1}))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00not a checkpoint at all")
    for path in (raw, junk):
        with pytest.raises(CheckpointError, match=str(path.name)):
            load_generator(path)


def test_missing_file_and_discriminator_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_generator(tmp_path / "nope.pth")
    from cyclegan_deploy.train.models import NLayerDiscriminator

    path = tmp_path / "latest_net_D_A.pth"
    torch.save(NLayerDiscriminator(3, 8).state_dict(), path)
    with pytest.raises(CheckpointError, match="neither a ResNet nor a U-Net"):
        load_generator(path)


def test_our_generator_file_round_trip_and_run_dir(tmp_path: Path) -> None:
    cfg = GeneratorConfig(arch="resnet_2blocks", ngf=4, n_blocks=2)
    g = seeded(cfg, seed=3)
    save_generator(g, cfg.to_meta(direction="BtoA", train_size=64, model="cyclegan"), tmp_path / "latest_net_G_B.pth")
    assert not list(tmp_path.glob("*.tmp"))
    model, meta = load_generator(tmp_path, direction="BtoA")
    assert (meta.direction, meta.train_size, meta.model) == ("BtoA", 64, "cyclegan")
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), g(x))
    with pytest.raises(CheckpointError, match="latest_net_G_A.pth"):
        load_generator(tmp_path, direction="AtoB")


def test_unknown_arch_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown --arch"):
        GeneratorConfig(arch="vgg16")


def test_pre_zip_serialization_format_loads(tmp_path: Path) -> None:
    """Published checkpoints from PyTorch < 1.6 use the legacy (non-zip) container: still weights_only."""
    cfg = GeneratorConfig(arch="resnet_2blocks", ngf=4, n_blocks=2)
    ref = seeded(cfg, seed=5)
    path = tmp_path / "horse2zebra.pth"
    torch.save(with_legacy_instance_norm_keys(ref.state_dict(), ref), path, _use_new_zipfile_serialization=False)
    model, meta = load_generator(path)
    assert meta.arch == "resnet_2blocks"
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))

"""The model-family registry: one place that knows architectures (detect, build, multiple, scale, ranges)."""

from __future__ import annotations

import pytest

from cyclegan_deploy.errors import CheckpointError, ConfigError
from cyclegan_deploy.metadata import ModelMeta
from cyclegan_deploy.train import registry
from cyclegan_deploy.train.registry import GeneratorConfig


def test_registry_import_needs_no_torch() -> None:
    import subprocess
    import sys

    code = ("import sys, cyclegan_deploy.train.registry, cyclegan_deploy.train.config; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(("arch", "family", "multiple", "blocks"), [
    ("resnet_9blocks", "resnet", 4, 9), ("resnet_3blocks", "resnet", 4, 3), ("unet_256", "unet", 256, 0),
    ("unet_128", "unet", 128, 0)])
def test_families_by_arch(arch: str, family: str, multiple: int, blocks: int) -> None:
    fam = registry.family_for(arch)
    assert (fam.name, fam.multiple(arch), fam.blocks(arch), fam.scale(arch)) == (family, multiple, blocks, 1)
    card = GeneratorConfig(arch=arch).to_meta()
    assert (card.family, card.multiple, card.scale, card.input_range, card.output_range) == (
        family, multiple, 1, [-1.0, 1.0], [-1.0, 1.0])
    assert card.model == ("cyclegan" if family == "resnet" else "pix2pix")


def test_unknown_arch_and_block_count() -> None:
    with pytest.raises(ConfigError, match="unknown --arch 'vgg16'; use one of resnet_9blocks.*unet_256"):
        GeneratorConfig(arch="vgg16")
    with pytest.raises(ConfigError, match="block count must be a number"):
        registry.family_for("resnet_xblocks")


def test_explicit_block_count_renames_the_arch() -> None:
    assert GeneratorConfig(arch="resnet_9blocks", n_blocks=3).arch == "resnet_3blocks"
    assert GeneratorConfig(arch="unet_128", n_blocks=0).arch == "unet_128"


def test_family_of_old_cards_by_arch() -> None:
    assert registry.family_of_card(ModelMeta(arch="resnet_6blocks", family="")).name == "resnet"
    assert registry.family_of_card(ModelMeta(arch="unet_256", family="unet")).name == "unet"
    assert registry.family_of_card(ModelMeta(arch="mystery", family="")) is None


def test_detection_runs_the_families_in_order_and_builds_what_it_found() -> None:
    pytest.importorskip("torch")
    for cfg in (GeneratorConfig(arch="resnet_2blocks", ngf=4), GeneratorConfig(arch="unet_128", ngf=4, norm="batch")):
        found = registry.detect(registry.build_generator(cfg).state_dict())
        assert (found.arch, found.ngf, found.norm) == (cfg.arch, cfg.ngf, cfg.norm)
    with pytest.raises(CheckpointError, match="neither a ResNet nor a U-Net"):
        registry.detect({"conv.weight": object()})

"""State-dict compatibility with the reference layout, written from the structure in FACTS.md
(not from the reference code): expected keys and shapes are spelled out here independently."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from cyclegan_deploy.train.models import (  # noqa: E402
    GeneratorConfig,
    NLayerDiscriminator,
    PixelDiscriminator,
    build_generator,
)


def conv(key: str, out_c: int, in_c: int, k: int, bias: bool) -> dict[str, tuple[int, ...]]:
    d = {f"{key}.weight": (out_c, in_c, k, k)}
    if bias:
        d[f"{key}.bias"] = (out_c,)
    return d


def convT(key: str, in_c: int, out_c: int, k: int, bias: bool) -> dict[str, tuple[int, ...]]:
    d = {f"{key}.weight": (in_c, out_c, k, k)}
    if bias:
        d[f"{key}.bias"] = (out_c,)
    return d


def bn(key: str, c: int) -> dict[str, tuple[int, ...]]:
    return {f"{key}.weight": (c,), f"{key}.bias": (c,), f"{key}.running_mean": (c,),
            f"{key}.running_var": (c,), f"{key}.num_batches_tracked": ()}


def expected_resnet(ngf: int, n_blocks: int, norm: str, dropout: bool) -> dict[str, tuple[int, ...]]:
    """ReflPad3, conv7, norm, ReLU | 2x (conv3 s2, norm, ReLU) | n blocks | 2x (convT, norm, ReLU) | ReflPad3,
    conv7, Tanh — one Sequential `model`; instance norm has no params and implies conv bias."""
    bias = norm == "instance"
    norm_keys = bn if norm == "batch" else (lambda key, c: {})
    exp: dict[str, tuple[int, ...]] = {}
    exp |= conv("model.1", ngf, 3, 7, bias) | norm_keys("model.2", ngf)
    exp |= conv("model.4", ngf * 2, ngf, 3, bias) | norm_keys("model.5", ngf * 2)
    exp |= conv("model.7", ngf * 4, ngf * 2, 3, bias) | norm_keys("model.8", ngf * 4)
    second = 6 if dropout else 5  # [pad, conv, norm, relu, (dropout), pad, conv, norm]
    for b in range(n_blocks):
        i = 10 + b
        exp |= conv(f"model.{i}.conv_block.1", ngf * 4, ngf * 4, 3, bias)
        exp |= norm_keys(f"model.{i}.conv_block.2", ngf * 4)
        exp |= conv(f"model.{i}.conv_block.{second}", ngf * 4, ngf * 4, 3, bias)
        exp |= norm_keys(f"model.{i}.conv_block.{second + 1}", ngf * 4)
    i = 10 + n_blocks
    exp |= convT(f"model.{i}", ngf * 4, ngf * 2, 3, bias) | norm_keys(f"model.{i + 1}", ngf * 2)
    exp |= convT(f"model.{i + 3}", ngf * 2, ngf, 3, bias) | norm_keys(f"model.{i + 4}", ngf)
    exp |= conv(f"model.{i + 7}", 3, ngf, 7, True)
    return exp


def expected_unet(ngf: int, num_downs: int, norm: str) -> dict[str, tuple[int, ...]]:
    """Outermost: [downconv, sub, ReLU, upconv, Tanh]; middle: [LReLU, downconv, downnorm, sub, ReLU, upconv,
    upnorm, (Dropout)]; innermost: [LReLU, downconv, ReLU, upconv, upnorm]."""
    bias = norm == "instance"
    norm_keys = bn if norm == "batch" else (lambda key, c: {})
    # (outer_nc, inner_nc) from the outside in
    levels = [(3, ngf), (ngf, ngf * 2), (ngf * 2, ngf * 4), (ngf * 4, ngf * 8)]
    levels += [(ngf * 8, ngf * 8)] * (num_downs - 4)
    exp: dict[str, tuple[int, ...]] = {}
    exp |= conv("model.model.0", ngf, 3, 4, bias) | convT("model.model.3", ngf * 2, 3, 4, True)
    prefix = "model.model.1.model"
    for depth, (outer, inner) in enumerate(levels[1:], start=1):
        innermost = depth == num_downs - 1
        exp |= conv(f"{prefix}.1", inner, outer, 4, bias)
        if innermost:
            exp |= convT(f"{prefix}.3", inner, outer, 4, bias) | norm_keys(f"{prefix}.4", outer)
        else:
            exp |= norm_keys(f"{prefix}.2", inner)
            exp |= convT(f"{prefix}.5", inner * 2, outer, 4, bias) | norm_keys(f"{prefix}.6", outer)
            prefix += ".3.model"
    return exp


def shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("n_blocks", [9, 6])
@pytest.mark.parametrize("norm", ["instance", "batch", "none"])
@pytest.mark.parametrize("dropout", [False, True])
def test_resnet_keys(n_blocks: int, norm: str, dropout: bool) -> None:
    g = build_generator(GeneratorConfig(arch=f"resnet_{n_blocks}blocks", ngf=8, norm=norm, dropout=dropout))
    assert shapes(g) == expected_resnet(8, n_blocks, norm, dropout)


def test_resnet9_full_size_matches_published_layout() -> None:
    g = build_generator(GeneratorConfig())  # the published CycleGAN generators: resnet_9blocks, ngf 64
    sd = shapes(g)
    assert sd == expected_resnet(64, 9, "instance", False)
    assert sd["model.10.conv_block.1.weight"] == (256, 256, 3, 3)
    assert sum(torch.tensor(s).prod().item() if s else 1 for s in sd.values()) == 11_378_179


@pytest.mark.parametrize("arch,num_downs", [("unet_256", 8), ("unet_128", 7)])
@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_unet_keys(arch: str, num_downs: int, norm: str) -> None:
    g = build_generator(GeneratorConfig(arch=arch, ngf=8, norm=norm, dropout=True))
    assert shapes(g) == expected_unet(8, num_downs, norm)


@pytest.mark.parametrize("n_layers", [3, 2, 5])
@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_nlayer_discriminator_keys(n_layers: int, norm: str) -> None:
    ndf, bias = 8, norm == "instance"
    norm_keys = bn if norm == "batch" else (lambda key, c: {})
    exp = conv("model.0", ndf, 6, 4, True)
    i, mult = 2, 1
    for n in range(1, n_layers + 1):
        prev, mult = mult, min(2**n, 8)
        exp |= conv(f"model.{i}", ndf * mult, ndf * prev, 4, bias) | norm_keys(f"model.{i + 1}", ndf * mult)
        i += 3
    exp |= conv(f"model.{i}", 1, ndf * mult, 4, True)
    assert shapes(NLayerDiscriminator(6, ndf, n_layers, norm)) == exp


def test_nlayer_is_70x70_patchgan() -> None:
    d = NLayerDiscriminator(3, 8, 3, "instance").eval()
    assert d(torch.zeros(1, 3, 256, 256)).shape == (1, 1, 30, 30)


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_pixel_discriminator_keys(norm: str) -> None:
    bias = norm == "instance"
    exp = conv("net.0", 8, 3, 1, True) | conv("net.2", 16, 8, 1, bias)
    exp |= bn("net.3", 16) if norm == "batch" else {}
    exp |= conv("net.5", 1, 16, 1, bias)
    assert shapes(PixelDiscriminator(3, 8, norm)) == exp


def test_resnet_output_size_rounds_to_multiple_of_4() -> None:
    g = build_generator(GeneratorConfig(arch="resnet_1blocks", ngf=4)).eval()
    with torch.no_grad():
        assert g(torch.zeros(1, 3, 64, 64)).shape == (1, 3, 64, 64)
        assert g(torch.zeros(1, 3, 257, 333)).shape == (1, 3, 260, 336)


def test_unet_skip_carries_leaky_relu_of_input() -> None:
    """The reference's in-place LeakyReLU rewrites a block's input before the skip concat: keep that."""
    g = build_generator(GeneratorConfig(arch="unet_128", ngf=4, norm="batch")).eval()
    block = g.model.model[1]
    x = torch.randn(1, 4, 64, 64)
    with torch.no_grad():
        out = block(x.clone())
    assert torch.allclose(out[:, :4], torch.nn.functional.leaky_relu(x, 0.2))

"""Generators and discriminators whose state_dict keys and shapes match the reference implementation
(junyanz/pytorch-CycleGAN-and-pix2pix), so its published checkpoints load unchanged.

Written from the structure described in ../shared/FACTS.md. The layer order inside each
`nn.Sequential` *is* the checkpoint format: do not reorder, insert or drop modules.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

from cyclegan_deploy.errors import ConfigError

# GeneratorConfig/build_generator live in the registry (the one place that knows architectures); they are
# re-exported here because generators are built where the modules are.
from cyclegan_deploy.train.registry import GeneratorConfig, build_generator

__all__ = ["GeneratorConfig", "NLayerDiscriminator", "PixelDiscriminator", "ResnetGenerator", "UnetGenerator",
           "build_discriminator", "build_generator", "init_weights", "seeded_generator"]

NormFactory = Callable[[int], nn.Module]


def norm_factory(norm: str) -> NormFactory:
    """The reference's get_norm_layer: instance norm has no affine params and no running stats."""
    if norm == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    if norm == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if norm == "none":
        return lambda _channels: nn.Identity()
    raise ConfigError(f"unknown norm {norm!r}; use instance, batch or none")


class ResnetBlock(nn.Module):
    def __init__(self, dim: int, norm_layer: NormFactory, use_dropout: bool, use_bias: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=use_bias),
            norm_layer(dim),
            nn.ReLU(True),
        ]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=use_bias), norm_layer(dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """c7s1-ngf, d(2ngf), d(4ngf), n x R(4ngf), u(2ngf), u(ngf), c7s1-out, tanh."""

    def __init__(self, input_nc: int = 3, output_nc: int = 3, ngf: int = 64, norm: str = "instance",
                 use_dropout: bool = False, n_blocks: int = 9) -> None:
        super().__init__()
        if n_blocks < 0:
            raise ConfigError(f"n_blocks must be >= 0, got {n_blocks}")
        norm_layer = norm_factory(norm)
        use_bias = norm == "instance"  # the reference: bias only when the norm is instance norm
        model: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0, bias=use_bias),
            norm_layer(ngf),
            nn.ReLU(True),
        ]
        for i in range(2):
            mult = 2**i
            model += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1, bias=use_bias),
                norm_layer(ngf * mult * 2),
                nn.ReLU(True),
            ]
        model += [ResnetBlock(ngf * 4, norm_layer, use_dropout, use_bias) for _ in range(n_blocks)]
        for i in range(2):
            mult = 2 ** (2 - i)
            model += [
                nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, kernel_size=3, stride=2, padding=1,
                                   output_padding=1, bias=use_bias),
                norm_layer(ngf * mult // 2),
                nn.ReLU(True),
            ]
        model += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0), nn.Tanh()]
        self.model = nn.Sequential(*model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class UnetSkipConnectionBlock(nn.Module):
    """One U-Net level: down -> submodule -> up, concatenated with its input (except the outermost).

    As in the reference, the down path starts with an in-place LeakyReLU, which also rewrites `x`
    before the concatenation; we keep that so outputs match the reference's bit for bit.
    """

    def __init__(self, outer_nc: int, inner_nc: int, input_nc: int | None = None,
                 submodule: nn.Module | None = None, outermost: bool = False, innermost: bool = False,
                 norm: str = "batch", use_dropout: bool = False) -> None:
        super().__init__()
        self.outermost = outermost
        norm_layer = norm_factory(norm)
        use_bias = norm == "instance"
        input_nc = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
        downrelu = nn.LeakyReLU(0.2, True)
        uprelu = nn.ReLU(True)
        model: list[nn.Module]
        if outermost:
            assert submodule is not None
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            model = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            model = [downrelu, downconv, uprelu, upconv, norm_layer(outer_nc)]
        else:
            assert submodule is not None
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            model = [downrelu, downconv, norm_layer(inner_nc), submodule, uprelu, upconv, norm_layer(outer_nc)]
            if use_dropout:
                model.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """U-Net with `num_downs` downsamplings (registry.UNET_DOWNS: unet_256 8, unet_128 7)."""

    def __init__(self, input_nc: int = 3, output_nc: int = 3, num_downs: int = 8, ngf: int = 64,
                 norm: str = "batch", use_dropout: bool = False) -> None:
        super().__init__()
        if num_downs < 5:
            raise ConfigError(f"a U-Net needs at least 5 downsamplings, got {num_downs}")
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, norm=norm, innermost=True)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block, norm=norm, use_dropout=use_dropout)
        block = UnetSkipConnectionBlock(ngf * 4, ngf * 8, submodule=block, norm=norm)
        block = UnetSkipConnectionBlock(ngf * 2, ngf * 4, submodule=block, norm=norm)
        block = UnetSkipConnectionBlock(ngf, ngf * 2, submodule=block, norm=norm)
        self.model = UnetSkipConnectionBlock(output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True,
                                             norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class NLayerDiscriminator(nn.Module):
    """PatchGAN; n_layers=3 gives the 70x70 receptive field of the papers."""

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "instance") -> None:
        super().__init__()
        norm_layer = norm_factory(norm)
        use_bias = norm == "instance"
        seq: list[nn.Module] = [nn.Conv2d(input_nc, ndf, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            seq += [
                nn.Conv2d(ndf * prev, ndf * mult, kernel_size=4, stride=2, padding=1, bias=use_bias),
                norm_layer(ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        prev, mult = mult, min(2**n_layers, 8)
        seq += [
            nn.Conv2d(ndf * prev, ndf * mult, kernel_size=4, stride=1, padding=1, bias=use_bias),
            norm_layer(ndf * mult),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * mult, 1, kernel_size=4, stride=1, padding=1),
        ]
        self.model = nn.Sequential(*seq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PixelDiscriminator(nn.Module):
    """1x1 PatchGAN (pixelGAN)."""

    def __init__(self, input_nc: int = 3, ndf: int = 64, norm: str = "instance") -> None:
        super().__init__()
        norm_layer = norm_factory(norm)
        use_bias = norm == "instance"
        self.net = nn.Sequential(
            nn.Conv2d(input_nc, ndf, kernel_size=1, stride=1, padding=0),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, kernel_size=1, stride=1, padding=0, bias=use_bias),
            norm_layer(ndf * 2),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 2, 1, kernel_size=1, stride=1, padding=0, bias=use_bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_discriminator(input_nc: int, ndf: int = 64, netd: str = "basic", n_layers: int = 3,
                        norm: str = "instance") -> nn.Module:
    if netd == "basic":
        return NLayerDiscriminator(input_nc, ndf, 3, norm)
    if netd == "n_layers":
        return NLayerDiscriminator(input_nc, ndf, n_layers, norm)
    if netd == "pixel":
        return PixelDiscriminator(input_nc, ndf, norm)
    raise ConfigError(f"unknown discriminator {netd!r}; use basic, n_layers or pixel")


def init_weights(net: nn.Module, gain: float = 0.02) -> None:
    """The reference's 'normal' init: conv weights N(0, gain), biases 0, batch-norm weights N(1, gain)."""

    def init(m: nn.Module) -> None:
        name = m.__class__.__name__
        if hasattr(m, "weight") and ("Conv" in name or "Linear" in name):
            nn.init.normal_(m.weight.data, 0.0, gain)
            if getattr(m, "bias", None) is not None:
                nn.init.constant_(m.bias.data, 0.0)
        elif "BatchNorm2d" in name:
            nn.init.normal_(m.weight.data, 1.0, gain)
            nn.init.constant_(m.bias.data, 0.0)

    net.apply(init)


def seeded_generator(cfg: GeneratorConfig, seed: int = 0, bias_std: float = 0.05) -> nn.Module:
    """A reproducible generator in eval mode for tests and benchmarks: reference init, then small non-zero
    biases so that a bias lost in export shows up in parity checks."""
    torch.manual_seed(seed)
    model = build_generator(cfg)
    init_weights(model)
    with torch.no_grad():
        for m in model.modules():
            if getattr(m, "bias", None) is not None:
                m.bias.normal_(0.0, bias_std)
    return model.eval()

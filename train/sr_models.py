"""Super-resolution generators and the SRGAN discriminator.

- `SRResNet`: the SRGAN paper's generator (Ledig et al. 2017): conv9-PReLU, residual blocks of
  conv3-BN-PReLU-conv3-BN, conv3-BN and a long skip, PixelShuffle x2 stages, conv9, tanh. No published
  checkpoints share one key layout, so ours is named after BasicSR's (conv_first, body.N, conv_last).
- `RRDBNet`: ESRGAN/Real-ESRGAN's generator in BasicSR's exact state-dict layout (basicsr/archs/rrdbnet_arch.py),
  so their published `.pth` files load unchanged. x4 is the plain network; x2 and x1 pixel-unshuffle the input
  by 2 and 4 first (conv_first takes 12 or 48 channels), as Real-ESRGAN does; upsampling is always two
  nearest-neighbour x2 stages (conv_up1, conv_up2).
- `SRGANDiscriminator`: the paper's VGG-style discriminator with an adaptive pool in front of the dense head.

The attribute names *are* the checkpoint format: do not rename, reorder or insert modules.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cyclegan_deploy.errors import ConfigError
from cyclegan_deploy.train.registry import SR_SCALES

SRRESNET_SCALES = SR_SCALES["srresnet"]  # one PixelShuffle x2 stage per factor of 2
RRDBNET_UNSHUFFLE = {4: 1, 2: 2, 1: 4}  # scale -> pixel-unshuffle factor in front of the fixed x4 network


def upsampling_stages(scale: int) -> int:
    if scale not in SRRESNET_SCALES:
        raise ConfigError(f"SRResNet scale x{scale} is not supported; use x2 or x4")
    return scale.bit_length() - 1


class SRResidualBlock(nn.Module):
    """conv3-BN-PReLU-conv3-BN plus the identity. Convs before a BN carry no bias: the BN's shift is one."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.act = nn.PReLU()
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))


class PixelShuffleUp(nn.Module):
    """x2 sub-pixel upsampling: conv3 to 4x the channels, PixelShuffle(2), PReLU (exports as DepthToSpace)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, width * 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)
        self.act = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.shuffle(self.conv(x)))  # (N, 4C, H, W) -> (N, C, 2H, 2W)


class SRResNet(nn.Module):
    """SRGAN's generator: input RGB in [0, 1], output in [-1, 1] (tanh), (N, C, H, W) -> (N, C, sH, sW)."""

    def __init__(self, in_ch: int = 3, out_ch: int = 3, scale: int = 4, width: int = 64, n_blocks: int = 16) -> None:
        super().__init__()
        if n_blocks < 0 or width < 1:
            raise ConfigError(f"SRResNet needs width >= 1 and n_blocks >= 0, got {width} and {n_blocks}")
        self.scale = scale
        self.conv_first = nn.Conv2d(in_ch, width, 9, padding=4)
        self.act_first = nn.PReLU()
        self.body = nn.Sequential(*(SRResidualBlock(width) for _ in range(n_blocks)))
        self.conv_body = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn_body = nn.BatchNorm2d(width)
        self.upsample = nn.Sequential(*(PixelShuffleUp(width) for _ in range(upsampling_stages(scale))))
        self.conv_last = nn.Conv2d(width, out_ch, 9, padding=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.act_first(self.conv_first(x))
        feat = feat + self.bn_body(self.conv_body(self.body(feat)))  # the long skip over all blocks
        return torch.tanh(self.conv_last(self.upsample(feat)))


class ResidualDenseBlock(nn.Module):
    """Five densely connected convs; each sees the input and every earlier output (grow channels each)."""

    def __init__(self, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x  # ESRGAN's residual scaling: keeps the deep trunk stable


class RRDB(nn.Module):
    def __init__(self, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """ESRGAN/Real-ESRGAN generator: input RGB in [0, 1], output in [0, 1].

    `clamp_output` clamps to [0, 1] inside the graph: Real-ESRGAN's inference clamps after the model, and
    putting it here makes every exported artifact (and the parity gate) produce what users get. Training
    turns it off so that out-of-range outputs still get gradients.
    """

    def __init__(self, in_ch: int = 3, out_ch: int = 3, scale: int = 4, num_feat: int = 64, num_block: int = 23,
                 num_grow_ch: int = 32, clamp_output: bool = True) -> None:
        super().__init__()
        if scale not in RRDBNET_UNSHUFFLE:
            raise ConfigError(f"RRDBNet scale x{scale} is not supported; use x1, x2 or x4")
        self.scale = scale
        self.unshuffle = RRDBNET_UNSHUFFLE[scale]
        self.clamp_output = clamp_output
        self.conv_first = nn.Conv2d(in_ch * self.unshuffle**2, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # torch's pixel_unshuffle orders channels c*r*r + dy*r + dx, as BasicSR's view/permute does
        feat = F.pixel_unshuffle(x, self.unshuffle) if self.unshuffle > 1 else x  # (N, C*r*r, H/r, W/r)
        feat = self.conv_first(feat)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2.0, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2.0, mode="nearest")))
        out = self.conv_last(self.lrelu(self.conv_hr(feat)))  # (N, C, 4H/r, 4W/r) = (N, C, sH, sW)
        return out.clamp(0.0, 1.0) if self.clamp_output else out


class SRGANDiscriminator(nn.Module):
    """The SRGAN paper's discriminator: conv3-LReLU, then conv3-BN-LReLU with strides 2,1,2,1... while the
    channels double every second layer (64 -> 512), then Dense(1024)-LReLU-Dense(1) returning logits.

    An AdaptiveAvgPool2d(pool) sits in front of the dense head so any crop size works: at the paper's 96x96
    HR crops the features are already 6x6 (four stride-2 convs) and the pool is the identity.
    """

    def __init__(self, in_ch: int = 3, ndf: int = 64, n_layers: int = 8, pool: int = 6, hidden: int = 1024) -> None:
        super().__init__()
        if n_layers < 2:
            raise ConfigError(f"the SRGAN discriminator needs at least 2 conv layers, got {n_layers}")
        layers: list[nn.Module] = [nn.Conv2d(in_ch, ndf, 3, 1, 1), nn.LeakyReLU(0.2, True)]
        channels = ndf
        for i in range(1, n_layers):
            out = ndf * 2 ** (i // 2)
            layers += [nn.Conv2d(channels, out, 3, 2 if i % 2 else 1, 1, bias=False), nn.BatchNorm2d(out),
                       nn.LeakyReLU(0.2, True)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(channels * pool * pool, hidden), nn.LeakyReLU(0.2, True),
                                  nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))  # (N, 1) logits: the loss applies the sigmoid

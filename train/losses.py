"""GAN objectives and the image history pool, with the reference implementation's semantics."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cyclegan_deploy.errors import ConfigError


class GANLoss(nn.Module):
    """lsgan: MSE to 1/0 targets (CycleGAN); vanilla: BCE on logits (pix2pix). Targets broadcast to the patch map."""

    def __init__(self, gan_mode: str = "lsgan", real_label: float = 1.0, fake_label: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("real_label", torch.tensor(real_label))
        self.register_buffer("fake_label", torch.tensor(fake_label))
        self.gan_mode = gan_mode
        if gan_mode == "lsgan":
            self.loss: nn.Module = nn.MSELoss()
        elif gan_mode == "vanilla":
            self.loss = nn.BCEWithLogitsLoss()
        else:
            raise ConfigError(f"unknown --gan-mode {gan_mode!r}; use lsgan or vanilla")

    def forward(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        label: torch.Tensor = self.real_label if target_is_real else self.fake_label  # type: ignore[assignment]
        # float32 loss even under autocast: the squared/log terms are where fp16 would lose precision
        prediction = prediction.float()
        loss: torch.Tensor = self.loss(prediction, label.to(prediction.dtype).expand_as(prediction))
        return loss


class ImagePool:
    """History of generated images (Shrivastava et al.): until full, store and return each image; then with
    probability 0.5 return a stored image and store the new one in its place, else return the new one.

    Uses its own random.Random so its draws are reproducible and its state can be checkpointed.
    """

    def __init__(self, pool_size: int = 50, seed: int | str = 0) -> None:
        self.pool_size = pool_size
        self.images: list[torch.Tensor] = []
        self.rng = random.Random(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.pool_size == 0:
            return images
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.pool_size:
                self.images.append(image)
                out.append(image)
            elif self.rng.uniform(0, 1) > 0.5:
                slot = self.rng.randint(0, self.pool_size - 1)
                out.append(self.images[slot].clone())
                self.images[slot] = image
            else:
                out.append(image)
        return torch.cat(out, 0)

    # --- checkpointing: tensors, ints and lists only, so torch.load(weights_only=True) reads it back ---
    def state_dict(self) -> dict[str, Any]:
        return {"pool_size": self.pool_size, "images": [t.detach().cpu() for t in self.images],
                "rng": python_rng_state(self.rng)}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | str = "cpu") -> None:
        self.pool_size = int(state["pool_size"])
        self.images = [t.to(device) for t in state["images"]]
        set_python_rng_state(self.rng, state["rng"])


def python_rng_state(rng: random.Random | None = None) -> dict[str, Any]:
    """random.getstate() as plain ints/lists (the version, 625 Mersenne-Twister words, the gauss cache)."""
    version, words, gauss = (rng or random).getstate()
    return {"version": version, "words": list(words), "gauss": gauss}


def set_python_rng_state(rng: random.Random | None, state: dict[str, Any]) -> None:
    (rng or random).setstate((int(state["version"]), tuple(int(w) for w in state["words"]), state["gauss"]))


# --- SRGAN's VGG54 content loss ---

# torchvision's vgg19 ("E") feature stack up to conv5_4 + its ReLU; "M" is a 2x2 max-pool
VGG19_STACK: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
                                      512, 512, 512, 512)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# the SRGAN paper rescales VGG feature MSE by 1/12.75^2 (~0.006) to the scale of a pixel MSE
VGG_CONTENT_WEIGHT = 1 / 12.75**2


class VGG54(nn.Module):
    """torchvision's vgg19().features up to relu5_4 (indices 0..35) under the same names (`features.<i>`), so a
    torchvision VGG19 state dict loads into it; torchvision itself cannot be imported with the torch pinned here.
    Takes RGB in [0, 1] and applies ImageNet's mean/std as torchvision's weights expect. SRGAN's phi_5,4: the
    4th conv before the 5th max-pool, after its activation."""

    mean: torch.Tensor  # buffers (move with .to()), declared for the type checker
    std: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in VGG19_STACK:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, int(item), 3, padding=1), nn.ReLU()]
                channels = int(item)
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, rgb01: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.features((rgb01 - self.mean) / self.std)
        return out


def load_vgg54(path: str | Path) -> VGG54:
    """A frozen VGG54 from a torchvision-layout VGG19 state dict (weights_only; the classifier keys are ignored)."""
    from cyclegan_deploy.errors import CheckpointError
    from cyclegan_deploy.train.checkpoints import fit_problems, safe_load, strip_prefixes

    path = Path(path)
    obj = safe_load(path)
    net = VGG54()
    state = strip_prefixes(obj) if isinstance(obj, dict) and all(isinstance(k, str) for k in obj) else {}
    state = {k: v for k, v in state.items() if k.startswith("features.")}  # not the classifier
    problems = fit_problems(state, net)
    if problems:
        raise CheckpointError(f"{path}: not a torchvision VGG19 state dict ({problems}); save one with "
                              "torch.save(torchvision.models.vgg19(weights='IMAGENET1K_V1').state_dict(), FILE)")
    net.load_state_dict(state)
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()

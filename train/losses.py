"""GAN objectives and the image history pool, with the reference implementation's semantics."""

from __future__ import annotations

import random
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

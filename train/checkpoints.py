"""Load/save generators: reference files (bare state dicts), our generator files and run dirs.

Never unpickles arbitrary objects: everything goes through torch.load(weights_only=True).
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cyclegan_deploy.artifacts import atomic_output
from cyclegan_deploy.errors import CheckpointError
from cyclegan_deploy.metadata import ModelMeta, sha256_file
from cyclegan_deploy.train import registry
from cyclegan_deploy.train.registry import GeneratorConfig, build_generator

GENERATOR_FORMAT = "cgdeploy-generator"
PREFIXES = ("module.", "_orig_mod.")  # DataParallel / torch.compile wrappers
LEGACY_NORM_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def safe_load(path: Path) -> Any:
    """torch.load with weights_only=True and errors that name the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; pass an existing .pth/.pt file or run dir")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: not a plain state dict (refused to unpickle arbitrary objects: {first[:160]}); "
            "re-save it with torch.save(model.state_dict(), path)"
        ) from e
    except Exception as e:  # corrupt zip, truncated file, not a torch file at all
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(e).__name__}: {str(e)[:160]}); "
                              "check the file is a complete PyTorch .pth") from e


def strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


def drop_legacy_instance_norm_keys(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Old PyTorch saved running stats under InstanceNorm2d(track_running_stats=False) layers: drop them."""
    modules = dict(model.named_modules())
    out = {}
    for key, value in state.items():
        owner, _, leaf = key.rpartition(".")
        if leaf in LEGACY_NORM_SUFFIXES and isinstance(modules.get(owner), nn.InstanceNorm2d):
            if not modules[owner].track_running_stats:
                continue
        out[key] = value
    return out


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def infer_generator_config(state: dict[str, torch.Tensor]) -> GeneratorConfig:
    """Recognise a generator from its keys (the registry's families, in order)."""
    return registry.detect(strip_prefixes(state))


def _direction_from_name(path: Path) -> str:
    name = path.name
    return "BtoA" if re.search(r"net_G_B|G_BtoA|BtoA", name) else "AtoB"


def _resolve_run_dir(run_dir: Path, direction: str) -> Path:
    tag = "G_B" if direction == "BtoA" else "G_A"
    for name in (f"latest_net_{tag}.pth", "latest_net_G.pth"):
        if (run_dir / name).is_file():
            return run_dir / name
    raise CheckpointError(f"{run_dir}: no latest_net_{tag}.pth or latest_net_G.pth in this run dir; "
                          "pass a generator file or train first with `cgdeploy train`")


def load_generator(path: str | Path, direction: str | None = None, arch: str | None = None,
                   ngf: int | None = None, norm: str | None = None, dropout: bool | None = None,
                   ) -> tuple[nn.Module, ModelMeta]:
    """Build and load a generator (eval mode) from a run dir, one of our generator files or a reference .pth.

    Architecture comes from our metadata or is inferred from the keys; explicit options override it.
    """
    path = Path(path)
    if path.is_dir():
        path = _resolve_run_dir(path, direction or "AtoB")
    obj = safe_load(path)
    meta_dict: dict[str, Any] = {}
    if isinstance(obj, dict) and obj.get("format") == GENERATOR_FORMAT:
        meta_dict, state = dict(obj.get("meta", {})), obj.get("state_dict")
    else:
        state = obj
    if not _is_state_dict(state):
        raise CheckpointError(f"{path}: not a generator state dict (expected a dict of tensors); "
                              "pass a *_net_G*.pth generator file, not a discriminator or training checkpoint")
    state = strip_prefixes(state)
    inferred = infer_generator_config(state)
    cfg = GeneratorConfig(arch=arch or meta_dict.get("arch", inferred.arch), ngf=ngf or inferred.ngf,
                          norm=norm or inferred.norm,
                          # U-Net dropout has no weights: trust our card, else the keys
                          dropout=meta_dict.get("dropout", inferred.dropout) if dropout is None else dropout,
                          input_nc=inferred.input_nc, output_nc=inferred.output_nc)
    if cfg.family is inferred.family and not arch:
        cfg.n_blocks = inferred.n_blocks
    model = build_generator(cfg)
    state = drop_legacy_instance_norm_keys(state, model)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(
            f"{path}: weights do not fit {cfg.cli_flags()} ({str(e).splitlines()[0][:120]}); "
            f"the keys fit {inferred.cli_flags()}") from e
    model.eval()
    meta = cfg.to_meta(direction=direction or meta_dict.get("direction") or _direction_from_name(path),
                       source=path.name, source_sha256=sha256_file(path))
    for key in ("model", "train_size"):  # what the weights cannot tell: the recipe and the training size
        if key in meta_dict:
            setattr(meta, key, meta_dict[key])
    return model, meta


def read_checkpoint_card(path: str | Path) -> ModelMeta:
    """The card a torch artifact (run dir, generator file, reference .pth) would have: load_generator's."""
    return load_generator(path)[1]


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save through the one atomic writer: a crash never leaves a half-written file."""
    with atomic_output(Path(path)) as tmp:
        torch.save(obj, tmp)


def save_generator(model: nn.Module, meta: ModelMeta, path: str | Path) -> None:
    """Our generator file: the reference state dict plus the model card (still weights_only-loadable)."""
    state = {k: v.detach().cpu() for k, v in strip_prefixes(model.state_dict()).items()}
    meta_dict = {k: v for k, v in vars(meta).items() if k != "extra"}
    atomic_save({"format": GENERATOR_FORMAT, "meta": meta_dict, "state_dict": state}, path)

"""Load/save generators: reference files (bare state dicts), our generator files and run dirs.

Never unpickles arbitrary objects: everything goes through torch.load(weights_only=True).
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cyclegan_deploy.errors import CheckpointError
from cyclegan_deploy.metadata import ModelMeta, sha256_file
from cyclegan_deploy.train.models import GeneratorConfig, build_generator

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


def _norm_from(state: dict[str, torch.Tensor], norm_key: str, conv_bias_key: str) -> str:
    if f"{norm_key}.weight" in state:
        return "batch"
    if f"{norm_key}.running_mean" in state or conv_bias_key in state:
        return "instance"  # legacy instance-norm stats, or the bias the reference adds only with instance norm
    return "none"


def infer_generator_config(state: dict[str, torch.Tensor]) -> GeneratorConfig:
    """Recognise a ResNet or U-Net generator from its keys (arch, ngf, blocks, norm, dropout, channels)."""
    state = strip_prefixes(state)
    first = state.get("model.1.weight")
    if first is not None and first.ndim == 4 and first.shape[-1] == 7:
        blocks = sorted({int(m.group(1)) for k in state if (m := re.match(r"model\.(\d+)\.conv_block\.", k))})
        # with dropout the block's second conv moves from index 5 to 6 (index 6 is otherwise the norm)
        key6 = f"model.{blocks[0]}.conv_block.6.weight" if blocks else ""
        dropout = key6 in state and state[key6].ndim == 4
        convs = [int(m.group(1)) for k in state if (m := re.match(r"model\.(\d+)\.weight$", k))]
        last = state[f"model.{max(convs)}.weight"]
        return GeneratorConfig(arch=f"resnet_{len(blocks)}blocks", ngf=int(first.shape[0]),
                               norm=_norm_from(state, "model.2", "model.1.bias"), dropout=dropout,
                               input_nc=int(first.shape[1]), output_nc=int(last.shape[0]), n_blocks=len(blocks))
    outer = state.get("model.model.0.weight")
    if outer is not None and outer.ndim == 4 and outer.shape[-1] == 4:
        depth, prefix = 2, "model.model.1.model."
        while any(k.startswith(prefix + "3.model.") for k in state):
            prefix += "3.model."
            depth += 1
        arch = {8: "unet_256", 7: "unet_128"}.get(depth)
        if arch is None:
            raise CheckpointError(f"U-Net with {depth} downsamplings is not supported (unet_128 has 7, unet_256 8)")
        up = state["model.model.3.weight"]
        return GeneratorConfig(arch=arch, ngf=int(outer.shape[0]), input_nc=int(outer.shape[1]),
                               output_nc=int(up.shape[1]),
                               norm=_norm_from(state, "model.model.1.model.2", "model.model.1.model.1.bias"))
    raise CheckpointError("keys match neither a ResNet nor a U-Net generator of the reference layout "
                          f"(first keys: {', '.join(list(state)[:4])})")


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
    if cfg.arch.startswith("resnet") and not arch:
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
    for key in ("model", "train_size", "norm_mean", "norm_std"):
        if key in meta_dict:
            setattr(meta, key, meta_dict[key])
    if meta_dict.get("model") is None:
        meta.model = "pix2pix" if cfg.arch.startswith("unet") else "cyclegan"
    return model, meta


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temp file beside `path`, then rename: a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_generator(model: nn.Module, meta: ModelMeta, path: str | Path) -> None:
    """Our generator file: the reference state dict plus the model card (still weights_only-loadable)."""
    state = {k: v.detach().cpu() for k, v in strip_prefixes(model.state_dict()).items()}
    meta_dict = {k: v for k, v in vars(meta).items() if k != "extra"}
    atomic_save({"format": GENERATOR_FORMAT, "meta": meta_dict, "state_dict": state}, path)

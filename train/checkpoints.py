"""Load/save generators: reference files (bare state dicts), our generator files and run dirs.

Never unpickles arbitrary objects: everything goes through torch.load(weights_only=True).
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, TypeGuard

import torch
from torch import nn

from cyclegan_deploy.artifacts import atomic_output
from cyclegan_deploy.errors import CheckpointError, OutputError
from cyclegan_deploy.metadata import ModelMeta, sha256_file
from cyclegan_deploy.outputs import output_errors
from cyclegan_deploy.train import registry
from cyclegan_deploy.train.registry import GeneratorConfig, build_generator

GENERATOR_FORMAT = "cgdeploy-generator"
PREFIXES = ("module.", "_orig_mod.")  # DataParallel / torch.compile wrappers
LEGACY_NORM_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


# the first bytes of the two containers torch.save writes: a zip archive (PyTorch >= 1.6) or the legacy
# stream, a pickle (protocol >= 2) of torch.serialization's magic number 0x1950a86a20f9469cfc6c
ZIP_MAGIC = b"PK\x03\x04"
LEGACY_MAGIC = b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def _container(path: Path) -> str:
    """'zip', 'legacy', 'empty' or 'other', from the file's first bytes."""
    with open(path, "rb") as f:
        head = f.read(32)
    if not head:
        return "empty"
    if head.startswith(ZIP_MAGIC):
        return "zip"
    return "legacy" if head[:1] == b"\x80" and LEGACY_MAGIC in head else "other"  # protocol 4+ frames it


def _pickle_protocol(path: Path, container: str) -> int | None:
    """The pickle protocol of the checkpoint's object stream (zip: its data.pkl; legacy: the stream itself)."""
    try:
        if container == "zip":
            with zipfile.ZipFile(path) as archive:
                name = next((n for n in archive.namelist() if n.rsplit("/", 1)[-1] == "data.pkl"), None)
                head = archive.read(name)[:2] if name else b""
        else:
            with open(path, "rb") as f:
                head = f.read(2)
    except (OSError, zipfile.BadZipFile):
        return None
    return head[1] if len(head) == 2 and head[0] == 0x80 else None


def _unpickler_reason(e: Exception) -> str:
    """The one informative sentence of torch's weights_only refusal (the rest is advice about weights_only)."""
    text = str(e)
    m = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\.\s|\n|$)", text)
    first = m.group(1) if m else (text.strip().splitlines() or [type(e).__name__])[0]
    return first.strip()[:160]


def safe_load(path: Path) -> Any:
    """torch.load with weights_only=True and errors that name the file, say what it is and the fix."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; pass an existing .pth/.pt file or run dir")
    try:
        container = _container(path)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror}); check the file's permissions") from e
    if container == "empty":
        raise CheckpointError(f"{path}: empty file, not a PyTorch checkpoint; re-download or re-save it")
    if container == "other":
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither torch.save's zip format nor its legacy "
                              "format); pass a generator .pth written by torch.save or `cgdeploy train`")
    try:
        with warnings.catch_warnings():  # "Detected pickle protocol 4...": torch's note to itself, not the user's
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        protocol = _pickle_protocol(path, container)
        if protocol is not None and protocol > 2 and "Unsupported operand" in str(e):
            raise CheckpointError(f"{path}: saved with pickle protocol {protocol}, which torch.load(weights_only=True) "
                                  "cannot read (it is not refused for its content); re-save it with torch.save and "
                                  "the default pickle_protocol") from e
        raise CheckpointError(
            f"{path}: not a plain state dict (refused to unpickle arbitrary objects: {_unpickler_reason(e)}); "
            "re-save it with torch.save(model.state_dict(), path)"
        ) from e
    except Exception as e:  # a truncated or damaged file of either container
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise CheckpointError(f"{path}: damaged or truncated PyTorch checkpoint ({type(e).__name__}: {first}); "
                              "re-download or re-save it") from e


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


def _is_state_dict(obj: Any) -> TypeGuard[dict[str, torch.Tensor]]:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def infer_generator_config(state: dict[str, torch.Tensor]) -> GeneratorConfig:
    """Recognise a generator from its keys (the registry's families, in order)."""
    return registry.detect(registry.canonical_keys(strip_prefixes(state)))


# BasicSR (ESRGAN, Real-ESRGAN) saves {"params": state} or also {"params_ema": state}; the EMA weights are the
# ones it publishes and evaluates, so they win when both are there (as Real-ESRGAN's inference does)
PARAM_WRAPPERS = ("params_ema", "params")


def _unwrap(obj: Any) -> Any:
    """The state dict inside a BasicSR wrapper, else `obj` unchanged."""
    if isinstance(obj, dict):
        for key in PARAM_WRAPPERS:
            if _is_state_dict(obj.get(key)):
                return obj[key]
    return obj


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


def resolve_generator_path(path: str | Path, direction: str | None = None) -> Path:
    """The generator file a path names: itself, or a run dir's latest generator for `direction`."""
    path = Path(path)
    return _resolve_run_dir(path, direction or "AtoB") if path.is_dir() else path


def load_generator(path: str | Path, direction: str | None = None, arch: str | None = None,
                   ngf: int | None = None, norm: str | None = None, dropout: bool | None = None,
                   ) -> tuple[nn.Module, ModelMeta]:
    """Build and load a generator (eval mode) from a run dir, one of our generator files or a reference .pth.

    Architecture comes from our metadata or is inferred from the keys; explicit options override it.
    """
    path = resolve_generator_path(path, direction)
    obj = safe_load(path)
    meta_dict: dict[str, Any] = {}
    if isinstance(obj, dict) and obj.get("format") == GENERATOR_FORMAT:
        meta_dict, state = dict(obj.get("meta", {})), obj.get("state_dict")
    else:
        state = _unwrap(obj)
    if not _is_state_dict(state):
        raise CheckpointError(f"{path}: not a generator state dict (expected a dict of tensors); "
                              "pass a *_net_G*.pth generator file, not a discriminator or training checkpoint")
    _check_finite(path, state)
    try:
        state = dict(registry.canonical_keys(strip_prefixes(state)))
        inferred = registry.detect(state)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}; pass a generator file of a supported layout") from e
    cfg = GeneratorConfig(arch=arch or meta_dict.get("arch", inferred.arch), ngf=ngf or inferred.ngf,
                          norm=norm or inferred.norm,
                          # U-Net dropout has no weights: trust our card, else the keys
                          dropout=meta_dict.get("dropout", inferred.dropout) if dropout is None else dropout,
                          input_nc=inferred.input_nc, output_nc=inferred.output_nc, grow=inferred.grow)
    if cfg.family is inferred.family and not arch:
        cfg.n_blocks = inferred.n_blocks
    model = build_generator(cfg)
    state = drop_legacy_instance_norm_keys(state, model)
    problems = fit_problems(state, model)
    if problems:
        given = arch or ngf or norm
        fix = (f"the keys fit {inferred.cli_flags()}; drop or change the options" if given and
               inferred.cli_flags() != cfg.cli_flags() else
               "the file is not a complete generator of this layout (damaged or edited); re-save it from the model")
        raise CheckpointError(f"{path}: weights do not fit {cfg.cli_flags()}: {problems}; {fix}")
    model.load_state_dict(state, strict=True)
    model.eval()
    meta = cfg.to_meta(direction=direction or meta_dict.get("direction") or _direction_from_name(path),
                       source=path.name, source_sha256=sha256_file(path))
    for key in ("model", "train_size", "extra"):  # what the weights cannot tell: recipe, training size, history
        if key in meta_dict:
            setattr(meta, key, meta_dict[key])
    return model, meta


def _check_finite(path: Path, state: dict[str, torch.Tensor]) -> None:
    """NaN/inf weights (a diverged run, a damaged file) would export and "pass" parity as NaN == NaN."""
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise CheckpointError(f"{path}: tensor {key!r} holds {bad} NaN/inf value(s) of {value.numel()}; the "
                                  "weights are unusable (training diverged or the file is damaged): use an earlier "
                                  "checkpoint, e.g. <epoch>_net_G_A.pth of the run")


def fit_problems(state: dict[str, torch.Tensor], model: nn.Module, limit: int = 3) -> str:
    """'' when `state` loads into `model` strictly, else the first missing / unexpected / wrong-shape keys
    with their shapes (load_state_dict's own message is a multi-line dump)."""
    expected = model.state_dict()

    def shape(t: torch.Tensor) -> str:
        return "[" + ", ".join(map(str, t.shape)) + "]"

    def listing(label: str, items: list[str]) -> str:
        more = f" and {len(items) - limit} more" if len(items) > limit else ""
        return f"{len(items)} {label}: {', '.join(items[:limit])}{more}"

    missing = [f"{k} {shape(v)}" for k, v in expected.items() if k not in state]
    unexpected = [f"{k} {shape(v)}" for k, v in state.items() if k not in expected]
    mismatched = [f"{k} {shape(v)} (model {shape(expected[k])})" for k, v in state.items()
                  if k in expected and v.shape != expected[k].shape]
    return "; ".join(listing(label, items) for label, items in (
        ("missing key(s)", missing), ("unexpected key(s)", unexpected), ("wrong shape(s)", mismatched)) if items)


def read_checkpoint_card(path: str | Path) -> ModelMeta:
    """The card a torch artifact (run dir, generator file, reference .pth) would have: load_generator's."""
    return load_generator(path)[1]


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save through the one atomic writer: a crash never leaves a half-written file. A write that fails
    (disk full, read-only folder) is an OutputError naming `path`: torch's zip writer reports a full disk as a
    RuntimeError ("[enforce fail at inline_container.cc] ... unexpected pos N vs M"), not as an OSError."""
    path = Path(path)
    with output_errors(path), atomic_output(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as e:
            if "unexpected pos" not in str(e) and "write" not in str(e).lower():
                raise
            raise OutputError(f"{path}: could not be written ({str(e).strip().splitlines()[0][:120]}); the disk is "
                              "probably full: free space or write somewhere else") from e


def save_generator(model: nn.Module, meta: ModelMeta, path: str | Path) -> None:
    """Our generator file: the reference state dict plus the model card (still weights_only-loadable)."""
    state = {k: v.detach().cpu() for k, v in strip_prefixes(model.state_dict()).items()}
    meta_dict = dict(vars(meta))  # extra holds JSON-like values only (str/int/float/list/dict): weights_only loads them
    atomic_save({"format": GENERATOR_FORMAT, "meta": meta_dict, "state_dict": state}, path)

"""The TensorRT step of `cgdeploy export --engine`: profile and memory checks before any export work, then one
engine per exported direction (export/tensorrt.py builds it) and its parity gate through the runtime's
TensorRT backend. Without TensorRT here the ONNX artifacts are still written and the trtexec command that
builds each engine on a GPU machine is printed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cyclegan_deploy import artifacts
from cyclegan_deploy.errors import BackendUnavailableError
from cyclegan_deploy.metadata import ModelMeta

if TYPE_CHECKING:
    from torch import nn

    from cyclegan_deploy.engine_sidecar import Profile
    from cyclegan_deploy.export.pipeline import ExportOptions, ExportResult


def check_engine_options(opts: ExportOptions, metas: list[ModelMeta], echo: Callable[[str], None]) -> str | None:
    """Refuse bad or absurd --min/--opt/--max-shape before minutes of export work; say up front when TensorRT
    is missing here (the ONNX artifacts are still written). Returns why TensorRT is unavailable, or None."""
    from cyclegan_deploy.export.tensorrt import check_profile_memory, derive_profile, tensorrt_unavailable

    gpu_bytes = _gpu_memory()
    for meta in metas:
        profile = derive_profile(meta, opts.min_shape, opts.opt_shape, opts.max_shape)
        check_profile_memory(meta, profile, opts.workspace_gb, gpu_bytes, "fp16" if opts.fp16 else "fp32")
    missing = tensorrt_unavailable()
    if missing:
        echo(f"note: {missing}, so no engine can be built here: writing the ONNX artifacts only; the trtexec "
             "command that builds each engine on a GPU machine is printed at the end")
    return missing


def _gpu_memory() -> int | None:
    """Total memory of the GPU an engine would be built on (torch's view), None without a CUDA GPU."""
    import torch

    return int(torch.cuda.get_device_properties(0).total_memory) if torch.cuda.is_available() else None


def build_engines(built: list[tuple[nn.Module, ModelMeta, Path]], opts: ExportOptions, result: ExportResult,
                   echo: Callable[[str], None], missing_tensorrt: str | None = None) -> None:
    from cyclegan_deploy.export.tensorrt import (
        BuildOptions,
        build_engine,
        check_engine_source,
        derive_profile,
        how_to_build,
    )

    options = BuildOptions(workspace_gb=opts.workspace_gb, opt_level=opts.opt_level, io=opts.engine_io,
                           timing_cache=opts.timing_cache or opts.out_dir / "tensorrt.timing.cache")
    for _, _, source in built:
        check_engine_source(source)
    if missing_tensorrt:
        for _, meta, source in built:
            profile = derive_profile(meta, opts.min_shape, opts.opt_shape, opts.max_shape)
            plan = artifacts.engine_path(opts.out_dir, meta.direction)
            echo(f"to build {plan.name} on a machine with TensorRT: {how_to_build(source, plan, profile, options)}")
        raise BackendUnavailableError(
            f"{missing_tensorrt}; the ONNX artifacts were written ({opts.out_dir}); build the engine(s) on a machine "
            "with TensorRT and an NVIDIA GPU via `cgdeploy export CHECKPOINT -o DIR --engine"
            + (" --engine-io uint8` (no trtexec equivalent)" if options.io == "uint8" else
               "` or the trtexec command(s) printed above"))
    for model, meta, source in built:
        profile = derive_profile(meta, opts.min_shape, opts.opt_shape, opts.max_shape)
        plan = artifacts.engine_path(opts.out_dir, meta.direction)
        sidecar = build_engine(source, plan, profile, options)
        result.files += [plan, artifacts.sidecar_path(plan)]
        echo(f"wrote {plan} (TensorRT {sidecar.tensorrt_version}, {sidecar.gpu_name} sm {sidecar.compute_capability},"
             f" {sidecar.precision}, profile min {profile.min} opt {profile.opt} max {profile.max})")
        if opts.validate:
            _gate_engine(model, meta, plan, sidecar.precision, profile, result, result.holdout.get(meta.direction),
                         uint8_io=opts.engine_io == "uint8")
            echo(result.parity[-1].summary())


def _gate_engine(model: nn.Module, meta: ModelMeta, plan: Path, precision: str, profile: Profile,
                 result: ExportResult, images: list[Any] | None = None, uint8_io: bool = False) -> None:
    """Engine parity through the runtime's TensorRT backend, at the profile's opt and min sizes (an INT8
    engine: on the held-out calibration images, as its graph's gate). A uint8-I/O engine's outputs are uint8:
    its FP32 tolerance grows by half an output level (rounding) on top of the GPU's 1e-3."""
    from cyclegan_deploy.backends import load_backend
    from cyclegan_deploy.export.pipeline import gate
    from cyclegan_deploy.export.validate import validate_candidate

    sizes = [(profile.opt[2], profile.opt[3]), (profile.min[2], profile.min[3])]
    batch = max(profile.min[0], min(2, profile.max[0]))
    min_psnr = result.int8_min_psnr if precision == "int8" else None
    lo, hi = meta.output_range
    level = 0.5 * (float(hi) - float(lo)) / 255.0 if uint8_io else 0.0
    with load_backend(plan, backend="tensorrt", device="cuda") as backend:
        # GPU FP32 kernels differ from CPU ones (TF32 is off): 1e-3 abs is an unmeasured starting point
        gate(lambda: validate_candidate(model, meta, backend, artifact=plan, candidate="tensorrt", echo=False,
                                         precision=precision, max_abs=1e-3 + level if precision == "fp32" else None,
                                         min_psnr=min_psnr, sizes=sizes, batch=batch, images=images,
                                         note="TensorRT engine via the runtime backend vs PyTorch FP32 CPU"),
              plan, result)

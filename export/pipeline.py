"""`cgdeploy export` orchestration: checkpoint -> ONNX (+ parity) -> FP16 (+ safety, parity) -> IR / engine.

Order matters for the user: every ONNX artifact (all directions) is written and gated before any TensorRT
build starts, so a missing TensorRT or a failed build still leaves usable ONNX files behind.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cyclegan_deploy import artifacts
from cyclegan_deploy.errors import ConfigError, ParityError
from cyclegan_deploy.metadata import OPENVINO_NAMES, ModelMeta, canonical_precision
from cyclegan_deploy.outputs import check_writable, locked, refuse_existing

if TYPE_CHECKING:
    from torch import nn

    from cyclegan_deploy.export.precision import SafetyReport
    from cyclegan_deploy.export.triton import TritonOptions
    from cyclegan_deploy.export.validate import ParityReport

DIRECTIONS = ("AtoB", "BtoA", "both")


@dataclass
class ExportOptions:
    checkpoint: Path
    out_dir: Path
    arch: str | None = None
    ngf: int | None = None
    norm: str | None = None
    direction: str | None = None  # None: both for a CycleGAN run dir, else from the file name / card
    fp16: bool = False
    fp16_norm: str = "fp32"
    engine: bool = False
    min_shape: str | None = None
    opt_shape: str | None = None
    max_shape: str | None = None
    workspace_gb: float = 4.0
    timing_cache: Path | None = None  # default: OUT_DIR/tensorrt.timing.cache, shared by both directions
    opt_level: int = 3
    engine_io: str = "float32"  # uint8: the engine takes/gives uint8 frames (export/uint8_io.py)
    target: str = "onnx"
    ov_precision: str = "f32"
    validate: bool = True
    safety_images: Path | None = None
    int8: bool = False  # also write g_*.int8.onnx (NNCF QDQ, accuracy-guarded)
    calib: Path | None = None  # calibration images (default: the run's training data, else the built-in set)
    calib_size: int = 64
    int8_min_psnr: float = 40.0  # the guard's floor and the int8 parity gate's tolerance
    opset: int = 20
    force: bool = False  # replace existing outputs in out_dir (refused otherwise)
    triton: TritonOptions | None = None  # also write a Triton model repository (export/triton.py)


@dataclass
class ExportResult:
    files: list[Path] = field(default_factory=list)
    parity: list[ParityReport] = field(default_factory=list)
    safety: list[SafetyReport] = field(default_factory=list)
    metas: list[ModelMeta] = field(default_factory=list)
    holdout: dict[str, list[Any]] = field(default_factory=dict)  # direction -> held-out calibration images
    int8_min_psnr: float | None = None
    triton: list[Path] = field(default_factory=list)  # Triton model folders written


def _check_options(opts: ExportOptions) -> None:
    if opts.direction is not None and opts.direction not in DIRECTIONS:
        raise ConfigError(f"--direction {opts.direction!r}: use AtoB, BtoA or both")
    if opts.target not in ("onnx", "openvino"):
        raise ConfigError(f"--target {opts.target!r}: use onnx or openvino")
    opts.ov_precision = OPENVINO_NAMES[canonical_precision(opts.ov_precision, tuple(OPENVINO_NAMES), "--ov-precision")]
    if opts.fp16_norm not in ("fp32", "fp16"):
        raise ConfigError(f"--fp16-norm {opts.fp16_norm!r}: use fp32 or fp16")
    if opts.engine and opts.fp16 and opts.int8:
        raise ConfigError("--engine builds from one graph: pass --fp16 (FP16 engine) or --int8 (INT8 engine by "
                          "explicit quantization), not both")
    from cyclegan_deploy.export.tensorrt import ENGINE_IO  # pure Python: TensorRT is imported only to build

    if opts.engine_io not in ENGINE_IO:
        raise ConfigError(f"--engine-io {opts.engine_io!r}: choose one of {', '.join(ENGINE_IO)}")
    if opts.engine_io != "float32" and not opts.engine:
        raise ConfigError(f"--engine-io {opts.engine_io} applies to TensorRT engines; add --engine")
    if opts.engine_io == "uint8" and opts.triton is not None:
        raise ConfigError("--triton-repo serves float32 tensors; build the Triton engine without --engine-io uint8")
    if (opts.calib is not None or opts.calib_size != 64 or opts.int8_min_psnr != 40.0) and not opts.int8:
        raise ConfigError("--calib, --calib-size and --int8-min-psnr only apply with --int8; add --int8")
    if opts.calib is not None and not opts.calib.is_dir():
        raise ConfigError(f"--calib {opts.calib}: no such folder; pass a folder of images like the ones the "
                          "generator will translate (searched recursively)")
    if opts.calib_size < 1:
        raise ConfigError(f"--calib-size {opts.calib_size}: use at least 1 image (default 64)")
    if not 0 < opts.int8_min_psnr < 200:
        raise ConfigError(f"--int8-min-psnr {opts.int8_min_psnr:g}: use a PSNR in dB between 0 and 200 (default 40)")
    if opts.triton is not None:
        from cyclegan_deploy.export.triton import check_options

        check_options(opts.triton, opts.engine)
    if not opts.checkpoint.exists():
        raise ConfigError(f"{opts.checkpoint}: no such checkpoint or run dir; pass a run dir of `cgdeploy train`, "
                          "a generator .pth of ours or a reference *_net_G*.pth")


def _directions(opts: ExportOptions) -> list[str | None]:
    ckpt = opts.checkpoint
    if ckpt.is_dir():
        has_b = (ckpt / "latest_net_G_B.pth").is_file()
        if opts.direction in (None, "both"):
            if opts.direction == "both" and not has_b:
                raise ConfigError(f"{ckpt}: --direction both needs latest_net_G_A.pth and latest_net_G_B.pth "
                                  "(a pix2pix run has one generator; drop --direction)")
            return ["AtoB", "BtoA"] if has_b else ["AtoB"]
        return [opts.direction]
    if opts.direction == "both":
        raise ConfigError(f"{ckpt}: a single generator file has one direction; pass the run dir for both, or "
                          "--direction AtoB|BtoA to label this one")
    return [opts.direction]  # None: load_generator infers it from the card or the file name


def planned_outputs(opts: ExportOptions, direction: str) -> list[Path]:
    """Every file an export of one direction writes with these options (the overwrite rule checks them)."""
    onnx_path = artifacts.onnx_path(opts.out_dir, direction)
    graphs = [onnx_path]
    files = [onnx_path]
    if opts.fp16:
        fp16_path = artifacts.graph_path(onnx_path, "fp16")
        graphs.append(fp16_path)
        files += [fp16_path, artifacts.safety_path(fp16_path)]
    if opts.int8:
        int8_path = artifacts.graph_path(onnx_path, "int8")
        graphs.append(int8_path)
        files.append(int8_path)
    if opts.target == "openvino":
        xml = artifacts.ir_path(opts.out_dir, direction)
        graphs.append(xml)
        files += [xml, artifacts.ir_weights_path(xml), artifacts.sidecar_path(xml)]
    if opts.engine:
        plan = artifacts.engine_path(opts.out_dir, direction)
        graphs.append(plan)
        files += [plan, artifacts.sidecar_path(plan)]
    return files + ([artifacts.parity_path(g) for g in graphs] if opts.validate else [])


def run_export(opts: ExportOptions, echo: Callable[[str], None] = print) -> ExportResult:
    """Write every requested artifact; raise ParityError (after writing the reports) when a gate fails, and
    BackendUnavailableError for --engine without TensorRT (said up front; raised after the ONNX artifacts are
    written and the trtexec command of every direction printed).

    Before any export work: the options, the output folder (locked against a second export into it, writable),
    the checkpoints (loaded), the TensorRT profiles and their memory, and the overwrite rule (an existing
    output is refused unless opts.force). A failed export leaves no folder it created empty behind."""
    from cyclegan_deploy.outputs import output_errors, removed_if_failed

    _check_options(opts)
    with removed_if_failed(opts.out_dir), output_errors(opts.out_dir), locked(opts.out_dir):
        check_writable(opts.out_dir)
        return _run_export(opts, echo)


def _run_export(opts: ExportOptions, echo: Callable[[str], None]) -> ExportResult:
    from cyclegan_deploy.train.checkpoints import load_generator

    loaded: list[tuple[nn.Module, ModelMeta]] = []
    for direction in _directions(opts):
        model, meta = load_generator(opts.checkpoint, direction=direction, arch=opts.arch, ngf=opts.ngf,
                                     norm=opts.norm)
        if direction is not None:
            meta.direction = direction
        echo(f"loaded {meta.source}: {meta.arch} ngf {meta.ngf} norm {meta.norm} {meta.direction} ({meta.model})")
        loaded.append((model, meta))
    from cyclegan_deploy.export.engines import build_engines, check_engine_options

    missing_tensorrt = check_engine_options(opts, [meta for _, meta in loaded], echo) if opts.engine else None
    for _, meta in loaded:
        for path in planned_outputs(opts, meta.direction):
            refuse_existing(path, opts.force)
    if opts.triton is not None:
        from cyclegan_deploy.export.triton import check_export

        check_export(opts, [m for _, m in loaded])
    result = ExportResult()
    built = [(model, meta, _export_direction(model, meta, opts, result, echo)) for model, meta in loaded]
    if opts.engine:
        build_engines(built, opts, result, echo, missing_tensorrt)
    if opts.triton is not None:  # last: it serves the final, gated artifacts
        from cyclegan_deploy.export.triton import write_repository

        served = [(m, artifacts.engine_path(opts.out_dir, m.direction) if opts.engine else g, g) for _, m, g in built]
        result.triton = write_repository(opts.triton, served, opts.force, opts.workspace_gb, echo)
    return result


def gate(run: Callable[[], ParityReport], artifact: Path, result: ExportResult) -> None:
    """Run a parity gate; a failed artifact is renamed out of the way so nothing downstream picks it up."""
    try:
        result.parity.append(run())
        result.files.append(artifacts.parity_path(artifact))
    except ParityError as e:
        rejected = artifacts.rejected_path(artifact)
        if artifact.exists():
            os.replace(artifact, rejected)
        raise ParityError(f"{e}; the artifact was moved to {rejected.name}") from e


def _export_direction(model: nn.Module, meta: ModelMeta, opts: ExportOptions, result: ExportResult,
                      echo: Callable[[str], None]) -> Path:
    """ONNX, FP16 and IR for one generator; returns the graph a TensorRT engine should be built from."""
    from cyclegan_deploy.export.onnx import check_graph, export_onnx
    from cyclegan_deploy.export.validate import validate_onnx

    onnx_path = export_onnx(model, meta, artifacts.onnx_path(opts.out_dir, meta.direction), opset=opts.opset)
    graph = check_graph(onnx_path)
    echo(f"wrote {onnx_path} ({sum(graph.op_counts.values())} nodes, {graph.instance_norms} InstanceNormalization, "
         f"opset {graph.opset}, dynamic N/H/W)")
    result.files.append(onnx_path)
    result.metas.append(meta)
    if opts.validate:
        gate(lambda: validate_onnx(model, meta, onnx_path, echo=False), onnx_path, result)
        echo(result.parity[-1].summary())
    source = onnx_path
    if opts.fp16:
        source = _export_fp16(model, meta, onnx_path, opts, result, echo)
    if opts.int8:
        source = _export_int8(model, meta, onnx_path, opts, result, echo)
    if opts.target == "openvino":
        _export_openvino(model, meta, onnx_path, opts, result, echo)
    return source


def _export_fp16(model: nn.Module, meta: ModelMeta, onnx_path: Path, opts: ExportOptions, result: ExportResult,
                 echo: Callable[[str], None]) -> Path:
    from cyclegan_deploy.export.precision import fp16_safety_report, load_images, to_fp16
    from cyclegan_deploy.export.validate import validate_onnx

    fp16_path = to_fp16(onnx_path, artifacts.graph_path(onnx_path, "fp16"), norm_precision=opts.fp16_norm)
    result.files.append(fp16_path)
    norm = f", InstanceNormalization {opts.fp16_norm}" if meta.norm == "instance" else ""
    echo(f"wrote {fp16_path} (FP16 convs{norm}, FP32 input/output)")
    images = load_images(opts.safety_images, meta) if opts.safety_images else None
    safety_path = artifacts.safety_path(fp16_path)
    report = fp16_safety_report(model, meta, images=images, norm_precision=opts.fp16_norm, out_path=safety_path,
                                image_source=str(opts.safety_images or ""), echo=False)
    result.safety.append(report)
    result.files.append(safety_path)
    echo(report.verdict)
    if opts.validate:
        gate(lambda: validate_onnx(model, meta, fp16_path, echo=False), fp16_path, result)
        echo(result.parity[-1].summary() + " [ORT CPU runs FP16 convs in FP32: weight rounding only]")
    return fp16_path


def _export_int8(model: nn.Module, meta: ModelMeta, onnx_path: Path, opts: ExportOptions, result: ExportResult,
                 echo: Callable[[str], None]) -> Path:
    from cyclegan_deploy.export.calibration import collect
    from cyclegan_deploy.export.int8 import export_int8

    calibration = collect(opts.calib, opts.checkpoint, meta, opts.calib_size, echo)
    result.holdout[meta.direction], result.int8_min_psnr = calibration.holdout, opts.int8_min_psnr
    path, q = export_int8(onnx_path, artifacts.graph_path(onnx_path, "int8"), calibration, opts.int8_min_psnr, echo)
    result.files.append(path)
    kept = ", ".join(k["module"] for k in q.kept_float) or "none"
    echo(f"wrote {path} (QDQ: {q.quantized_convs} convolutions int8; float: InstanceNormalization, the output "
         f"conv, guard-kept: {kept}; {q.psnr_db:.2f} dB vs fp32 on the held-out images, {q.runtime})")
    if opts.validate:
        gate(lambda: _int8_gate(model, meta, path, calibration.holdout, opts.int8_min_psnr), path, result)
        echo(result.parity[-1].summary())
    return path


def _int8_gate(model: nn.Module, meta: ModelMeta, path: Path, images: list[Any], min_psnr: float) -> ParityReport:
    """The int8 graph through the runtime's OpenVINO backend (int8 kernels, verified) where installed, else
    ONNX Runtime, vs PyTorch FP32 on the held-out calibration images (natural inputs: random ones would leave
    the calibrated ranges)."""
    from cyclegan_deploy.backends import available_backends, load_backend
    from cyclegan_deploy.backends.base import UNAVAILABLE
    from cyclegan_deploy.export.validate import validate_candidate

    backend = "onnxruntime" if available_backends(["openvino"])["openvino"].startswith(UNAVAILABLE) else "openvino"
    with load_backend(path, backend=backend, device="cpu") as runner:
        return validate_candidate(model, meta, runner, artifact=path, candidate=runner.name, precision="int8",
                                  min_psnr=min_psnr, images=images, echo=False,
                                  note=f"INT8 QDQ graph on {runner.name} vs PyTorch FP32 CPU, on the held-out "
                                       "calibration images")


def _export_openvino(model: nn.Module, meta: ModelMeta, onnx_path: Path, opts: ExportOptions,
                     result: ExportResult, echo: Callable[[str], None]) -> None:
    from cyclegan_deploy.export.openvino import cpu_supports, export_openvino, openvino_runner
    from cyclegan_deploy.export.validate import validate_candidate

    xml = export_openvino(onnx_path, artifacts.ir_path(opts.out_dir, meta.direction), opts.ov_precision)
    result.files += [xml, artifacts.ir_weights_path(xml), artifacts.sidecar_path(xml)]
    echo(f"wrote {xml} (+ .bin, .xml.json; inference precision {opts.ov_precision})")
    if not opts.validate:
        return
    # gate at the recorded precision when this CPU has it; otherwise at f32 and say so
    measured = opts.ov_precision if cpu_supports(opts.ov_precision) else "f32"
    note = f"OpenVINO CPU at INFERENCE_PRECISION_HINT={measured}"
    if measured != opts.ov_precision:
        note += f" ({opts.ov_precision} is not supported on this CPU; measured f32)"
    gate(lambda: validate_candidate(model, meta, openvino_runner(xml, measured), artifact=xml,
                                     candidate=f"openvino-{measured}", note=note, echo=False,
                                     precision=canonical_precision(measured)), xml, result)
    echo(result.parity[-1].summary())


def make_graphs(source: Path, out_dir: Path, fp16: bool, echo: Callable[[str], None] = print) -> dict[str, Path]:
    """The ONNX graph (and FP16 graph) of one generator, for tools that need artifacts rather than a release:
    `cgdeploy bench` and the benchmark scripts. `source` is a checkpoint/run dir (exported as by
    `cgdeploy export --no-validate`; graph checks still run) or an FP32 .onnx (only its FP16 graph is made).
    Returns {"onnx": ..., "onnx-fp16": ...}."""
    source = Path(source)
    if artifacts.kind_of(source).name == "onnx":
        graphs = {"onnx": source}
        if fp16:
            from cyclegan_deploy.export.precision import to_fp16

            graphs["onnx-fp16"] = to_fp16(source, artifacts.graph_path(Path(out_dir) / source.name, "fp16"))
        return graphs
    direction = "AtoB" if source.is_dir() else None  # one generator of a CycleGAN run is enough
    # a tool's work folder, remade on every run (bench retries without FP16 into the same folder)
    result = run_export(ExportOptions(checkpoint=source, out_dir=Path(out_dir), fp16=fp16, validate=False,
                                      direction=direction, force=True), echo=echo)
    graphs = {"onnx": result.files[0]}
    if fp16:
        graphs["onnx-fp16"] = artifacts.graph_path(result.files[0], "fp16")
    return graphs

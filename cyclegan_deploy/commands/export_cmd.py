"""`cgdeploy export`: checkpoint -> ONNX (+ FP16, OpenVINO IR, TensorRT engine), each gated by parity.

Thin: parse options -> ExportOptions -> export.pipeline.run_export. torch/onnx are imported in the body.
"""

from __future__ import annotations

from pathlib import Path

import typer

from cyclegan_deploy.commands.options import FORCE
from cyclegan_deploy.errors import ConfigError


def register(app: typer.Typer, *sub: typer.Typer) -> None:
    @app.command("export")
    def export(
        checkpoint: Path = typer.Argument(..., help="Run dir of `cgdeploy train` (both directions of a CycleGAN), "
                                                    "one of our generator files, or a reference *_net_G*.pth."),
        out_dir: Path = typer.Option(..., "-o", "--output", help="Output folder for g_AtoB.onnx, reports, engines."),
        arch: str | None = typer.Option(None, "--arch", help="resnet_9blocks | resnet_6blocks | unet_256 | "
                                                             "unet_128 (default: inferred from the weights)."),
        ngf: int | None = typer.Option(None, "--ngf", min=1, help="Generator width (default: inferred)."),
        norm: str | None = typer.Option(None, "--norm", help="instance | batch | none (default: inferred)."),
        direction: str | None = typer.Option(None, "--direction", help="AtoB | BtoA | both (default: both for a "
                                                                       "CycleGAN run dir, else from the file name)."),
        fp16: bool = typer.Option(False, "--fp16", help="Also write g_*.fp16.onnx (FP16 convs, FP32 instance "
                                                        "norm, FP32 I/O) and its FP16 safety report."),
        fp16_norm: str = typer.Option("fp32", "--fp16-norm", help="fp32 (safe, default) | fp16: precision of "
                                                                  "InstanceNormalization in the FP16 graph."),
        int8: bool = typer.Option(False, "--int8", help="Also write g_*.int8.onnx: NNCF post-training quantization "
                                                        "(QDQ, symmetric int8) kept above --int8-min-psnr by an "
                                                        "accuracy guard; for OpenVINO, ONNX Runtime and TensorRT."),
        calib: Path | None = typer.Option(None, "--calib", help="Calibration images for --int8 (folder, searched "
                                          "recursively; default: the run's training data, else the built-in set)."),
        calib_size: int = typer.Option(64, "--calib-size", help="Calibration images for --int8 (64); a quarter "
                                                                "more (4-16) are held out for the guard."),
        int8_min_psnr: float = typer.Option(40.0, "--int8-min-psnr", help="PSNR floor vs fp32 on the held-out "
                                            "images (40 dB): the guard returns layers to float until it holds."),
        engine: bool = typer.Option(False, "--engine", help="Build a TensorRT engine g_*.plan (+ .plan.json) from "
                                                            "the FP16 graph with --fp16, the INT8 graph with --int8, "
                                                            "else the FP32 one."),
        min_shape: str | None = typer.Option(None, "--min-shape", help="TensorRT profile min, HxW or NxHxW "
                                                                       "(default: train size / 4, batch 1)."),
        opt_shape: str | None = typer.Option(None, "--opt-shape", help="TensorRT profile opt, HxW or NxHxW "
                                                                       "(default: batch 4 at 1080x1920)."),
        max_shape: str | None = typer.Option(None, "--max-shape", help="TensorRT profile max, HxW or NxHxW "
                                                                       "(default: batch 4 at 1920x1920: 720p and "
                                                                       "1080p either way up)."),
        workspace_gb: float = typer.Option(4.0, "--workspace-gb", help="TensorRT workspace memory limit (GiB)."),
        timing_cache: Path | None = typer.Option(None, "--timing-cache", help="TensorRT timing cache file, reused "
                                                 "across builds (default: OUT_DIR/tensorrt.timing.cache)."),
        opt_level: int = typer.Option(3, "--opt-level", min=0, max=5, help="TensorRT builder optimization level."),
        engine_io: str = typer.Option("float32", "--engine-io", help="TensorRT engine I/O: float32 (the graph's) "
                                      "or uint8 (frames in and out, normalising on the GPU; for `video`)."),
        target: str = typer.Option("onnx", "--target", help="onnx | openvino (also writes g_*.xml/.bin)."),
        ov_precision: str = typer.Option("f32", "--ov-precision", help="OpenVINO inference precision recorded "
                                                                       "with the IR: f32 | bf16 | f16."),
        no_validate: bool = typer.Option(False, "--no-validate", help="Skip the parity gates (not recommended)."),
        safety_images: Path | None = typer.Option(None, "--safety-images", help="Folder of sample images for the "
                                                  "FP16 safety report (default: seeded images)."),
        triton_repo: Path | None = typer.Option(None, "--triton-repo", help="Also write a Triton model repository "
                                                "here: <name>/config.pbtxt + <name>/1/model.onnx (the --int8, "
                                                "else --fp16, else FP32 graph) or model.plan with --engine."),
        triton_name: str | None = typer.Option(None, "--triton-name", help="Triton model name (default g_AtoB / "
                                               "g_BtoA; two directions get _AtoB/_BtoA appended)."),
        triton_max_batch: int = typer.Option(4, "--triton-max-batch", help="Triton max_batch_size (dynamic "
                                             "batching merges requests up to it)."),
        triton_instances: int = typer.Option(1, "--triton-instances", help="Model instances (instance_group "
                                             "count)."),
        triton_device: str = typer.Option("gpu", "--triton-device", help="gpu | cpu: instance_group kind."),
        triton_trt: bool = typer.Option(False, "--triton-trt", help="Enable the ONNX Runtime backend's TensorRT "
                                        "accelerator (precision of the served graph) in config.pbtxt."),
        force: bool = FORCE,
    ) -> None:
        """Export a generator to ONNX (dynamic batch/height/width) and check it against PyTorch."""
        from cyclegan_deploy.export.pipeline import ExportOptions, run_export
        from cyclegan_deploy.export.triton import TritonOptions

        triton = None if triton_repo is None else TritonOptions(
            repo=triton_repo, name=triton_name, max_batch=triton_max_batch, instances=triton_instances,
            device=triton_device, tensorrt=triton_trt)
        if triton is None and (triton_name is not None or triton_trt or triton_max_batch != 4
                               or triton_instances != 1 or triton_device != "gpu"):
            raise ConfigError("the --triton-* options apply with --triton-repo DIR; add it")

        opts = ExportOptions(checkpoint=checkpoint, out_dir=out_dir, arch=arch, ngf=ngf, norm=norm,
                             direction=direction, fp16=fp16, fp16_norm=fp16_norm, engine=engine,
                             min_shape=min_shape, opt_shape=opt_shape, max_shape=max_shape,
                             workspace_gb=workspace_gb, timing_cache=timing_cache, opt_level=opt_level,
                             engine_io=engine_io,
                             target=target, ov_precision=ov_precision, validate=not no_validate,
                             safety_images=safety_images, int8=int8, calib=calib, calib_size=calib_size,
                             int8_min_psnr=int8_min_psnr, force=force, triton=triton)
        result = run_export(opts, echo=typer.echo)
        typer.echo(f"done: {len(result.files)} files in {out_dir}" + (
            "" if opts.validate else " (parity NOT checked: --no-validate)"))
        for path in result.files:
            size = path.stat().st_size
            typer.echo(f"  {path.name:32s} {size / 1e6:8.2f} MB" if size >= 100_000 else f"  {path.name:32s} "
                       f"{size / 1e3:8.1f} kB")
        for folder in result.triton:
            typer.echo(f"  Triton model: {folder}")

"""`cgdeploy bench`: latency/throughput of one model across backends, sizes and batch sizes.

Artifacts: any of --checkpoint / --model / --engine, together if you like; each backend reads the one it
needs (torch: the checkpoint; onnxruntime/OpenVINO: the ONNX; tensorrt: the engine). With a checkpoint
and no --model the ONNX (and, for *-fp16 ONNX backends, its FP16 graph) is exported into RESULTS/artifacts,
so `cgdeploy bench --checkpoint G.pth -o out` alone compares torch, ONNX Runtime and OpenVINO.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

from cyclegan_deploy.commands.options import CHECKPOINT, ENGINE, MODEL
from cyclegan_deploy.errors import CgDeployError, ConfigError


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in _split(text)]
    except ValueError as e:
        raise ConfigError(f"{flag} {text!r}: write comma-separated integers, e.g. {flag} 1,4") from e
    if not values or min(values) < 1:
        raise ConfigError(f"{flag} {text!r}: give at least one value, each >= 1")
    return values


def register(app: typer.Typer, *sub: typer.Typer) -> None:
    @app.command("bench")
    def bench(
        out: Path = typer.Option(..., "-o", "--out", help="Results folder: results.json/.csv/.md, latency.png."),
        engine: Path | None = ENGINE,
        model: Path | None = MODEL,
        checkpoint: Path | None = CHECKPOINT,
        fp16_model: Path | None = typer.Option(None, "--fp16-model",
                                                help="FP16 graph (g_*.fp16.onnx) for the *-fp16 ONNX Runtime backends "
                                                     "(default: converted from the ONNX into RESULTS/artifacts)."),
        backends: str = typer.Option("auto", "--backends",
                                     help="Comma-separated: torch, torch-bf16, torch-compile, torch-compile-bf16, "
                                          "torch-cuda[-fp16|-bf16|-compile-fp16], onnxruntime[-cuda[-fp16]|-trt"
                                          "[-fp16]], openvino-f32, openvino-bf16, tensorrt; extra backend options as "
                                          "name:key=value (openvino-bf16:num_streams=2). auto: all CPU ones the "
                                          "artifacts allow, plus GPU ones when nvidia-smi sees a GPU."),
        sizes: str = typer.Option("256x256,720x1280", "--sizes", help="HEIGHTxWIDTH list, comma-separated."),
        batch: str = typer.Option("1", "--batch", help="Batch sizes, comma-separated (e.g. 1,4)."),
        repeats: int = typer.Option(20, "--repeats", min=1, help="Timed calls per case (at most)."),
        warmup: int = typer.Option(3, "--warmup", min=1, help="Untimed calls first (the first one is reported)."),
        max_seconds: float = typer.Option(30.0, "--max-seconds", min=0.0,
                                          help="Time budget per case; stops early (after 3 samples at least)."),
        threads: int | None = typer.Option(None, "--threads", min=1,
                                           help="CPU threads per backend (default: the physical core count)."),
        reference: str | None = typer.Option(None, "--reference",
                                             help="Parity reference spec (default: torch with a checkpoint, "
                                                  "else onnxruntime)."),
        baseline: str | None = typer.Option(None, "--baseline", help="Speedup denominator (default: the reference)."),
        video: Path | None = typer.Option(None, "--video", help="Also time the whole video pipeline on this clip "
                                                                  "(end-to-end fps vs inference-only, per stage)."),
        video_backend: str | None = typer.Option(None, "--video-backend",
                                                 help="Spec for --video (default: the fastest that ran)."),
    ) -> None:
        """Compare backends: p50/p90/p99 latency, fps, GFLOP/s and % of peak, parity vs torch fp32."""
        from cyclegan_deploy.bench import BenchConfig, default_specs, parse_size, print_table, run_bench, write_outputs

        given = {"--engine": engine, "--model": model, "--checkpoint": checkpoint, "--fp16-model": fp16_model,
                 "--video": video}
        if engine is None and model is None and checkpoint is None:
            raise ConfigError("give at least one of --checkpoint X.pth, --model X.onnx or --engine X.plan")
        for flag, path in given.items():
            if path is not None and not path.exists():
                raise ConfigError(f"{path}: no such file (from {flag}); check the path")
        specs = (default_specs(checkpoint, model, engine, gpu=shutil.which("nvidia-smi") is not None)
                 if backends.strip() == "auto" else _split(backends))
        cfg = BenchConfig(out_dir=out, specs=specs, sizes=[parse_size(s) for s in _split(sizes)],
                          batches=_ints(batch, "--batch"), checkpoint=checkpoint, onnx=model, onnx_fp16=fp16_model,
                          engine=engine, warmup=warmup, repeats=repeats, max_seconds=max_seconds, threads=threads,
                          reference=reference, baseline=baseline, video=video, video_backend=video_backend)
        results = run_bench(cfg)
        written = write_outputs(results, out)
        print_table(results)
        typer.echo("wrote " + ", ".join(written.values()))
        if not any(r["status"] == "ok" for r in results["cases"]):
            raise CgDeployError(f"no backend ran; the reasons are in {out / 'results.md'}")

"""`cgdeploy bench`: latency/throughput of one model across backends, sizes and batch sizes.

Artifacts: any of --checkpoint / --model / --engine, together if you like; each backend reads the one it
needs (torch: the checkpoint; onnxruntime/OpenVINO: the ONNX; tensorrt: the engine). The graphs the chosen
backends need and were not given (the ONNX without --model, the FP16 graph of the *-fp16 ONNX backends
without --fp16-model) are made from the checkpoint (or the FP16 graph from --model) into RESULTS/artifacts
here, through the export stage, before the bench runs: the runtime bench never imports the export stage. So
`cgdeploy bench --checkpoint G.pth -o out` alone compares torch, ONNX Runtime and OpenVINO. The INT8 graph of
the *-int8 specs is never made here (quantizing needs calibration images): --int8-model, or X.int8.onnx found
beside --model X.onnx (what `cgdeploy export --int8` writes); the auto specs include them only when it is there.

"% of peak" divides by peaks measured on this machine (bench/peaks.py: a GEMM and a 3x3 conv per library and
precision): measured once (~15 s), cached
in $CGDEPLOY_CACHE/peaks (default ~/.cache/cgdeploy/peaks), again with --remeasure-peaks.

Before anything runs: sizes, memory and a --video clip are checked (bench.limits), an existing results.json
is refused without --force, and the folder is proven writable and locked for the run. A failed --video makes
the command exit 1 after the inference results are written, as a run where no backend ran does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cyclegan_deploy.commands.options import CHECKPOINT, ENGINE, FORCE, MODEL
from cyclegan_deploy.errors import CgDeployError, ConfigError, ModelError
from cyclegan_deploy.outputs import check_writable, locked, output_errors, refuse_existing

if TYPE_CHECKING:
    from cyclegan_deploy.bench import BenchConfig


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


def make_graphs_for(cfg: BenchConfig, echo: Callable[[str], None]) -> BenchConfig:
    """cfg with the ONNX / FP16 graphs its specs need and were not given, exported from cfg.checkpoint into
    RESULTS/artifacts. A graph that cannot be made becomes cfg.artifact_errors[kind]: the specs reading it
    report why ("unavailable: ..." for a missing exporter stack, "failed: ..." otherwise), the others run."""
    paths = cfg.artifact_paths()
    want = [k for k in cfg.needed_artifacts() if k in ("onnx", "onnx-fp16") and paths[k] is None]
    # a given FP32 graph (--model) gives its FP16 graph; otherwise the checkpoint gives what is missing
    source = cfg.onnx if want == ["onnx-fp16"] and cfg.onnx is not None else cfg.checkpoint
    if source is None or not want:
        return cfg
    from cyclegan_deploy.bench import artifact_error

    work = cfg.out_dir / "artifacts"
    made: dict[str, Path] = {}
    errors = dict(cfg.artifact_errors)
    # with FP16 wanted, a failure may be the FP16 step alone (e.g. its parity gate): retry without it so the
    # FP32 graph's backends still run, as they would with a --model given
    for fp16 in ([True, False] if "onnx-fp16" in want else [False]):
        try:
            from cyclegan_deploy.export.pipeline import make_graphs

            made = make_graphs(source, work, fp16=fp16, echo=echo)
            break
        except Exception as e:  # an exporter bug must not end the whole benchmark: its specs report it
            errors["onnx-fp16" if fp16 else "onnx"] = artifact_error("onnx-fp16" if fp16 else "onnx", e)
            if "onnx" not in want:
                break  # the FP32 graph came from --model; nothing left to make
    if work.is_dir() and not any(work.iterdir()):
        work.rmdir()
    notes = list(cfg.notes)
    if "onnx" in want and made.get("onnx") is not None:
        notes.append(f"exported {made['onnx']} from {source} for the ONNX-based backends")
    if "onnx-fp16" in want and made.get("onnx-fp16") is not None:
        notes.append(f"converted {made['onnx-fp16']} (FP16 convs, FP32 instance norm) for the FP16 ONNX backends")
    return dataclasses.replace(
        cfg, notes=notes, artifact_errors=errors,
        onnx=made.get("onnx") if "onnx" in want else cfg.onnx,
        onnx_fp16=made.get("onnx-fp16") if "onnx-fp16" in want else cfg.onnx_fp16)


@contextlib.contextmanager
def _results_folder(out: Path, force: bool) -> Iterator[None]:
    """The results folder for one run: proven writable before any case runs, locked for the run (a second
    bench to the same -o is refused), and removed again when this run created it and fails before its results
    are written (everything in it is then this run's: exported graphs, a half-made video)."""
    created = not out.exists()
    held = False
    try:
        check_writable(out)
        with locked(out):
            held = True
            refuse_existing(out / "results.json", force)  # another run may have finished while we waited
            yield
    except BaseException:
        if created and held:
            shutil.rmtree(out, ignore_errors=True)
        elif created:  # not ours to empty (another run holds it): only the empty folder check_writable made
            with contextlib.suppress(OSError):
                out.rmdir()
        raise


def register(app: typer.Typer, *sub: typer.Typer) -> None:
    @app.command("bench")
    def bench(
        out: Path = typer.Option(..., "-o", "--out", help="Results folder: results.json/.csv/.md, latency.png."),
        engine: Path | None = ENGINE,
        model: Path | None = MODEL,
        checkpoint: Path | None = CHECKPOINT,
        fp16_model: Path | None = typer.Option(None, "--fp16-model",
                                                help="FP16 graph (g_*.fp16.onnx) for the *-fp16 ONNX Runtime backends "
                                                     "(default: made from --checkpoint or --model into "
                                                     "RESULTS/artifacts)."),
        int8_model: Path | None = typer.Option(None, "--int8-model",
                                                help="INT8 QDQ graph (g_*.int8.onnx from `cgdeploy export --int8`) for "
                                                     "openvino-int8 / onnxruntime-int8 (default: X.int8.onnx beside "
                                                     "--model X.onnx, if there; never made here)."),
        backends: str = typer.Option("auto", "--backends",
                                     help="Comma-separated: torch, torch-bf16, torch-compile, torch-compile-bf16, "
                                          "torch-cuda[-fp16|-bf16|-compile-fp16], onnxruntime[-cuda[-fp16]|-trt"
                                          "[-fp16]|-int8], openvino-f32, openvino-bf16, openvino-int8, "
                                          "openvino-{f32,bf16,int8}-tput (THROUGHPUT mode), tensorrt; extra backend "
                                          "options as name:key=value (openvino-bf16:num_streams=2). auto: all CPU ones "
                                          "the artifacts allow (the int8 ones with an int8 graph), plus GPU ones when "
                                          "nvidia-smi sees a GPU."),
        throughput: bool = typer.Option(False, "--throughput",
                                        help="Also run each OpenVINO spec in THROUGHPUT mode (its -tput variant) and "
                                             "fill the 'tput fps' column: frames/s with N batches in flight beside "
                                             "the batch-1 latency. Backends without an async queue stay blank "
                                             "(sync: their fps is their throughput)."),
        inflight: int | None = typer.Option(None, "--inflight", min=1,
                                            help="Batches in flight for the throughput column (default: what the "
                                                 "backend reports as its optimum, OpenVINO's optimal infer requests)."),
        remeasure_peaks: bool = typer.Option(False, "--remeasure-peaks",
                                             help="Measure this machine's peaks again (the '% peak' denominators; "
                                                  "otherwise measured once and cached in $CGDEPLOY_CACHE/peaks, "
                                                  "default ~/.cache/cgdeploy/peaks). Do it on a quiet machine."),
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
        force: bool = FORCE,
    ) -> None:
        """Compare backends: p50/p90/p99 latency, fps, throughput, GFLOP/s and % of measured peak, parity vs
        torch fp32."""
        from cyclegan_deploy.bench import BenchConfig, default_specs, print_table, run_bench, write_outputs
        from cyclegan_deploy.bench.cases import int8_beside, parse_spec, with_throughput
        from cyclegan_deploy.bench.limits import preflight
        from cyclegan_deploy.bench.peaks import machine_peaks
        from cyclegan_deploy.frames import parse_size

        given = {"--engine": engine, "--model": model, "--checkpoint": checkpoint, "--fp16-model": fp16_model,
                 "--int8-model": int8_model, "--video": video}
        if engine is None and model is None and checkpoint is None and int8_model is None:
            raise ConfigError("give at least one of --checkpoint X.pth, --model X.onnx, --int8-model X.int8.onnx "
                              "or --engine X.plan")
        for flag, path in given.items():
            if path is not None and not path.exists():
                raise ConfigError(f"{path}: no such file (from {flag}); check the path")
        if out.exists() and not out.is_dir():
            raise ConfigError(f"{out}: is a file; -o takes the results folder, choose another -o")
        refuse_existing(out / "results.json", force)
        int8 = int8_model or int8_beside(model)
        specs = (default_specs(checkpoint, model, engine, gpu=shutil.which("nvidia-smi") is not None, onnx_int8=int8)
                 if backends.strip() == "auto" else _split(backends))
        cfg = BenchConfig(out_dir=out, specs=with_throughput(specs) if throughput else specs,
                          sizes=[parse_size(s, option="--sizes") for s in _split(sizes)],
                          batches=_ints(batch, "--batch"), checkpoint=checkpoint, onnx=model, onnx_fp16=fp16_model,
                          onnx_int8=int8, engine=engine, warmup=warmup, repeats=repeats, max_seconds=max_seconds,
                          threads=threads, reference=reference, baseline=baseline, video=video,
                          video_backend=video_backend, inflight=inflight,
                          notes=[f"int8 graph {int8} found beside {model}"] if int8 and not int8_model else [])
        cfg.needed_artifacts()  # unknown backend names fail here, before anything is made
        preflight(cfg)  # sizes, memory and the clip, before the folder is touched (run_bench checks again)
        def echo(text: str) -> None:
            typer.echo(text, err=True)

        with output_errors(out), _results_folder(out, force):
            cfg = make_graphs_for(cfg, echo=echo)
            if any(parse_spec(name).device == "cpu" for name, *_ in cfg.plan()):
                cfg = dataclasses.replace(cfg, peaks=machine_peaks(remeasure=remeasure_peaks, log=echo))
            results = run_bench(cfg)
            written = write_outputs(results, out)
        print_table(results)
        typer.echo("wrote " + ", ".join(written.values()))
        if "NaN/Inf" in results["reference"]["status"]:  # the model itself is broken, whatever else ran
            raise ModelError(results["reference"]["status"].split(": ", 1)[-1] + f"; details in {out / 'results.md'}")
        if not any(r["status"] == "ok" for r in results["cases"]):
            reasons = list(dict.fromkeys(r["status"] for r in results["cases"]))
            # one shared reason (a NaN checkpoint, a missing runtime) is the message; several are in results.md
            why = f": {reasons[0]}" + (f" (and {len(reasons) - 1} other reason(s))" if len(reasons) > 1 else "")
            raise CgDeployError(f"no backend ran{why}; details in {out / 'results.md'}")
        if results.get("video") and results["video"]["status"] != "ok":
            raise CgDeployError(f"{video}: the video benchmark did not run ({results['video']['status']}); the "
                                f"other results are in {out / 'results.md'}")

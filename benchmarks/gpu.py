#!/usr/bin/env python3
"""GPU benchmark: build what this machine can, then parity + latency at 256x256, 720x1280 and 1080x1920.

    benchmarks/gpu.sh [OUT_DIR] [--tiny] [--checkpoint G.pth] ...   (OUT_DIR default benchmarks/results/gpu)

Runs from a plain checkout (no pip install; see _common.bootstrap) with only python3 + torch (CUDA build),
onnx and numpy required; onnxscript, onnxruntime(-gpu), TensorRT + cuda-python, rich and matplotlib are used
when importable. Model: the seeded full-size ResNet-9 (ngf 64, instance norm), or --checkpoint.
Built here: FP32 ONNX, FP16 ONNX (FP32 instance norm), and a strongly typed TensorRT engine from the FP16
graph with one profile covering every size and batch. Cases: torch CUDA fp32 (TF32 off) / fp16 / bf16 (the
model cast, channels_last), fp16 with CUDA graphs, torch.compile fp16 (max-autotune with --specs), ONNX Runtime
CUDA fp32 / fp16 graph, ONNX Runtime TensorRT EP (fp16 graph), TensorRT engine; each at batch 1 and 4. Parity
of every case vs torch fp32 on the CPU (no TF32) on the same frame; speedups vs torch CUDA fp32 eager. Then
the video path end to end (--video-backend, default torch-cuda-fp16-graphs: uint8 frames in and out,
normalisation and rounding on the GPU) on a generated clip at the largest size, against that backend's
inference-only fps in the same run; then the same with `copy_overlap=true` (uploads and downloads on their own
CUDA streams, backends/overlap.py) into OUT_DIR/video_copy_overlap/, to decide whether it should be the
default. What cannot run here is reported "unavailable: <why>", never dropped.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, TINY_SIZES, bootstrap, command_output, parse_sizes, prepare  # noqa: E402

# torch-cuda-compile-max-fp16 (max-autotune) is left out by default: its autotuning per shape can take minutes,
# and this script must fit one device call (10 min); add it with --specs on a longer lease
SPECS = ["torch-cuda", "torch-cuda-fp16", "torch-cuda-fp16-graphs", "torch-cuda-bf16", "torch-cuda-compile-fp16",
         "onnxruntime-cuda", "onnxruntime-cuda-fp16", "onnxruntime-trt-fp16", "tensorrt"]
VIDEO_SPEC = "torch-cuda-fp16-graphs"  # the video path end to end: uint8 frames in/out, pre/post on the GPU
VIDEO_FRAMES = 240


def cuda_env() -> dict[str, Any]:
    """What torch sees (device, capability, cuDNN, TF32 defaults): explains the fp32 numbers."""
    try:
        import torch
    except ImportError as e:
        return {"torch": f"not importable: {e}"}
    env: dict[str, Any] = {"torch": torch.__version__, "torch_cuda": torch.version.cuda,
                           "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        cc = ".".join(map(str, torch.cuda.get_device_capability(0)))
        env.update(device=torch.cuda.get_device_name(0), capability=cc,
                   cudnn=torch.backends.cudnn.version(), cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                   matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32)
    return env


def profile_shapes(sizes: list[tuple[int, int]], multiple: int, max_batch: int) -> tuple[str, str, str]:
    """(--min-shape, --opt-shape, --max-shape) of one profile taking every (H, W) of the run, padded to the
    model's multiple, at batch 1..max_batch. A profile is a box per dimension, so min and max are taken per
    dimension (720x1280 and 1280x720 need 720..1280 in both); opt is the size of median area (any listed size
    lies inside the box)."""
    up = sorted(((-(-h // multiple) * multiple, -(-w // multiple) * multiple) for h, w in sizes),
                key=lambda s: (s[0] * s[1], s))
    (h0, w0), (h1, w1) = (min(h for h, _ in up), min(w for _, w in up)), (max(h for h, _ in up), max(w for _, w in up))
    opt = up[(len(up) - 1) // 2]
    return f"1x{h0}x{w0}", f"1x{opt[0]}x{opt[1]}", f"{max_batch}x{h1}x{w1}"


def build_engine(onnx: Path | None, work: Path, sizes: list[tuple[int, int]], max_batch: int
                 ) -> tuple[Path | None, str]:
    """TensorRT engine covering every (size, batch) of the run; (None, why) when TensorRT/GPU is absent."""
    if onnx is None:
        return None, "no ONNX graph to build a TensorRT engine from (see notes)"
    from cyclegan_deploy.backends import UNAVAILABLE, available_backends

    state = available_backends(["tensorrt"])["tensorrt"]
    if state.startswith(UNAVAILABLE):
        return None, state[len(UNAVAILABLE):]
    try:
        from cyclegan_deploy.artifacts import read_card
        from cyclegan_deploy.export.tensorrt import BuildOptions, build_engine, derive_profile

        meta = read_card(onnx)
        profile = derive_profile(meta, *profile_shapes(sizes, meta.multiple, max_batch))
        plan = work / "model.plan"
        t = time.time()
        build_engine(onnx, plan, profile, BuildOptions(timing_cache=work / "timing.cache"))
        took = time.time() - t
        return plan, f"built {plan.name} from {onnx.name} in {took:.0f} s, profile {profile.describe(meta.multiple)}"
    except Exception as e:
        return None, f"engine build failed: {type(e).__name__}: {str(e)[:300]}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu")
    ap.add_argument("--tiny", action="store_true", help="tiny model and sizes: checks the script, not the GPU")
    ap.add_argument("--checkpoint", type=Path, default=None, help="a generator .pth instead of the seeded model")
    ap.add_argument("--sizes", default=None, help="HxW list (default 256x256,720x1280,1080x1920)")
    ap.add_argument("--batch", default="1,4")
    ap.add_argument("--specs", default=",".join(SPECS))
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--max-seconds", type=float, default=None, help="per case (default 20)")
    ap.add_argument("--keep-artifacts", action="store_true", help="copy the ONNX/engine files into OUT/artifacts")
    ap.add_argument("--video-backend", default=VIDEO_SPEC, help="spec timed on the video path end to end ('' to "
                    f"skip; default {VIDEO_SPEC})")
    ap.add_argument("--video-size", default=None, help="HxW of the generated clip (default: the largest size)")
    args = ap.parse_args(argv)
    how = bootstrap()
    from cyclegan_deploy.artifacts import sidecar_path, write_json
    from cyclegan_deploy.bench import BenchConfig, print_table, run_bench, write_outputs
    from cyclegan_deploy.errors import BackendUnavailableError

    sizes = parse_sizes(args.sizes) if args.sizes else (TINY_SIZES if args.tiny else
                                                         [(256, 256), (720, 1280), (1080, 1920)])
    batches = [int(b) for b in args.batch.split(",") if b.strip()]
    notes = [f"cyclegan_deploy imported from {how}"]
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="cgdeploy-gpu-bench-"))
    try:
        t0 = time.time()
        paths = prepare(work, args.tiny, fp16=True, notes=notes, checkpoint=args.checkpoint)
        engine, engine_note = build_engine(paths["onnx_fp16"] or paths["onnx"], work, sizes, max(batches))
        notes.append(f"tensorrt: {engine_note}")
        # what could not be made here: the specs reading it say so ("unavailable: ...") instead of NEEDS
        missing: dict[str, Exception] = {} if engine else {
            "engine": BackendUnavailableError(f"no TensorRT engine: {engine_note}")}
        for kind in ("onnx", "onnx-fp16"):
            if paths["onnx" if kind == "onnx" else "onnx_fp16"] is None:
                missing[kind] = BackendUnavailableError(f"no {kind} graph could be made here (see notes)")
        clip = None
        if args.video_backend:
            from cyclegan_deploy.sample_media import make_sample_video

            vh, vw = parse_sizes(args.video_size)[0] if args.video_size else max(sizes, key=lambda s: s[0] * s[1])
            clip = make_sample_video(work / "clip.mp4", frames=24 if args.tiny else VIDEO_FRAMES, size=(vh, vw))
            notes.append(f"video: {clip.name}, {24 if args.tiny else VIDEO_FRAMES} generated frames at {vh}x{vw} "
                         f"with AAC audio, through {args.video_backend}")
        cfg = BenchConfig(out_dir=args.out, specs=args.specs.split(","), sizes=sizes, batches=batches,
                          checkpoint=paths["checkpoint"], onnx=paths["onnx"], onnx_fp16=paths["onnx_fp16"],
                          engine=engine, reference="torch", baseline="torch-cuda", artifact_errors=missing,
                          repeats=args.repeats or (3 if args.tiny else 50),
                          warmup=args.warmup or (1 if args.tiny else 5),
                          max_seconds=args.max_seconds or (2.0 if args.tiny else 20.0), notes=notes,
                          video=clip, video_backend=args.video_backend or None)
        results = run_bench(cfg)
        results["cuda"] = cuda_env()
        results["notes"].append(f"whole script took {time.time() - t0:.0f} s")
        written = write_outputs(results, args.out)
        env = {"nvidia-smi": command_output(["nvidia-smi"]), "cuda": results["cuda"]}
        write_json(args.out / "environment.json", json.loads(json.dumps(env, default=str)))
        if args.keep_artifacts:
            dest = args.out / "artifacts"
            dest.mkdir(exist_ok=True)
            for f in work.iterdir():
                if f.suffix in (".onnx", ".plan", ".json", ".cache"):
                    shutil.copy2(f, dest / f.name)
        elif engine is not None and sidecar_path(engine).is_file():
            shutil.copy2(sidecar_path(engine), args.out / "engine.plan.json")
        print_table(results)
        if clip is not None and args.video_backend.startswith("torch-cuda"):
            overlap = f"{args.video_backend}:copy_overlap=true"
            sub = BenchConfig(out_dir=args.out / "video_copy_overlap", specs=[overlap], sizes=[(vh, vw)],
                              batches=batches[:1], checkpoint=paths["checkpoint"], reference="torch",
                              baseline=overlap, repeats=cfg.repeats, warmup=cfg.warmup, max_seconds=cfg.max_seconds,
                              notes=notes + ["copy/compute overlap on the video path"], video=clip,
                              video_backend=overlap)
            (args.out / "video_copy_overlap").mkdir(exist_ok=True)
            write_outputs(run_bench(sub), args.out / "video_copy_overlap")
        ok = sum(r["status"] == "ok" for r in results["cases"])
        print(f"{ok}/{len(results['cases'])} cases ran; wrote {args.out}/results.md, results.json, results.csv, "
              f"environment.json{', latency.png' if 'latency.png' in written else ' (no latency.png: see notes)'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

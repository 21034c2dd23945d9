"""What `cgdeploy bench` settles before it allocates anything: the size each case runs at (never below the
model's smallest input), and what it refuses: cases whose memory cannot fit, a clip that does not decode.

- Smallest input (min_side): a ResNet halves each side twice and its residual blocks reflect-pad by 1, which
  needs at least 2 pixels per side after the halving: 2 x the multiple (8). A U-Net's multiple already takes
  it down to 1x1. A case runs at run_size: raised to that minimum and padded to the multiple, as the runtime
  pads a frame; a size below the minimum gets a note in the results, and the tables show what ran.
- Memory (case_memory): input + output (float32) + activations ~ ACTIVATION_FACTOR full-resolution maps of
  ngf channels. Measured peaks (RSS, ResNet, batch 1): ONNX Runtime CPU ~8.3 such maps (ngf 64, 512^2) to
  ~10.7 (ngf 8, 1024^2, input/output included), torch ~3.3, OpenVINO ~3.1; 8 keeps ONNX Runtime's arena,
  the worst, inside the estimate. CPU cases are checked against MemAvailable (and the cgroup limit); GPU cases
  keep input + output on the host and their activations on the GPU (checked against its total memory).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from cyclegan_deploy import frames, machine
from cyclegan_deploy.bench.cases import BenchConfig, parse_spec
from cyclegan_deploy.errors import CgDeployError, ConfigError
from cyclegan_deploy.frames import padded_size
from cyclegan_deploy.metadata import ModelMeta

ACTIVATION_FACTOR = 8  # full-resolution feature maps of ngf channels alive at once (see the docstring)


def model_card(cfg: BenchConfig) -> tuple[ModelMeta, str]:
    """The card of the first artifact the run was given (the graph before the checkpoint: reading a graph's
    card needs no torch) and that file's name for messages; reference ResNet defaults when none can be read
    (the specs then report why)."""
    from cyclegan_deploy.artifacts import fallback_meta, read_card

    for path in (cfg.onnx, cfg.onnx_fp16, cfg.onnx_int8, cfg.engine, cfg.checkpoint):
        if path is not None and Path(path).is_file():
            try:
                return read_card(path), str(path)
            except (CgDeployError, OSError, ImportError):
                continue
    return fallback_meta(Path("model"), "no readable model card"), "the model"


def min_side(meta: ModelMeta) -> int:
    """The smallest side the model can run: the runtime's rule (frames.min_size)."""
    return frames.min_size(meta)


def run_size(meta: ModelMeta, h: int, w: int) -> tuple[int, int]:
    """What an (H, W) case runs at: at least the smallest input on each side, padded to the multiple, as the
    runtime pads a frame (frames.model_size); the tables show it beside the size asked ("7x7 (run 8x8)")."""
    least = min_side(meta)
    return padded_size(max(h, least), max(w, least), max(1, int(meta.multiple)))


def size_notes(meta: ModelMeta, sizes: list[tuple[int, int]], model: str) -> list[str]:
    """A note for each size below the model's smallest input: it runs padded, as the runtime runs it."""
    least = min_side(meta)
    why = ("a ResNet halves each side twice and its residual blocks reflect-pad by 1" if least > meta.multiple
           else "its size multiple")
    return [f"{h}x{w} is below the smallest input of {model} ({least}x{least}: {why}); it ran padded to "
            f"{'x'.join(map(str, run_size(meta, h, w)))}, as the runtime pads such frames"
            for h, w in dict.fromkeys(sizes) if min(h, w) < least]


def case_memory(meta: ModelMeta, h: int, w: int, batch: int) -> dict[str, int]:
    """Bytes one case needs: float32 input and output at the run size, and the estimated activations."""
    rh, rw = run_size(meta, h, w)
    s = max(1, meta.scale)
    return {"input": 4 * batch * meta.input_nc * rh * rw,
            "output": 4 * batch * meta.output_nc * s * rh * s * rw,
            "activations": 4 * batch * max(1, meta.ngf) * s * rh * s * rw * ACTIVATION_FACTOR}


def available_memory() -> int | None:
    """Host memory free for a new allocation (machine.available_memory; a name here so tests can shrink it)."""
    return machine.available_memory()


def gpu_memory() -> int | None:
    """The first GPU's total memory from nvidia-smi (an upper bound on what a case may use there)."""
    from cyclegan_deploy.bench.metrics import _gpus

    gpus = _gpus()
    m = re.match(r"\s*(\d+)\s*MiB", gpus[0].get("memory", "")) if gpus else None
    return int(m[1]) * 2**20 if m else None


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def check_memory(meta: ModelMeta, cases: list[tuple[str, int, int, int, str]], host: int | None,
                 gpu: int | None, model: str = "the model") -> None:
    """Refuse the first (device, H, W, batch, what) case whose estimate exceeds the memory it would run in;
    `what` names it in the message (the options that asked for it)."""
    for device, h, w, b, what in dict.fromkeys(cases):
        need = case_memory(meta, h, w, b)
        on_host = need["input"] + need["output"] + (need["activations"] if device == "cpu" else 0)
        parts = f"input {_size(need['input'])} + output {_size(need['output'])}"
        if device == "cpu":
            parts += f" + activations ~{_size(need['activations'])}"
        if host is not None and on_host > host:
            raise ConfigError(f"{what}: {model} needs about {_size(on_host)} of memory ({parts}, "
                              f"estimated) but {_size(host)} is available; use smaller --sizes or --batch")
        if device != "cpu" and gpu is not None and need["activations"] > gpu:
            raise ConfigError(f"{what}: {model} needs about {_size(need['activations'])} of GPU "
                              f"memory for activations (estimated) but the GPU has {_size(gpu)}; use smaller "
                              "--sizes or --batch")


def preflight(cfg: BenchConfig, plan: list[tuple[str, int, int, int]] | None = None) -> dict[str, Any]:
    """Every check that needs no backend: the memory of each case (ConfigError) and that the --video clip
    decodes (MediaError naming it). Returns the model's card, the clip's size and a note for each size that
    runs padded up to the model's smallest input."""
    plan = cfg.plan() if plan is None else plan
    meta, model = model_card(cfg)
    cases = [(parse_spec(name).device, h, w, b, f"--sizes {h}x{w} --batch {b}") for name, h, w, b in plan]
    video_size = None
    if cfg.video is not None:
        from cyclegan_deploy.video import probe_video

        try:
            video_size = probe_video(cfg.video).display_size
        except ImportError:  # no PyAV: run_video reports "unavailable" and the command fails after the results
            video_size = None
        else:
            device = parse_spec(cfg.video_backend).device if cfg.video_backend else "cpu"
            h, w = video_size
            cases.append((device, h, w, cfg.batches[0], f"--video {cfg.video} ({h}x{w}) at --batch {cfg.batches[0]}"))
    gpu = gpu_memory() if any(case[0] != "cpu" for case in cases) else None
    check_memory(meta, cases, available_memory(), gpu, model)
    return {"card": meta, "video_size": video_size,
            "notes": size_notes(meta, [(h, w) for _, h, w, _ in plan], model)}

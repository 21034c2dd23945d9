"""The TensorRT engine sidecar (`g_AtoB.plan.json` / `g_AtoB.engine.json`): what an engine was built with and
for, and the rule that refuses an engine from another TensorRT version or GPU.

Written by export/tensorrt.py, read by backends/tensorrt.py; both import it from here so the runtime never
needs the export stage. Torch-, TensorRT- and CUDA-free except gpu_info (cuda-python, imported inside).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cyclegan_deploy.artifacts import kind_of, sidecar_path, write_text
from cyclegan_deploy.errors import BackendUnavailableError, EngineMismatchError
from cyclegan_deploy.metadata import ModelMeta

SIDECAR_FORMAT = "cgdeploy-tensorrt-engine"
Shape4 = tuple[int, int, int, int]
# Video frame sizes (H, W as a landscape frame shows) an engine's profile reports on, in both orientations: a
# profile is a box per dimension, so a portrait phone clip needs H up to the landscape W.
VIDEO_SIZES: tuple[tuple[str, tuple[int, int]], ...] = (
    ("720p", (720, 1280)), ("1080p", (1080, 1920)), ("1440p", (1440, 2560)), ("4K", (2160, 3840)))


# the I/O tensors of an engine built with `--engine-io uint8` (export/uint8_io.py makes them; the backend binds
# them): uint8 NHWC frames in, uint8 NHWC frames out, and a float32 (N,) flag, 1 where a frame was not finite
FRAMES_IN, FRAMES_OUT, NONFINITE = "frames", "frames_out", "nonfinite"
UINT8_OUTPUTS = (FRAMES_OUT, NONFINITE)


@dataclass
class Profile:
    """One optimization profile for the single NCHW input; every H/W is a multiple of the model's multiple."""

    input_name: str
    min: Shape4
    opt: Shape4
    max: Shape4

    def as_dict(self) -> dict[str, Any]:
        return {"input_name": self.input_name, "min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        def four(key: str) -> Shape4:
            n, c, h, w = (int(v) for v in data[key])
            return n, c, h, w

        return cls(str(data["input_name"]), four("min"), four("opt"), four("max"))

    def trtexec(self) -> str:
        def fmt(s: Shape4) -> str:
            return f"{self.input_name}:{'x'.join(map(str, s))}"

        return f"--minShapes={fmt(self.min)} --optShapes={fmt(self.opt)} --maxShapes={fmt(self.max)}"

    def covers(self, shape: Sequence[int]) -> bool:
        """Whether an NCHW input of `shape` lies within min..max in every dimension (what TensorRT accepts)."""
        return len(shape) == 4 and all(a <= int(s) <= b for s, a, b in zip(shape, self.min, self.max, strict=True))

    def describe(self, multiple: int = 1) -> str:
        """What the profile takes, for people: 'batch 1-4, 64x64 to 1920x1920 (HxW), opt 4x1080x1920; video:
        720p, 1080p (both orientations); not 1440p, 4K'. Frame sizes are counted after padding to `multiple`."""
        m = max(1, int(multiple))

        def up(x: int) -> int:
            return -(-x // m) * m

        (n0, _, h0, w0), (n1, c, h1, w1) = self.min, self.max
        both: list[str] = []  # sizes taken in both orientations
        one: list[str] = []  # "1080p landscape only"
        missed: list[str] = []
        for name, (h, w) in VIDEO_SIZES:
            landscape, portrait = (self.covers((n1, c, up(a), up(b))) for a, b in ((h, w), (w, h)))
            if landscape and portrait:
                both.append(name)
            elif landscape or portrait:
                one.append(f"{name} {'landscape' if landscape else 'portrait'} only")
            else:
                missed.append(name)
        video = ", ".join(([f"{', '.join(both)} (both orientations)"] if both else []) + one)
        video = f"{video}; not {', '.join(missed)}" if video and missed else video or f"none of {', '.join(missed)}"
        opt = "x".join(map(str, (self.opt[0], *self.opt[2:])))
        return f"batch {n0}-{n1}, {h0}x{w0} to {h1}x{w1} (HxW), opt {opt}; video: {video}"


@dataclass
class EngineSidecar:
    """What the engine was built with and for; checked before an engine is loaded."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    profile: dict[str, Any]
    precision: str
    source_onnx: str
    source_onnx_sha256: str
    model_card: dict[str, Any]
    strongly_typed: bool = True
    tf32: bool = False
    workspace_bytes: int = 0
    builder_optimization_level: int = 3
    built_at: str = ""
    format: str = SIDECAR_FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def meta(self) -> ModelMeta:
        return ModelMeta.from_dict(self.model_card)


def write_sidecar(path: Path, sidecar: EngineSidecar) -> Path:
    return write_text(Path(path), json.dumps(asdict(sidecar), indent=2, sort_keys=True) + "\n")


def read_engine_sidecar(path: Path) -> EngineSidecar:
    """Read the sidecar of an engine; pass the engine (.plan/.engine) or the sidecar itself."""
    path = Path(path)
    if path.suffix.lower() != ".json" and kind_of(path).name == "tensorrt-engine":
        path = sidecar_path(path)
    try:
        data = json.loads(path.read_text())
        if data.get("format") != SIDECAR_FORMAT:
            raise ValueError(f"format {data.get('format')!r}")
        known = set(EngineSidecar.__dataclass_fields__)
        return EngineSidecar(**{k: v for k, v in data.items() if k in known})
    except (OSError, ValueError, TypeError, AttributeError) as e:
        raise EngineMismatchError(f"{path}: missing or unreadable engine sidecar ({type(e).__name__}: {e}); without "
                                  "it the engine's TensorRT version and GPU are unknown — rebuild it with "
                                  "`cgdeploy export CHECKPOINT -o DIR --engine`") from e


def _version_key(version: str) -> tuple[str, ...]:
    """Engines are tied to major.minor.patch; the 4th (build) component does not change the plan format."""
    return tuple(version.split(".")[:3])


def check_engine_compat(sidecar: EngineSidecar, trt_version: str, gpu_name: str, cc: str, *,
                        engine: str = "engine") -> None:
    """Refuse an engine built for another TensorRT version, compute capability or GPU model, saying how to
    rebuild. (TensorRT itself may deserialize a same-CC engine on another GPU model, with wrong tactics.)"""
    problems = []
    if _version_key(sidecar.tensorrt_version) != _version_key(trt_version):
        problems.append(f"TensorRT {sidecar.tensorrt_version} (this machine: {trt_version})")
    if sidecar.compute_capability != cc:
        problems.append(f"compute capability {sidecar.compute_capability} (this GPU: {cc})")
    elif sidecar.gpu_name != gpu_name:
        problems.append(f"GPU {sidecar.gpu_name!r} (this GPU: {gpu_name!r})")
    if problems:
        profile = Profile.from_dict(sidecar.profile)
        how = ("`cgdeploy export CHECKPOINT -o DIR --engine --engine-io uint8` (uint8 frames in and out)"
               if sidecar.extra.get("io") == "uint8" else
               f"`cgdeploy export CHECKPOINT -o DIR --engine` or `trtexec --onnx={sidecar.source_onnx} --stronglyTyped "
               f"--saveEngine={Path(engine).name} {profile.trtexec()}`")
        raise EngineMismatchError(
            f"{engine}: built for {', '.join(problems)}; TensorRT engines only run on the TensorRT version and GPU "
            f"they were built with. Rebuild here: {how}")


def gpu_info(device: int = 0) -> tuple[str, str]:
    """(GPU name, compute capability 'major.minor') through cuda-python's runtime API: cuda.bindings.runtime
    only, as backends/tensorrt.py (the old cuda.cudart module is gone since cuda-bindings 13)."""
    try:
        cudart: Any = importlib.import_module("cuda.bindings.runtime")
    except ImportError as e:
        raise BackendUnavailableError(f"cuda-python is not installed ({e}); pip install cuda-python (needed to read "
                                      "the GPU name and compute capability for the engine sidecar)") from e
    err, props = cudart.cudaGetDeviceProperties(device)
    if err != cudart.cudaError_t.cudaSuccess:
        raise BackendUnavailableError(f"no usable CUDA GPU {device} ({err}); TensorRT engines need an NVIDIA GPU "
                                      "with a working driver")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return name.rstrip("\x00").strip(), f"{props.major}.{props.minor}"

"""`cgdeploy export --triton-repo DIR`: a Triton Inference Server model repository for the exported artifact.

One model folder per direction: `DIR/<name>/config.pbtxt`, `DIR/<name>/1/model.onnx` (platform
onnxruntime_onnx) or `DIR/<name>/1/model.plan` (tensorrt_plan, when an engine was built), and
`DIR/<name>/cgdeploy_card.json` (the model card). Which file: the engine with --engine, else the graph an
engine would be built from (--int8: the INT8 QDQ graph, --fp16: the FP16 graph, else FP32) -- the most
optimised artifact the user asked for, each already parity-gated.

Triton serves raw tensors: the client converts uint8 images to the card's input_range, pads H/W to the card's
`multiple` (reflect) and maps the output from output_range back to uint8, cropping by the card's scale; the
config's header comments say so. Config syntax: Triton's model_configuration.md (max_batch_size, dims without
the batch dim, dynamic_batching, instance_group) and the onnxruntime_backend README ("ONNX Runtime with
TensorRT optimization": execution_accelerators / gpu_execution_accelerator "tensorrt" + parameters).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cyclegan_deploy import artifacts
from cyclegan_deploy.errors import ConfigError
from cyclegan_deploy.metadata import ModelMeta
from cyclegan_deploy.outputs import refuse_existing

if TYPE_CHECKING:
    from cyclegan_deploy.export.pipeline import ExportOptions

# Triton model names are folder names in the repository and appear in request URLs: keep them plain.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
# Short next to one image's inference (milliseconds): enough to merge concurrent requests, invisible alone.
MAX_QUEUE_DELAY_US = 500
CARD_FILE = "cgdeploy_card.json"
# ONNX TensorProto element types -> Triton data types (the graphs we write keep float I/O; FP16 via keep_io_types)
ONNX_TO_TRITON = {1: "TYPE_FP32", 10: "TYPE_FP16", 16: "TYPE_BF16"}
TRT_PRECISION = {"fp32": "FP32", "fp16": "FP16", "int8": "INT8"}


@dataclass
class TritonOptions:
    repo: Path
    name: str | None = None  # default g_<direction>, like the artifact files; two directions: NAME_AtoB/_BtoA
    max_batch: int = 4  # the batch `cgdeploy video` sends by default
    instances: int = 1
    device: str = "gpu"  # gpu | cpu: the instance_group kind
    tensorrt: bool = False  # the ONNX Runtime backend's TensorRT accelerator (ONNX models only)


def check_options(opts: TritonOptions, engine: bool) -> None:
    """Refuse bad --triton-* options before any export work."""
    if opts.name is not None:
        check_name(opts.name)
    if opts.max_batch < 1:
        raise ConfigError(f"--triton-max-batch {opts.max_batch}: use at least 1 (Triton batches requests up to it)")
    if opts.instances < 1:
        raise ConfigError(f"--triton-instances {opts.instances}: use at least 1 model instance")
    if opts.device not in ("gpu", "cpu"):
        raise ConfigError(f"--triton-device {opts.device!r}: use gpu or cpu")
    if opts.device == "cpu" and (engine or opts.tensorrt):
        raise ConfigError("--triton-device cpu: a TensorRT engine (--engine) and --triton-trt run on a GPU; "
                          "drop them or use --triton-device gpu")
    if engine and opts.tensorrt:
        raise ConfigError("--triton-trt adds TensorRT to the ONNX Runtime backend; with --engine the repository "
                          "already serves the TensorRT engine: drop one of them")
    if opts.repo.exists() and not opts.repo.is_dir():
        raise ConfigError(f"--triton-repo {opts.repo}: exists and is not a folder; pass a folder (made if missing)")


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise ConfigError(f"--triton-name {name!r}: a Triton model name is a folder name: letters, digits, '_', "
                          "'-', '.', at most 128, not starting with '.' or '-'; e.g. cyclegan_AtoB")
    return name


def model_names(opts: TritonOptions, directions: Sequence[str]) -> dict[str, str]:
    """direction -> Triton model name."""
    if opts.name is None:
        return {d: check_name(f"g_{d}") for d in directions}
    if len(directions) == 1:
        return {directions[0]: opts.name}
    return {d: check_name(f"{opts.name}_{d}") for d in directions}


def check_export(opts: ExportOptions, metas: Sequence[ModelMeta]) -> None:
    """check_before_export for `cgdeploy export`'s options: with --engine, the batch its profile will take."""
    from cyclegan_deploy.export.tensorrt import derive_profile

    assert opts.triton is not None
    engine_batch = min(derive_profile(m, opts.min_shape, opts.opt_shape, opts.max_shape).max[0]
                       for m in metas) if opts.engine else None
    check_before_export(opts.triton, metas, opts.force, engine_batch)


def check_before_export(opts: TritonOptions, metas: Sequence[ModelMeta], force: bool, engine_max_batch: int | None
                        ) -> None:
    """Before export work: the overwrite rule for every model folder, and (with --engine) a max_batch_size the
    engine's profile can take (Triton sends batches up to it)."""
    for name in model_names(opts, [m.direction for m in metas]).values():
        refuse_existing(opts.repo / name, force, "--triton-repo or --triton-name")
    if engine_max_batch is not None and opts.max_batch > engine_max_batch:
        raise ConfigError(f"--triton-max-batch {opts.max_batch}: the engine's profile takes batches up to "
                          f"{engine_max_batch}; lower it or raise the batch of --max-shape (NxHxW)")


def graph_io_dtype(onnx_path: Path) -> str:
    """The Triton data type of the graph's first input (our graphs use one type for input and output)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    elem = graph.input[0].type.tensor_type.elem_type
    if elem not in ONNX_TO_TRITON or graph.output[0].type.tensor_type.elem_type != elem:
        raise ConfigError(f"{onnx_path}: input/output element types {elem}/"
                          f"{graph.output[0].type.tensor_type.elem_type} are not one float type; re-export it")
    return ONNX_TO_TRITON[elem]


def _profile_shapes(meta: ModelMeta, max_batch: int) -> dict[str, str]:
    """TensorRT EP optimisation profile: cgdeploy's default engine profile (H/W) with Triton's batch range,
    so the EP builds one engine for every size instead of rebuilding when a new shape arrives."""
    from cyclegan_deploy.export.tensorrt import derive_profile

    profile = derive_profile(meta)
    c, name = meta.input_nc, meta.input_name

    def shape(batch: int, dims: tuple[int, int, int, int]) -> str:
        return f"{name}:{batch}x{c}x{dims[2]}x{dims[3]}"

    return {"trt_profile_min_shapes": shape(1, profile.min),
            "trt_profile_opt_shapes": shape(max_batch, profile.opt),
            "trt_profile_max_shapes": shape(max_batch, profile.max)}


def config_text(name: str, meta: ModelMeta, platform: str, io_dtype: str, opts: TritonOptions,
                workspace_gb: float = 4.0) -> str:
    """config.pbtxt (protobuf text format of Triton's ModelConfig)."""
    (ilo, ihi), (olo, ohi) = meta.input_range, meta.output_range
    lines = [
        f"# written by cgdeploy export from {meta.source or 'a checkpoint'} ({meta.arch}, {meta.direction}, "
        f"{meta.precision}); model card: {CARD_FILE}",
        f"# Triton serves raw tensors: send float NCHW in [{ilo:g}, {ihi:g}] (uint8/255 mapped linearly), H and W",
        f"# padded to multiples of {meta.multiple} (reflect); the output is in [{olo:g}, {ohi:g}] at {meta.scale}x "
        "H and W: map back to uint8 and crop.",
        f'name: "{name}"',
        f'platform: "{platform}"',
        f"max_batch_size: {opts.max_batch}",
        f'input [ {{ name: "{meta.input_name}" data_type: {io_dtype} dims: [ {meta.input_nc}, -1, -1 ] }} ]',
        f'output [ {{ name: "{meta.output_name}" data_type: {io_dtype} dims: [ {meta.output_nc}, -1, -1 ] }} ]',
        f"dynamic_batching {{ max_queue_delay_microseconds: {MAX_QUEUE_DELAY_US} }}",
        f"instance_group [ {{ kind: KIND_{opts.device.upper()} count: {opts.instances} }} ]",
    ]
    if opts.tensorrt:
        params = {"precision_mode": TRT_PRECISION.get(meta.precision, "FP32"),
                  "max_workspace_size_bytes": str(int(workspace_gb * 2**30)),
                  "trt_engine_cache_enable": "1", **_profile_shapes(meta, opts.max_batch)}
        lines += ["optimization { execution_accelerators {", "  gpu_execution_accelerator : [ {",
                  '    name : "tensorrt"']
        lines += [f'    parameters {{ key: "{k}" value: "{v}" }}' for k, v in params.items()]
        lines += ["  } ]", "} }"]
    return "\n".join(lines) + "\n"


def write_model(repo: Path, name: str, model_file: Path, meta: ModelMeta, opts: TritonOptions, io_dtype: str,
                force: bool = False, workspace_gb: float = 4.0) -> Path:
    """Write DIR/<name>/ (config.pbtxt, 1/model.onnx|model.plan copied, the card) in one rename; returns it.
    An existing DIR/<name> is refused unless force. io_dtype: the graph's (for an engine: its source graph's)."""
    check_name(name)
    suffix = model_file.suffix.lower()
    if suffix == ".onnx":
        platform, target = "onnxruntime_onnx", "model.onnx"
    elif suffix in (".plan", ".engine"):
        if opts.tensorrt:
            raise ConfigError("--triton-trt applies to ONNX models; a TensorRT engine is served as tensorrt_plan")
        platform, target = "tensorrt_plan", "model.plan"
    else:
        raise ConfigError(f"{model_file}: Triton export takes an .onnx graph or a TensorRT .plan/.engine")
    final = Path(repo) / name
    refuse_existing(final, force, "--triton-repo or --triton-name")
    with artifacts.atomic_dir(final, replace=force) as tmp:
        (tmp / "1").mkdir()
        shutil.copyfile(model_file, tmp / "1" / target)  # a copy: the repository outlives OUT and moves
        (tmp / "config.pbtxt").write_text(config_text(name, meta, platform, io_dtype, opts, workspace_gb))
        (tmp / CARD_FILE).write_text(json.dumps(asdict(meta), indent=2, sort_keys=True) + "\n")
    return final


def write_repository(opts: TritonOptions, models: Sequence[tuple[ModelMeta, Path, Path]], force: bool,
                     workspace_gb: float, echo: Callable[[str], None]) -> list[Path]:
    """One model folder per (card, served file, graph giving the I/O type) -- export's final step."""
    names = model_names(opts, [meta.direction for meta, _, _ in models])
    written = []
    for meta, served, graph in models:
        card = artifacts.read_card(served)  # the served file's own card (its precision, not the FP32 graph's)
        folder = write_model(opts.repo, names[meta.direction], served, card, opts, graph_io_dtype(graph), force,
                             workspace_gb)
        written.append(folder)
        accel = " + TensorRT accelerator" if opts.tensorrt else ""
        echo(f"wrote Triton model {folder} (from {served.name}{accel}, max batch {opts.max_batch}, "
             f"{opts.instances}x KIND_{opts.device.upper()})")
    return written

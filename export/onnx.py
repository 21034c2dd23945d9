"""FP32 ONNX export (torch dynamo exporter) and structural checks of the exported graph.

What the checks guard against (each seen with some exporter/version combination):
- InstanceNorm2d decomposed into a training-mode BatchNormalization or a ReduceMean/Sub/Pow chain, which
  TensorRT and the FP16 pass treat differently from a native InstanceNormalization;
- running-stat tensors left in the graph (legacy checkpoints) or as extra graph inputs;
- ReflectionPad2d exported as constant padding (visible edges);
- a super-resolution upsampler decomposed (PixelShuffle must stay one DepthToSpace; the family names its ops);
- batch/height/width frozen to the example input's shape.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cyclegan_deploy.artifacts import atomic_output
from cyclegan_deploy.errors import ExportError, interrupt_behind
from cyclegan_deploy.metadata import ModelMeta
from cyclegan_deploy.train.registry import family_of_card

if TYPE_CHECKING:
    import onnx as onnx_lib
    from torch import nn

DEFAULT_OPSET = 20  # native InstanceNormalization + Pad(reflect) since long before; 20 is what dynamo emits
AXIS_NAMES = {0: "batch", 2: "height", 3: "width"}
RUNNING_STAT_RE = re.compile(r"running_(mean|var)|num_batches_tracked")


@dataclass
class GraphReport:
    """What check_graph saw; `problems` is empty when the graph passed."""

    path: str
    opset: int
    op_counts: dict[str, int]
    inputs: dict[str, list[str | int]]
    outputs: dict[str, list[str | int]]
    instance_norms: int
    expected_instance_norms: int | None
    pad_modes: list[str]
    card: dict[str, Any] | None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def expected_instance_norm_count(model: nn.Module) -> int:
    from torch import nn

    return sum(isinstance(m, nn.InstanceNorm2d) for m in model.modules())


def _example_input(meta: ModelMeta) -> Any:
    import torch

    # batch 2 and a non-square size: torch.export specialises dims whose example value is 0/1, and a
    # square example could let it unify height and width into one symbol.
    side = max(meta.multiple, 32)
    gen = torch.Generator().manual_seed(0)
    lo, hi = meta.input_range  # values the model sees in use (SR models take [0, 1], CycleGAN [-1, 1])
    x = torch.rand(2, meta.input_nc, side * 2, side * 3 if meta.multiple < 128 else side, generator=gen)
    return x * (hi - lo) + lo


# Loggers of the exporter stack: a warning per torchvision op it could not register, the optimizer's INFO
# lines ("Removed 27 unused nodes")... irrelevant to a generator, and printed to the user's terminal by
# Python's last-resort handler or by any logging setup of the host application. Failures arrive as exceptions.
EXPORTER_LOGGERS = ("torch.onnx", "torch.export", "onnxscript", "onnx_ir")


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """Silence the exporter stack's log records below ERROR and its Python warnings for the block."""
    loggers = [logging.getLogger(name) for name in EXPORTER_LOGGERS]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)


def _exporter_name() -> str:
    import onnxscript
    import torch

    return f"torch {torch.__version__} dynamo (onnxscript {onnxscript.__version__})"


def _rename_dynamic_axes(proto: onnx_lib.ModelProto) -> None:
    """Replace the exporter's symbol names (s0, s53...) by batch/height/width everywhere, expressions too."""
    graph = proto.graph
    mapping: dict[str, str] = {}
    for axis, dim in enumerate(graph.input[0].type.tensor_type.shape.dim):
        if dim.dim_param and axis in AXIS_NAMES:
            mapping[dim.dim_param] = AXIS_NAMES[axis]
    if not mapping:
        return
    pattern = re.compile(r"\b(" + "|".join(re.escape(k) for k in mapping) + r")\b")
    for value in (*graph.input, *graph.output, *graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = pattern.sub(lambda m: mapping[m.group(1)], dim.dim_param)


def export_onnx(model: nn.Module, meta: ModelMeta, path: Path, *, opset: int = DEFAULT_OPSET,
                check: bool = True) -> Path:
    """Export `model` (put in eval mode) to one self-contained ONNX file with dynamic N/H/W and the card.

    The file is written to a temp name beside `path` and renamed, so `path` is never half-written.
    Raises ExportError when the exporter fails or (with check=True) the graph fails check_graph.
    """
    import onnx
    import torch
    from torch.export import Dim

    path = Path(path)
    # eval mode is the documented export mode, also for pix2pix: batch norm uses its running stats and
    # dropout is off (the reference's test script runs train mode unless --eval).
    model.eval()
    meta.mode = "eval"
    meta.exporter = _exporter_name()
    meta.opset = opset
    meta.input_name, meta.output_name = "input", "output"
    example = _example_input(meta)
    dims = {0: Dim.DYNAMIC, 2: Dim.DYNAMIC, 3: Dim.DYNAMIC}
    try:
        with quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(model, (example,), None, dynamo=True, opset_version=opset,
                                        input_names=["input"], output_names=["output"],
                                        dynamic_shapes=(dims,), external_data=False, verbose=False)
    except Exception as e:  # the exporter raises many types; the message is what the user needs
        if (interrupt := interrupt_behind(e)) is not None:  # Ctrl-C/SIGTERM inside torch.export: not its failure
            raise interrupt from None
        raise ExportError(f"{path}: torch.onnx.export (dynamo) failed for {meta.arch}: "
                          f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}") from e
    assert program is not None
    proto = program.model_proto
    _rename_dynamic_axes(proto)
    del proto.metadata_props[:]
    for key, value in meta.to_props().items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = f"cgdeploy {meta.model} generator {meta.arch} ngf {meta.ngf} {meta.direction}"
    with atomic_output(path) as tmp:
        onnx.save_model(proto, str(tmp))
        if check:
            check_graph(tmp, expected_instance_norms=expected_instance_norm_count(model), norm=meta.norm,
                        display_path=path)
    return path


def _shape(value: Any) -> list[str | int]:
    return [d.dim_param if d.dim_param else int(d.dim_value) for d in value.type.tensor_type.shape.dim]


def proto_card(proto: onnx_lib.ModelProto) -> ModelMeta | None:
    """The card of an ONNX model already loaded with the onnx package (artifacts.read_card reads a file)."""
    return ModelMeta.from_props({p.key: p.value for p in proto.metadata_props})


def check_graph(path: Path, *, expected_instance_norms: int | None = None, norm: str | None = None,
                raise_on_error: bool = True, display_path: Path | None = None) -> GraphReport:
    """Structural checks of an exported generator graph (FP32 or FP16); raises ExportError on failure.

    `norm` and the expected InstanceNormalization count come from the card when not given.
    """
    import onnx

    path = Path(path)
    shown = display_path or path
    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except Exception as e:
        raise ExportError(f"{shown}: not a valid ONNX model ({type(e).__name__}: {str(e)[:200]}); "
                          "re-export it with `cgdeploy export`") from e
    graph = proto.graph
    card = proto_card(proto)
    norm = norm or (card.norm if card else None)
    family = family_of_card(card) if card is not None else None
    if expected_instance_norms is None and family is not None and card is not None and norm == "instance":
        expected_instance_norms = family.instance_norms(card)
    ops = Counter(n.op_type for n in graph.node)
    problems: list[str] = []
    n_in = ops.get("InstanceNormalization", 0)
    if norm == "instance":
        if ops.get("BatchNormalization"):
            problems.append(f"{ops['BatchNormalization']} BatchNormalization node(s) in an instance-norm model "
                            "(instance norm was decomposed into training-mode batch norm)")
        if expected_instance_norms is not None and n_in != expected_instance_norms:
            problems.append(f"{n_in} InstanceNormalization nodes, expected one per InstanceNorm2d "
                            f"({expected_instance_norms}); the exporter decomposed some of them")
        stats = [i.name for i in graph.initializer if RUNNING_STAT_RE.search(i.name)]
        if stats:
            problems.append(f"running-stat tensors left in an instance-norm graph: {', '.join(stats[:4])}")
    for node in graph.node:
        if node.op_type == "BatchNormalization":
            training = next((a.i for a in node.attribute if a.name == "training_mode"), 0)
            if training or len(node.output) > 1:
                problems.append(f"node {node.name}: BatchNormalization in training mode (export in eval mode)")
    pad_modes = [next((a.s.decode() for a in n.attribute if a.name == "mode"), "constant")
                 for n in graph.node if n.op_type == "Pad"]
    if family is not None and family.reflect_pad and not pad_modes:
        problems.append(f"no Pad nodes in {family.title} generator (ReflectionPad2d was lost)")
    if family is not None:
        problems += [f"no {op} node in {family.title} generator (its upsampling was decomposed)"
                     for op in family.graph_ops if not ops.get(op)]
    bad_pads = [m for m in pad_modes if m != "reflect"]
    if bad_pads:
        problems.append(f"{len(bad_pads)} Pad node(s) with mode {bad_pads[0]!r}; ReflectionPad2d must be "
                        "Pad(mode=reflect)")
    inputs = {i.name: _shape(i) for i in graph.input}
    outputs = {o.name: _shape(o) for o in graph.output}
    if list(inputs) != ["input"]:
        problems.append(f"graph inputs {list(inputs)}: expected only 'input' (no running-stat or weight inputs)")
    if list(outputs) != ["output"]:
        problems.append(f"graph outputs {list(outputs)}: expected only 'output'")
    for kind, shapes in (("input", inputs), ("output", outputs)):
        for name, shape in shapes.items():
            fixed = [axis for axis in (0, 2, 3) if len(shape) == 4 and isinstance(shape[axis], int)]
            if len(shape) != 4 or fixed:
                problems.append(f"{kind} {name!r} shape {shape}: batch/height/width must be dynamic")
    if card is None:
        problems.append("no cgdeploy model card in metadata_props")
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    report = GraphReport(path=str(shown), opset=opset, op_counts=dict(sorted(ops.items())), inputs=inputs,
                         outputs=outputs, instance_norms=n_in, expected_instance_norms=expected_instance_norms,
                         pad_modes=pad_modes, card=asdict(card) if card else None, problems=problems)
    if problems and raise_on_error:
        raise ExportError(f"{shown}: exported graph failed its checks: {'; '.join(problems)}. "
                          "Re-export with opset >= 17 and torch.onnx.export(dynamo=True) in eval mode")
    return report


"""OpenVINO IR (.xml/.bin) from the FP32 ONNX graph, with the inference precision chosen at export recorded.

OpenVINO decides the arithmetic precision when the model is compiled (INFERENCE_PRECISION_HINT), not in the
IR: its CPU plugin defaults to bf16 on AMX/AVX512-BF16 CPUs and f32 elsewhere. So the IR keeps FP32 weights
(f16-compressed only for the f16 target) and the chosen precision is recorded three ways: the card's
`precision`, rt_info `runtime_options/INFERENCE_PRECISION_HINT` (which compile_model applies when the caller
sets no hint), and the sidecar `<name>.xml.json` (the model card, which the runtime's OpenVINO backend reads).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cyclegan_deploy.artifacts import commit, ir_weights_path, read_card, sidecar_path
from cyclegan_deploy.errors import BackendUnavailableError, ExportError, OutputError
from cyclegan_deploy.metadata import CARD_KEY, OPENVINO_NAMES, canonical_precision
from cyclegan_deploy.outputs import temp_name


def export_openvino(onnx_path: Path, xml_path: Path, precision: str = "f32") -> Path:
    """Convert the FP32 ONNX graph at `onnx_path` to `xml_path` (+ .bin + .xml.json), all renamed into place
    only once every file is complete."""
    card_precision = canonical_precision(precision, tuple(OPENVINO_NAMES), "--ov-precision")
    precision = OPENVINO_NAMES[card_precision]
    try:
        import openvino as ov
    except ImportError as e:
        raise BackendUnavailableError(f"OpenVINO is not installed ({e}); pip install openvino, or export with "
                                      "--target onnx") from e
    onnx_path, xml_path = Path(onnx_path), Path(xml_path)
    card = read_card(onnx_path)
    if card.model == "unknown" or card.precision != "fp32":
        raise ExportError(f"{onnx_path}: OpenVINO IR is converted from the FP32 graph with a cgdeploy model card; "
                          "pass g_*.onnx written by `cgdeploy export`")
    try:
        model = ov.convert_model(str(onnx_path))
    except Exception as e:  # OpenVINO raises RuntimeError subclasses with long C++ traces
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ExportError(f"{onnx_path}: OpenVINO convert_model failed ({first})") from e
    card.precision = card_precision
    card.extra = {**card.extra, "openvino_inference_precision": precision, "openvino_version": ov.__version__,
                  "source_onnx": onnx_path.name}
    model.set_rt_info(precision, ["runtime_options", "INFERENCE_PRECISION_HINT"])
    model.set_rt_info(card.to_json(), [CARD_KEY])
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=temp_name(xml_path), dir=xml_path.parent))
    try:
        staged_xml = staging / xml_path.name
        try:
            ov.save_model(model, str(staged_xml), compress_to_fp16=precision == "f16")
        except RuntimeError as e:  # its C++ writer reports a full disk or a refused file as a RuntimeError
            first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise OutputError(f"{xml_path}: OpenVINO could not write the IR ({first}); check the free space and "
                              f"permissions of {xml_path.parent}") from e
        sidecar_path(staged_xml).write_text(card.to_json() + "\n")
        # .bin first, the card last: a reader that finds the .xml also finds its weights
        for src in (ir_weights_path(staged_xml), staged_xml, sidecar_path(staged_xml)):
            commit(src, xml_path.parent / src.name)
    except OSError as e:  # name the file as published beside the staging folder, not inside it
        name = Path(e.filename).name if isinstance(e.filename, str) else xml_path.name
        raise OSError(e.errno, e.strerror, str(xml_path.parent / name)) from e
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return xml_path


def openvino_runner(source: Path | bytes, precision: str = "f32") -> Callable[[np.ndarray], np.ndarray]:
    """A float32 NCHW -> NCHW callable for the parity gate and the int8 guard (one compiled model per input
    shape). `source`: an IR/ONNX path, or a serialized ONNX graph (the guard's in-memory candidates)."""
    import openvino as ov

    from cyclegan_deploy.backends.openvino import shared_core

    core = shared_core()
    model = (core.read_model(source, ov.Tensor(np.empty(0, np.uint8))) if isinstance(source, bytes)
             else core.read_model(str(source)))
    compiled: dict[tuple[int, ...], Any] = {}

    def run(x: np.ndarray) -> np.ndarray:
        shape = tuple(x.shape)
        if shape not in compiled:
            model.reshape({model.inputs[0].get_any_name(): list(shape)})
            compiled[shape] = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision})
        request = compiled[shape].create_infer_request()
        request.infer({0: x})
        return np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)

    return run


def cpu_supports(precision: str) -> bool:
    """Whether this CPU's OpenVINO plugin can run `precision` (bf16 needs AVX512-BF16/AMX; f16 AMX-FP16)."""

    from cyclegan_deploy.backends.openvino import shared_core

    caps = shared_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return precision == "f32" or {"bf16": "BF16", "f16": "FP16"}[precision] in caps

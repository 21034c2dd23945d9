"""`cgdeploy doctor`: runs, reports onnxruntime CPU as really loading, JSON output parses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cyclegan_deploy import doctor


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return doctor.collect(probe=True)


def test_probe_model_is_valid_onnx() -> None:
    """The hand-written protobuf must be a model the onnx checker accepts (it is what every probe runs)."""
    onnx = pytest.importorskip("onnx")
    model = onnx.load_from_string(doctor.probe_onnx_model())
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node] == ["Conv"]
    weights = onnx.numpy_helper.to_array(model.graph.initializer[0])
    np.testing.assert_array_equal(weights.reshape(2, 3), doctor.PROBE_W)


def test_doctor_reports_onnxruntime_cpu_loading(report: dict[str, Any]) -> None:
    pytest.importorskip("onnxruntime")
    rows = {r["backend"]: r for r in report["probes"]}
    assert rows["onnxruntime CPUExecutionProvider"]["ok"] is True
    assert rows["onnxruntime CPUExecutionProvider"]["detail"] == "session runs"


def test_doctor_machine_and_packages(report: dict[str, Any]) -> None:
    import onnxruntime

    assert report["packages"]["onnxruntime"] == onnxruntime.__version__
    assert report["packages"]["numpy"] == np.__version__
    cpu = report["cpu"]
    assert cpu["physical_cores"] >= 1 and set(cpu["flags"]) >= {"AVX2", "AVX-512F", "AMX-BF16"}
    assert isinstance(report["gpus"], list)
    assert all(set(r) == {"backend", "ok", "detail"} for r in report["probes"])


def test_doctor_openvino_bf16_verdict_matches_cpu_flags(report: dict[str, Any]) -> None:
    pytest.importorskip("openvino")
    rows = {r["backend"]: r for r in report["probes"]}
    flags = report["cpu"]["flags"]
    assert rows["openvino CPU f32"]["ok"] is True
    assert rows["openvino CPU bf16"]["ok"] is (flags["AMX-BF16"] or flags["AVX512-BF16"])


def test_doctor_probe_catches_provider_that_does_not_start(monkeypatch) -> None:
    ort = pytest.importorskip("onnxruntime")
    real = ort.InferenceSession

    class CpuOnly(real):
        def __init__(self, model: Any, sess_options: Any = None, providers: Any = None) -> None:
            super().__init__(model, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", CpuOnly)
    rows = {r["backend"]: r for r in doctor.probe_onnxruntime()}
    assert rows["onnxruntime CUDAExecutionProvider"]["ok"] is False
    assert "started only CPUExecutionProvider" in rows["onnxruntime CUDAExecutionProvider"]["detail"]


def test_doctor_cli_json_and_table(capsys) -> None:
    from cyclegan_deploy.cli import main

    assert main(["doctor", "--json", "--no-probe"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert "probes" not in data and "onnxruntime" in data["backends"]
    assert main(["doctor", "--no-probe"]) == 0
    out = capsys.readouterr().out
    assert "Backends" in out and "onnxruntime" in out


BOX = set("┏━┃│┡╇└┛┓┗┳┻╋")


def test_doctor_piped_output_is_plain_and_uncut(report: dict[str, Any], capsys) -> None:
    """Not a terminal (capsys): aligned plain text, one line per probe with its whole detail."""
    doctor.render(report)
    out = capsys.readouterr().out
    assert not BOX & set(out) and "…" not in out
    lines = out.splitlines()
    for row in report["probes"]:
        assert any(line.startswith(row["backend"] + " ") and line.rstrip().endswith(row["detail"]) for line in lines)
    for name, version in report["packages"].items():
        assert any(line.split() == [name, *(version or "not installed").split()] for line in lines)


def test_doctor_terminal_tables_cut_nothing(report: dict[str, Any]) -> None:
    import io

    from rich.console import Console

    buf = io.StringIO()
    doctor.render(report, Console(file=buf, width=80, force_terminal=True, color_system=None))
    text = buf.getvalue()
    assert "…" not in text and all(len(line) <= 80 for line in text.splitlines())
    assert all(row["backend"] in text for row in report["probes"])


def test_doctor_with_an_unwritable_temp_folder(monkeypatch, tmp_path, capsys) -> None:
    """The OpenVINO probe writes its model to a temp file: a temp folder refusing writes fails that probe
    with the folder named, never doctor itself."""
    pytest.importorskip("openvino")
    import errno
    import tempfile

    from faults import refuse_writes

    from cyclegan_deploy.cli import main

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    refuse_writes(monkeypatch, tmp_path, errno.EACCES)
    (row,) = doctor.probe_openvino()
    assert row["ok"] is False and str(tmp_path) in row["detail"] and "TMPDIR" in row["detail"]
    assert main(["doctor", "--json"]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert "Traceback" not in captured.err and list(tmp_path.iterdir()) == []
    assert any(r["backend"] == "openvino" and r["ok"] is False for r in data["probes"])


def test_int8_probe_model_is_valid_qdq_onnx_with_an_exact_reference() -> None:
    """The hand-written QDQ probe is valid ONNX, and its expected output is what ONNX Runtime computes."""
    onnx = pytest.importorskip("onnx")
    model = onnx.load_from_string(doctor.probe_qdq_model())
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node] == ["QuantizeLinear", "DequantizeLinear", "DequantizeLinear", "Conv"]
    ort = pytest.importorskip("onnxruntime")
    x, want = doctor._qdq_input()
    got = ort.InferenceSession(doctor.probe_qdq_model(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert got.shape == want.shape == (1, 8, 6, 6) and np.allclose(got, want, rtol=1e-5, atol=1e-4)
    assert np.abs(want).max() > 1  # not a trivial all-zero answer


def test_doctor_openvino_int8_row_says_what_ran(report: dict[str, Any]) -> None:
    pytest.importorskip("openvino")
    rows = {r["backend"]: r for r in report["probes"]}
    row = rows["openvino CPU int8"]
    if report["cpu"]["flags"]["AVX2"]:  # OpenVINO's int8 kernels start at AVX2
        assert row["ok"] is True and row["detail"].startswith("runs int8 (") and "8" in row["detail"]


def test_doctor_int8_probe_reports_float_execution(monkeypatch) -> None:
    """Where the QDQ convolution runs in f32, the row says so instead of claiming int8."""
    pytest.importorskip("openvino")
    from cyclegan_deploy.backends import openvino as ovb

    monkeypatch.setattr(ovb, "executed_precisions", lambda compiled: {"f32": 1})
    monkeypatch.setattr(ovb, "executed_kernels", lambda compiled: {"jit_avx2_FP32": 1})
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        row = doctor.probe_openvino_int8(ovb.shared_core(), Path(tmp) / "probe.onnx")
    assert row == {"backend": "openvino CPU int8", "ok": False,
                   "detail": "asked int8, OpenVINO ran f32 (jit_avx2_FP32)"}


@pytest.mark.parametrize(("cpu", "flags", "says"), [
    ("AVX2-only EPYC", {"AVX2"}, {"fp32": "AVX2 FMA", "bf16": "unavailable: no AVX512-BF16/AMX-BF16",
                                  "int8": "VNNI missing: int8 convolutions run through AVX2 u8 kernels without "
                                          "dot-product instructions"}),
    ("Zen 5 EPYC", {"AVX2", "AVX-512F", "AVX512-VNNI", "AVX512-BF16"},
     {"fp32": "AVX-512 FMA", "bf16": "AVX512-BF16 dot products (no AMX)", "int8": "AVX512-VNNI dot products (no AMX)",
      "f16": "unavailable: no AMX-FP16"}),
    ("Sapphire Rapids", {"AVX2", "AVX-512F", "AVX512-VNNI", "AVX512-BF16", "AMX", "AMX-BF16", "AMX-INT8"},
     {"bf16": "AMX-BF16 tiles", "int8": "AMX-INT8 tiles"}),
    ("Alder Lake", {"AVX2", "AVX-VNNI"}, {"int8": "AVX-VNNI dot products (no AMX)"}),
])
def test_precision_support_wording(cpu: str, flags: set[str], says: dict[str, str]) -> None:
    support = doctor.precision_support({label: label in flags for label in doctor.CPU_FLAGS.values()})
    for precision, text in says.items():
        assert support[precision].startswith(text), (cpu, precision, support[precision])


def test_doctor_prints_what_each_precision_runs_on(report: dict[str, Any]) -> None:
    line = next(x for x in doctor.plain_lines(report) if x.startswith("Precisions "))
    assert all(f"{k} {v}" in line for k, v in report["cpu"]["precisions"].items())
    assert set(report["cpu"]["precisions"]) == {"fp32", "bf16", "int8", "f16"}

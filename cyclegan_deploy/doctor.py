"""`cgdeploy doctor`: what is installed, which backends/providers really load, the CPU and the GPU.

"Listed" is not "works": onnxruntime-gpu lists CUDA/TensorRT providers on machines where they cannot
start, OpenVINO accepts a bf16 hint and runs f32, `import tensorrt` succeeds with only the type stubs.
So every backend is probed by really running a one-node graph (a 1x1 convolution, so the CUDA EP has to
bring up cuDNN) and checking what actually ran.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cyclegan_deploy.backends import UNAVAILABLE, available_backends
from cyclegan_deploy.machine import cpu_flags, cpu_model, package_version, physical_cores

PACKAGES = ("numpy", "torch", "onnx", "onnxscript", "onnxruntime", "onnxruntime-gpu", "openvino", "av",
            "tensorrt", "cuda-python", "cuda-bindings", "typer", "rich")
CPU_FLAGS = {"avx2": "AVX2", "avx512f": "AVX-512F", "avx512_vnni": "AVX512-VNNI", "avx512_bf16": "AVX512-BF16",
             "avx512_fp16": "AVX512-FP16", "amx_tile": "AMX", "amx_bf16": "AMX-BF16", "amx_fp16": "AMX-FP16"}
PROBE_W = np.array([[0.5, -1.0, 2.0], [1.0, 0.25, -0.5]], dtype=np.float32)  # Conv 3->2 channels, 1x1


# ---- a one-node ONNX model written directly as protobuf (no `onnx` package needed at runtime) --------------

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num: int, value: bytes | str | int) -> bytes:
    if isinstance(value, int):
        return _varint(num << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(num << 3 | 2) + _varint(len(data)) + data


def _value_info(name: str, dims: tuple[int, ...]) -> bytes:
    shape = b"".join(_field(1, _field(1, d)) for d in dims)  # TensorShapeProto.dim.dim_value
    tensor_type = _field(1, 1) + _field(2, shape)  # elem_type FLOAT, shape
    return _field(1, name) + _field(2, _field(1, tensor_type))


def probe_onnx_model() -> bytes:
    """ModelProto: y = Conv(x[1,3,4,4], W[2,3,1,1]), opset 17, IR version 8."""
    w = PROBE_W.reshape(2, 3, 1, 1)
    init = (b"".join(_field(1, d) for d in w.shape) + _field(2, 1) + _field(8, "W")
            + _field(9, w.astype("<f4").tobytes()))
    node = _field(1, "x") + _field(1, "W") + _field(2, "y") + _field(4, "Conv")
    graph = (_field(1, node) + _field(2, "probe") + _field(5, init) + _field(11, _value_info("x", (1, 3, 4, 4)))
             + _field(12, _value_info("y", (1, 2, 4, 4))))
    return _field(1, 8) + _field(7, graph) + _field(8, _field(1, "") + _field(2, 17))


def _probe_input() -> tuple[np.ndarray, np.ndarray]:
    x = np.arange(48, dtype=np.float32).reshape(1, 3, 4, 4) / 10.0
    return x, np.einsum("oc,nchw->nohw", PROBE_W, x)


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text[:160]}"


# ---- probes ------------------------------------------------------------------------------------------------

def probe_onnxruntime() -> list[dict[str, Any]]:
    try:
        import onnxruntime as ort
    except ImportError as e:
        return [{"backend": "onnxruntime", "ok": False, "detail": f"not installed ({_short(e)})"}]
    model, (x, want) = probe_onnx_model(), _probe_input()
    rows = []
    used = ("CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider")
    others = [p for p in ort.get_available_providers() if p not in used]
    for provider in [p for p in ort.get_available_providers() if p in used]:
        so = ort.SessionOptions()
        so.log_severity_level = 4
        try:
            session = ort.InferenceSession(model, sess_options=so,
                                           providers=list(dict.fromkeys([provider, "CPUExecutionProvider"])))
            got = session.get_providers()
            y = session.run(None, {"x": x})[0]
            ok = provider in got and np.allclose(y, want, atol=1e-3)
            detail = "session runs" if ok else f"listed, but the session started only {', '.join(got)}"
        except Exception as e:  # a provider that fails to start raises from InferenceSession
            ok, detail = False, f"listed, but fails to start ({_short(e)})"
        rows.append({"backend": f"onnxruntime {provider}", "ok": ok, "detail": detail})
    if others:  # ok None: information, not a verdict
        rows.append({"backend": "onnxruntime (other)", "ok": None, "detail": f"listed, not used: {', '.join(others)}"})
    return rows


def probe_openvino() -> list[dict[str, Any]]:
    try:
        import openvino as ov
    except ImportError as e:
        return [{"backend": "openvino", "ok": False, "detail": f"not installed ({_short(e)})"}]
    core, (x, want) = ov.Core(), _probe_input()
    rows = []
    try:  # OpenVINO reads ONNX from a file; a temp folder that refuses writes fails this probe, not doctor
        tmp_dir = tempfile.TemporaryDirectory(prefix="cgdeploy-doctor-")
    except OSError as e:
        where = e.filename or tempfile.gettempdir()
        return [{"backend": "openvino", "ok": False, "detail": f"not probed: cannot write the probe model to "
                 f"{where} ({e.strerror or e}); set TMPDIR to a writable folder"}]
    with tmp_dir as tmp:
        path = Path(tmp) / "probe.onnx"
        try:
            path.write_bytes(probe_onnx_model())
        except OSError as e:
            return [{"backend": "openvino", "ok": False, "detail": f"not probed: cannot write {path} "
                     f"({e.strerror or e}); set TMPDIR to a writable folder"}]
        model = core.read_model(str(path))
        for hint in ("auto", "f32", "bf16", "f16"):
            config = {} if hint == "auto" else {"INFERENCE_PRECISION_HINT": hint}
            try:
                compiled = core.compile_model(model, "CPU", config)
                chosen = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
                y = compiled({0: x})[compiled.output(0)]
                ok = bool(np.allclose(y, want, atol=5e-2)) and hint in ("auto", chosen)
                detail = (f"runs; OpenVINO picks {chosen}" if hint == "auto" else
                          "runs" if ok else f"asked {hint}, OpenVINO runs {chosen} (CPU lacks {hint} support)")
            except Exception as e:
                ok, detail = False, f"fails ({_short(e)})"
            rows.append({"backend": f"openvino CPU {hint}", "ok": ok, "detail": detail})
    rows.append({"backend": "openvino devices", "ok": None, "detail": ", ".join(core.available_devices)})
    return rows


def probe_torch() -> list[dict[str, Any]]:
    try:
        import torch
    except ImportError as e:
        return [{"backend": "torch", "ok": False, "detail": f"not installed ({_short(e)})"}]
    x, want = _probe_input()
    w = torch.from_numpy(PROBE_W.reshape(2, 3, 1, 1))
    rows = []
    for device in ("cpu", "cuda"):
        if device == "cuda" and not torch.cuda.is_available():
            build = "CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, no device"
            rows.append({"backend": "torch cuda", "ok": False, "detail": build})
            continue
        try:
            y = torch.nn.functional.conv2d(torch.from_numpy(x).to(device), w.to(device)).cpu().numpy()
            ok = bool(np.allclose(y, want, atol=1e-3))
            name = torch.cuda.get_device_name() if device == "cuda" else f"{torch.get_num_threads()} threads"
            rows.append({"backend": f"torch {device}", "ok": ok, "detail": f"runs ({name})"})
        except Exception as e:
            rows.append({"backend": f"torch {device}", "ok": False, "detail": f"fails ({_short(e)})"})
    return rows


def probe_tensorrt() -> list[dict[str, Any]]:
    status = available_backends(["tensorrt"])["tensorrt"]
    if status.startswith(UNAVAILABLE):
        return [{"backend": "tensorrt", "ok": False, "detail": status[len(UNAVAILABLE):]}]
    try:
        import tensorrt as trt
        from cuda.bindings import runtime as cudart

        err, count = cudart.cudaGetDeviceCount()
        if int(err) != 0 or not count:
            return [{"backend": "tensorrt", "ok": False, "detail": f"TensorRT {trt.__version__}, CUDA: {err}"}]
        runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
        ok = runtime is not None
        return [{"backend": "tensorrt", "ok": ok, "detail": f"TensorRT {trt.__version__} runtime created"}]
    except Exception as e:
        return [{"backend": "tensorrt", "ok": False, "detail": f"fails ({_short(e)})"}]


# ---- machine -----------------------------------------------------------------------------------------------

def cpu_info() -> dict[str, Any]:
    flags = cpu_flags()
    return {"model": cpu_model(), "physical_cores": physical_cores(), "logical_cpus": os.cpu_count(),
            "flags": {label: flag in flags for flag, label in CPU_FLAGS.items()}}


def gpu_info() -> list[dict[str, str]]:
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError) as e:
        return [{"name": f"nvidia-smi failed ({_short(e)})"}]
    keys = ("name", "driver", "memory", "compute_capability")
    return [dict(zip(keys, (p.strip() for p in line.split(",")), strict=False))
            for line in out.stdout.splitlines() if line.strip()]


def collect(probe: bool = True) -> dict[str, Any]:
    """Everything doctor shows, as plain data (the --json output)."""
    report: dict[str, Any] = {
        "python": sys.version.split()[0], "platform": platform.platform(),
        "packages": {name: package_version(name) for name in PACKAGES},
        "cpu": cpu_info(), "gpus": gpu_info(), "backends": available_backends(),
    }
    if probe:
        report["probes"] = probe_onnxruntime() + probe_openvino() + probe_torch() + probe_tensorrt()
    return report


def _loads(row: dict[str, Any]) -> str:
    return "-" if row["ok"] is None else "yes" if row["ok"] else "no"


def _backend_rows(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(backend, loads, detail): the probes, or with --no-probe what is listed."""
    if "probes" in report:
        return [(row["backend"], _loads(row), row["detail"]) for row in report["probes"]]
    return [(name, "no" if value.startswith(UNAVAILABLE) else "listed", value.removeprefix(UNAVAILABLE))
            for name, value in report["backends"].items()]


def _aligned(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _summary(report: dict[str, Any]) -> list[str]:
    cpu, gpus = report["cpu"], report["gpus"]
    flags = " ".join(f"{k}{'+' if v else '-'}" for k, v in cpu["flags"].items())
    return [f"Python {report['python']}  platform {report['platform']}",
            f"CPU {cpu['model']}: {cpu['physical_cores']} physical cores, {cpu['logical_cpus']} logical; {flags}",
            "GPU " + ("; ".join(" ".join(g.values()) for g in gpus) if gpus else "none (no nvidia-smi)")]


def plain_lines(report: dict[str, Any]) -> list[str]:
    """The report as plain aligned text: what is printed when stdout is not a terminal (nothing cut)."""
    packages = [("package", "version"), *((n, v or "not installed") for n, v in report["packages"].items())]
    backends = [("backend", "loads", "detail"), *_backend_rows(report)]
    return [*_summary(report), "", "Packages", *_aligned(packages), "",
            "Backends (probed by running a 1-node graph)" if "probes" in report else "Backends (listed, not probed)",
            *_aligned(backends)]


def render(report: dict[str, Any], console: Any = None) -> None:
    """Tables on a terminal; plain aligned text when piped or redirected (no box drawing, no cut cells)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    if not console.is_terminal:
        for line in plain_lines(report):
            console.print(line, markup=False, highlight=False, crop=False, soft_wrap=True)
        return
    for line in _summary(report):
        head, _, rest = line.partition(" ")
        console.print(f"[bold]{head}[/] {escape(rest)}", highlight=False)
    packages = Table("package", "version", title="Packages")
    for name, version in report["packages"].items():
        packages.add_row(name, version or "[dim]not installed[/]")
    console.print(packages)
    title = "Backends (probed by running a 1-node graph)" if "probes" in report else "Backends (listed, not probed)"
    table = Table("backend", "loads", "detail", title=title)
    colour = {"yes": "green", "listed": "green", "no": "red"}
    for name, loads, detail in _backend_rows(report):
        table.add_row(name, f"[{colour[loads]}]{loads}[/]" if loads in colour else loads, escape(detail))
    console.print(table)

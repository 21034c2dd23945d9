"""`cgdeploy doctor`: what is installed, which backends/providers really load, the CPU and the GPU.

"Listed" is not "works": onnxruntime-gpu lists CUDA/TensorRT providers on machines where they cannot
start, OpenVINO accepts a bf16 hint and runs f32, `import tensorrt` succeeds with only the type stubs.
So every backend is probed by really running a one-node graph (a 1x1 convolution, so the CUDA EP has to
bring up cuDNN) and checking what actually ran; OpenVINO's int8 by a QuantizeLinear/DequantizeLinear 3x3
convolution (the pattern of `cgdeploy export --int8` graphs) whose kernel is read from the runtime model.
The CPU line says what each precision runs on here (AVX2 / AVX-512 / VNNI / AVX512-BF16 / AMX) or why not.
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
from cyclegan_deploy.machine import CPU_FLAGS, cpu_flags, cpu_model, package_version, physical_cores

PACKAGES = ("numpy", "torch", "onnx", "onnxscript", "onnxruntime", "onnxruntime-gpu", "openvino", "av",
            "tensorrt", "cuda-python", "cuda-bindings", "typer", "rich")
PROBE_W = np.array([[0.5, -1.0, 2.0], [1.0, 0.25, -0.5]], dtype=np.float32)  # Conv 3->2 channels, 1x1
# the int8 probe: u8 activations (scale QDQ_SX, zero point 0) and i8 weights (scale QDQ_SW) into a 3x3 Conv,
# 8 -> 8 channels on 8x8: small, yet the kernel family OpenVINO picks for a generator's 3x3 convolutions
QDQ_C, QDQ_HW, QDQ_SX, QDQ_SW = 8, 8, 0.05, 0.1
FLOAT, UINT8, INT8 = 1, 2, 3  # TensorProto.DataType


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


def _tensor(name: str, array: np.ndarray, data_type: int) -> bytes:
    """TensorProto: dims, data_type, name, raw_data (little-endian)."""
    return (b"".join(_field(1, d) for d in array.shape) + _field(2, data_type) + _field(8, name)
            + _field(9, array.tobytes()))


def _node(op: str, inputs: Sequence[str], outputs: Sequence[str]) -> bytes:
    return b"".join(_field(1, i) for i in inputs) + b"".join(_field(2, o) for o in outputs) + _field(4, op)


def _model(nodes: Sequence[bytes], inits: Sequence[bytes], x: tuple[int, ...], y: tuple[int, ...]) -> bytes:
    """ModelProto, opset 17, IR version 8: graph input x, output y."""
    graph = (b"".join(_field(1, n) for n in nodes) + _field(2, "probe") + b"".join(_field(5, t) for t in inits)
             + _field(11, _value_info("x", x)) + _field(12, _value_info("y", y)))
    return _field(1, 8) + _field(7, graph) + _field(8, _field(1, "") + _field(2, 17))


def probe_onnx_model() -> bytes:
    """ModelProto: y = Conv(x[1,3,4,4], W[2,3,1,1]), opset 17, IR version 8."""
    w = PROBE_W.reshape(2, 3, 1, 1).astype("<f4")
    return _model([_node("Conv", ["x", "W"], ["y"])], [_tensor("W", w, FLOAT)], (1, 3, 4, 4), (1, 2, 4, 4))


def qdq_weights() -> np.ndarray:
    return (np.arange(QDQ_C * QDQ_C * 9) % 7 - 3).astype(np.int8).reshape(QDQ_C, QDQ_C, 3, 3)


def probe_qdq_model() -> bytes:
    """ModelProto: y = Conv(DQ(Q(x)), DQ(W_i8)), x[1,8,8,8] -> y[1,8,6,6]: an int8 convolution as QDQ graphs
    spell it (u8 activations, i8 weights, per-tensor scales, zero points 0)."""
    scalar = np.array
    inits = [_tensor("sx", scalar(QDQ_SX, "<f4"), FLOAT), _tensor("zx", scalar(0, np.uint8), UINT8),
             _tensor("Wq", qdq_weights(), INT8), _tensor("sw", scalar(QDQ_SW, "<f4"), FLOAT),
             _tensor("zw", scalar(0, np.int8), INT8)]
    nodes = [_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]), _node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
             _node("DequantizeLinear", ["Wq", "sw", "zw"], ["Wd"]), _node("Conv", ["xd", "Wd"], ["y"])]
    n = QDQ_HW
    return _model(nodes, inits, (1, QDQ_C, n, n), (1, QDQ_C, n - 2, n - 2))


def _qdq_input() -> tuple[np.ndarray, np.ndarray]:
    """x on the u8 grid (exactly quantizable), and the exact y: int8 arithmetic must match it to float rounding."""
    x = ((np.arange(QDQ_C * QDQ_HW * QDQ_HW) * 37) % 256).astype(np.float32).reshape(1, QDQ_C, QDQ_HW, QDQ_HW)
    x *= np.float32(QDQ_SX)
    windows = np.lib.stride_tricks.sliding_window_view(x[0].astype(np.float64), (3, 3), axis=(1, 2))
    want = np.einsum("chwij,ocij->ohw", windows, qdq_weights() * QDQ_SW)[None]
    return x, want


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
    from cyclegan_deploy.backends.openvino import shared_core
    from cyclegan_deploy.errors import BackendUnavailableError

    try:
        core = shared_core()  # the backends' Core: see shared_core for why there is one per process
    except BackendUnavailableError as e:
        return [{"backend": "openvino", "ok": False, "detail": f"not installed ({_short(e.__cause__ or e)})"}]
    x, want = _probe_input()
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
        rows.append(probe_openvino_int8(core, Path(tmp) / "probe_int8.onnx"))
    rows.append({"backend": "openvino devices", "ok": None, "detail": ", ".join(core.available_devices)})
    return rows


def probe_openvino_int8(core: Any, path: Path) -> dict[str, Any]:
    """Compile the QDQ probe (float ops f32) and say what its convolution ran, from the runtime model."""
    from cyclegan_deploy.backends.openvino import INT8, executed_kernels, executed_precisions

    x, want = _qdq_input()
    try:
        path.write_bytes(probe_qdq_model())
        compiled = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        y = compiled({0: x})[compiled.output(0)]
        ran, kernels = executed_precisions(compiled), ", ".join(executed_kernels(compiled))
    except Exception as e:  # a write refused, or OpenVINO failing on the graph
        return {"backend": "openvino CPU int8", "ok": False, "detail": f"fails ({_short(e)})"}
    int8, right = any(p in INT8 for p in ran), bool(np.allclose(y, want, rtol=1e-4, atol=1e-3))
    detail = (f"runs int8 ({kernels})" if int8 and right else
              f"runs int8 ({kernels}) but the result is wrong" if int8 else
              f"asked int8, OpenVINO ran {'/'.join(ran) or 'nothing'} ({kernels})")
    return {"backend": "openvino CPU int8", "ok": int8 and right, "detail": detail}


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
    labelled = {label: flag in flags for flag, label in CPU_FLAGS.items()}
    return {"model": cpu_model(), "physical_cores": physical_cores(), "logical_cpus": os.cpu_count(),
            "flags": labelled, "precisions": precision_support(labelled)}


def precision_support(f: dict[str, bool]) -> dict[str, str]:
    """Per precision, the instructions OpenVINO/oneDNN kernels use on this CPU, or why it is unavailable
    (f: CPU_FLAGS labels -> present). int8 runs everywhere from AVX2 on, fast only with dot products (VNNI)
    or AMX tiles; bf16 and f16 run as such only with their instructions (else OpenVINO runs f32)."""
    vec = "AVX-512" if f["AVX-512F"] else "AVX2" if f["AVX2"] else ""
    no_amx = "" if f["AMX"] else " (no AMX)"
    int8 = ("AMX-INT8 tiles" if f["AMX-INT8"] else
            f"AVX512-VNNI dot products{no_amx}" if f["AVX512-VNNI"] else
            f"AVX-VNNI dot products{no_amx}" if f["AVX-VNNI"] else
            f"VNNI missing: int8 convolutions run through {vec} u8 kernels without dot-product instructions"
            if vec else "unavailable: no AVX2")
    return {"fp32": f"{vec} FMA" if vec else "no AVX2: slow SSE kernels",
            "bf16": ("AMX-BF16 tiles" if f["AMX-BF16"] else f"AVX512-BF16 dot products{no_amx}" if f["AVX512-BF16"]
                     else "unavailable: no AVX512-BF16/AMX-BF16 (OpenVINO runs f32)"),
            "int8": int8,
            "f16": "AMX-FP16 tiles" if f["AMX-FP16"] else "unavailable: no AMX-FP16 (OpenVINO runs f32)"}


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
    can = "; ".join(f"{k} {v}" for k, v in cpu.get("precisions", {}).items())
    return [f"Python {report['python']}  platform {report['platform']}",
            f"CPU {cpu['model']}: {cpu['physical_cores']} physical cores, {cpu['logical_cpus']} logical; {flags}",
            f"Precisions {can}",
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

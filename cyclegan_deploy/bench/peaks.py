"""Measured compute peaks: the denominator of bench's "% of peak", measured on this machine, never guessed.

A per-cycle table (cores x GHz x FLOP/cycle) cannot know how a core really issues 512-bit FMAs (Zen 4 splits
them in two), what clock it holds under load, or what a library reaches; it reported 104.6% for torch on a
Zen EPYC. So each library is timed, at each precision it can run here and with the threads its backend uses
(the physical cores), on two ops: a large GEMM (n x n x n, n = GEMM_N) and a 3x3 convolution of a ResNet-9
residual block (256 -> 256 channels at 64x64; in the ONNX graphs a chain of CONV_CHAIN of them, as in a model,
so the layout reorders at the graph's edges do not count as convolution time: one int8 conv alone measured
669 GOP/s while the model's residual convs ran at ~870 on a Zen 4 EPYC). The best call of the faster op is
the entry's peak (oneDNN's convolutions beat the libraries' GEMMs by ~15% on a Zen 4 EPYC, so a GEMM alone
would be exceeded):
- torch fp32 (torch.mm, conv2d), torch bf16 (only with AVX512-BF16/AMX-BF16: elsewhere torch emulates it);
- OpenVINO f32 / bf16 / int8 on ONNX MatMul / Conv graphs (built with onnx.helper, as the exported graphs are
  ONNX). bf16 runs only where OPTIMIZATION_CAPABILITIES lists BF16; int8 puts QuantizeLinear/DequantizeLinear
  on both inputs (u8 activations, i8 weights), and counts only when the compiled model's runtime graph says
  the op ran u8/i8 (`runtimePrecision`), never an f32 run labelled int8;
- ONNX Runtime fp32 on the same graphs. No ORT int8 entry: ORT does not report which kernels a QDQ graph ran.
int8 rates count integer operations (1 MAC = 2 ops, "GOP/s") so they compare with a model's 2 x MACs / s.
An entry that cannot run here says why ("unavailable: ..."), one that broke says "failed: ...".

It takes ~15 s on 2 cores, so it runs once per machine and is cached as JSON in `cache_dir()/peaks`
($CGDEPLOY_CACHE or ~/.cache/cgdeploy), keyed by CPU model, flags, core counts and library versions: a new
library version or another CPU re-measures; `cgdeploy bench --remeasure-peaks` forces it. A busy machine
measures low peaks (and high "% of peak"): re-measure on a quiet one. peak_for() picks a case's denominator.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cyclegan_deploy.errors import BackendUnavailableError
from cyclegan_deploy.machine import allowed_cpus, cpu_flags, cpu_model, package_version, physical_cores

SCHEMA = "cgdeploy-peaks/3"  # 2: GEMM and convolution, the faster is the peak; 3: ONNX convs chained
CONV_CHAIN = 4  # ONNX probe convolutions in a row
GEMM_N = 2048  # 17 GFLOP per fp32 call: ~0.1 s on 2 cores, far past the caches, still short
SECONDS = 0.8  # timed per op after warm-up; the best call is the peak (a busy neighbour only slows calls)
LIBRARIES = ("torch", "openvino", "onnxruntime", "numpy")
Log = Callable[[str], None]


def cache_dir() -> Path:
    return Path(os.environ.get("CGDEPLOY_CACHE") or Path.home() / ".cache" / "cgdeploy") / "peaks"


def peaks_key() -> dict[str, Any]:
    """What the peaks depend on: another CPU, core count or library version is another measurement."""
    return {"schema": SCHEMA, "gemm_n": GEMM_N, "cpu": cpu_model(), "flags": sorted(cpu_flags()),
            "physical_cores": physical_cores(), "logical_cpus": allowed_cpus(),
            "versions": {lib: package_version(lib) for lib in LIBRARIES}}


def cache_path(key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"peaks-{digest}.json"


# ---- the probes ---------------------------------------------------------------------------------------------

def _best_rate(call: Callable[[], object], flop: float, seconds: float) -> dict[str, Any]:
    """Two untimed calls, then calls for `seconds` (at least 3): best and median rate in G(FL)OP/s."""
    call()
    call()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    best, median = flop / min(times) / 1e9, flop / float(np.median(times)) / 1e9
    return {"gflops": float(f"{best:.4g}"), "median_gflops": float(f"{median:.4g}"), "calls": len(times)}


def _conv_shape(n: int) -> tuple[int, int]:
    """(channels, side) of the convolution probe: n // 8 channels at 64x64 (256 for n = 2048: a ResNet-9
    ngf 64 residual block's 3x3 convolution, 4.8 GFLOP a call)."""
    return max(8, n // 8), 64


def _op_flop(op: str, n: int, chain: int = 1) -> float:
    c, side = _conv_shape(n)
    return 2.0 * n**3 if op == "gemm" else 2.0 * side * side * c * c * 9 * chain


def _op_name(op: str, n: int, what: str, chain: int = 1) -> str:
    c, side = _conv_shape(n)
    return f"{what} {n}x{n}x{n}" if op == "gemm" else \
        f"{what} 3x3 {c}->{c} at {side}x{side}" + (f" x{chain} chained" if chain > 1 else "")


def _best_of(rates: dict[str, dict[str, Any]], names: dict[str, str], **extra: Any) -> dict[str, Any]:
    """The entry: the faster op's rate (the peak), which op that was, and both ops' best rates."""
    op = max(rates, key=lambda k: rates[k]["gflops"])
    return {**rates[op], "op": names[op], "ops": {k: v["gflops"] for k, v in rates.items()}, **extra,
            "threads": physical_cores()}


def _torch(precision: str, n: int, seconds: float) -> dict[str, Any]:
    import torch

    if precision == "bf16" and not ({"avx512_bf16", "amx_bf16"} & cpu_flags()):
        raise BackendUnavailableError("no AVX512-BF16/AMX-BF16: torch bf16 is converted to fp32 here, not a peak")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    # fp32 convs as the torch spec runs them (NCHW), bf16 as torch-bf16 does (channels_last)
    layout = torch.channels_last if precision == "bf16" else torch.contiguous_format
    c, side = _conv_shape(n)
    before = torch.get_num_threads()
    torch.set_num_threads(physical_cores())  # what the torch backend uses by default
    try:
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        x = torch.randn(1, c, side, side).to(dtype).contiguous(memory_format=layout)  # (N, C, H, W)
        w = torch.randn(c, c, 3, 3).to(dtype).contiguous(memory_format=layout)
        with torch.no_grad():
            rates = {"gemm": _best_rate(lambda: torch.mm(a, b), _op_flop("gemm", n), seconds),
                     "conv": _best_rate(lambda: torch.nn.functional.conv2d(x, w, padding=1), _op_flop("conv", n),
                                        seconds)}
    finally:
        torch.set_num_threads(before)
    return _best_of(rates, {"gemm": _op_name("gemm", n, f"torch.mm {precision}"),
                            "conv": _op_name("conv", n, f"torch conv2d {precision}")}, ran=precision)


def op_onnx(op: str, n: int, qdq: bool) -> bytes:
    """A GEMM x (n, n) @ w (n, n), or CONV_CHAIN 3x3 Convs in a row, as ONNX; qdq: QuantizeLinear/
    DequantizeLinear on every op's inputs (u8 activations, i8 weights, zero points 0), as `cgdeploy export
    --int8` graphs have them (a Relu before each requantisation keeps the activations unsigned)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    c, side = _conv_shape(n)
    x_shape, w_shape = ([n, n], (n, n)) if op == "gemm" else ([1, c, side, side], (c, c, 3, 3))
    w = np.random.default_rng(0).uniform(-1, 1, w_shape).astype(np.float32) / (1 if op == "gemm" else 3 * c)
    inits, nodes = [numpy_helper.from_array(w, "w")], []
    if qdq:
        inits += [numpy_helper.from_array(np.array(v, t), name) for v, t, name in
                  ((1 / 255, np.float32, "sx"), (0, np.uint8, "zx"), (float(np.abs(w).max()) / 127, np.float32, "sw"),
                   (0, np.int8, "zw"))]
        nodes += [helper.make_node("QuantizeLinear", ["w", "sw", "zw"], ["w_q"]),
                  helper.make_node("DequantizeLinear", ["w_q", "sw", "zw"], ["w_dq"])]

    def quantized(src: str) -> str:
        if not qdq:
            return src
        nodes.extend([helper.make_node("QuantizeLinear", [src, "sx", "zx"], [src + "_q"]),
                      helper.make_node("DequantizeLinear", [src + "_q", "sx", "zx"], [src + "_dq"])])
        return src + "_dq"

    b = "w_dq" if qdq else "w"
    if op == "gemm":
        nodes.append(helper.make_node("MatMul", [quantized("x"), b], ["y"]))
    for i in range(CONV_CHAIN if op == "conv" else 0):
        src, out = ("x" if i == 0 else f"r{i - 1}"), ("y" if i == CONV_CHAIN - 1 else f"c{i}")
        nodes.append(helper.make_node("Conv", [quantized(src), b], [out], pads=[1, 1, 1, 1]))
        if out != "y":
            nodes.append(helper.make_node("Relu", [out], [f"r{i}"]))
    graph = helper.make_graph(nodes, op, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, x_shape)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every OpenVINO / ONNX Runtime we support
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def _input(op: str, n: int) -> np.ndarray:
    c, side = _conv_shape(n)
    return np.random.default_rng(1).uniform(0, 1, (n, n) if op == "gemm" else (1, c, side, side)).astype(np.float32)


def gemm_precisions(compiled: Any) -> list[str]:
    """runtimePrecision of the GEMM nodes (FullyConnected/MatMul/Convolution) in OpenVINO's runtime model."""
    found = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        kind = info["layerType"].astype(str) if "layerType" in info else ""
        if kind in ("FullyConnected", "MatMul", "Convolution") and "runtimePrecision" in info:
            found.append(info["runtimePrecision"].astype(str))
    return found


def _openvino(precision: str, n: int, seconds: float) -> dict[str, Any]:

    from cyclegan_deploy.backends.openvino import shared_core

    core = shared_core()
    if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        raise BackendUnavailableError("OpenVINO's CPU plugin lists no BF16 capability on this CPU")
    want = {"fp32": ("f32",), "bf16": ("bf16",), "int8": ("u8", "i8")}[precision]
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": physical_cores(),
              "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}
    rates: dict[str, dict[str, Any]] = {}
    ran: list[str] = []
    for op in ("gemm", "conv"):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{op}.onnx"
            path.write_bytes(op_onnx(op, n, qdq=precision == "int8"))
            compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        here = gemm_precisions(compiled)
        if not here or any(p not in want for p in here):
            raise BackendUnavailableError(f"OpenVINO ran the {precision} {op.upper()} as {'/'.join(here) or 'unknown'} "
                                          f"on this CPU (runtime model), not {'/'.join(want)}; no {precision} peak")
        request, x = compiled.create_infer_request(), _input(op, n)
        rates[op] = _best_rate(functools.partial(request.infer, {0: x}), _op_flop(op, n, CONV_CHAIN), seconds)
        ran += here
    qdq = " QDQ u8 x i8" if precision == "int8" else ""
    return _best_of(rates, {"gemm": _op_name("gemm", n, "ONNX MatMul") + qdq,
                            "conv": _op_name("conv", n, "ONNX Conv", CONV_CHAIN) + qdq},
                    ran="/".join(dict.fromkeys(ran)))


def _onnxruntime(precision: str, n: int, seconds: float) -> dict[str, Any]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = physical_cores(), 1  # as the onnxruntime backend
    rates = {}
    for op in ("gemm", "conv"):
        session = ort.InferenceSession(op_onnx(op, n, qdq=False), so, providers=["CPUExecutionProvider"])
        x = _input(op, n)
        rates[op] = _best_rate(functools.partial(session.run, None, {"x": x}), _op_flop(op, n, CONV_CHAIN), seconds)
    return _best_of(rates, {"gemm": _op_name("gemm", n, "ONNX MatMul"),
                            "conv": _op_name("conv", n, "ONNX Conv", CONV_CHAIN)}, ran="fp32 (CPUExecutionProvider)")


# entry name -> (library, precision, probe(precision, n, seconds))
PROBES: dict[str, tuple[str, str, Callable[[str, int, float], dict[str, Any]]]] = {
    "torch-fp32": ("torch", "fp32", _torch), "torch-bf16": ("torch", "bf16", _torch),
    "openvino-fp32": ("openvino", "fp32", _openvino), "openvino-bf16": ("openvino", "bf16", _openvino),
    "openvino-int8": ("openvino", "int8", _openvino), "onnxruntime-fp32": ("onnxruntime", "fp32", _onnxruntime),
}


def measure_peaks(n: int = GEMM_N, seconds: float = SECONDS, log: Log = lambda _: None) -> dict[str, dict[str, Any]]:
    """Every PROBES entry: {library, precision, status, gflops (the peak), median_gflops, calls, op (the faster
    op), ops (each op's best rate), ran, threads}."""
    entries: dict[str, dict[str, Any]] = {}
    for name, (library, precision, probe) in PROBES.items():
        entry: dict[str, Any] = {"library": library, "precision": precision}
        try:
            entry.update(probe(precision, n, seconds), status="ok")
        except (BackendUnavailableError, ImportError) as e:
            entry["status"] = f"unavailable: {e}"
        except Exception as e:  # a library bug must not end the benchmark: its entry says what broke
            entry["status"] = f"failed: {type(e).__name__}: {' '.join(str(e).split())[:200]}"
        log(f"peak {name}: " + (f"{entry['gflops']} G(FL)OP/s" if entry["status"] == "ok" else entry["status"]))
        entries[name] = entry
    return entries


def machine_peaks(remeasure: bool = False, log: Log = lambda _: None) -> dict[str, Any]:
    """This machine's peaks: from the cache when its key matches (and not `remeasure`), else measured and
    cached. {"key", "cache", "measured" (time), "from_cache", "entries": measure_peaks()}."""
    key = peaks_key()
    path = cache_path(key)
    if not remeasure and path.is_file():
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = None  # a damaged cache is measured again and rewritten
        if isinstance(data, dict) and data.get("key") == key and isinstance(data.get("entries"), dict):
            return {**data, "cache": str(path), "from_cache": True}
    log(f"measuring this machine's peaks once (GEMM and conv per library and precision, ~15 s); cached in {path}")
    data = {"key": key, "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "entries": measure_peaks(log=log)}
    from cyclegan_deploy.artifacts import write_json

    try:
        write_json(path, data)
    except OSError as e:  # an unwritable cache costs a re-measure next time, not this run
        log(f"peaks not cached ({e})")
    return {**data, "cache": str(path), "from_cache": False}


def best_by_precision(peaks: dict[str, Any] | None) -> dict[str, float | None]:
    """The highest measured rate per precision (fp32/bf16/int8) over all libraries; None where none ran."""
    entries = (peaks or {}).get("entries", {}).values()
    return {p: max((e["gflops"] for e in entries if e["status"] == "ok" and e["precision"] == p), default=None)
            for p in ("fp32", "bf16", "int8")}


def peak_for(peaks: dict[str, Any] | None, library: str, precision: str) -> tuple[float, str] | None:
    """(G(FL)OP/s, what it is) for a CPU case run by `library` at `precision`: that library's own measured peak
    ("torch-fp32 peak"), else the best measured here at that precision, named so ("openvino-int8 peak (best
    int8 measured here; onnxruntime int8 not measured)"), else None. The text starts with the entry's name."""
    entries = (peaks or {}).get("entries", {})
    own = f"{library}-{precision}"
    if own in entries and entries[own]["status"] == "ok":
        return float(entries[own]["gflops"]), f"{own} peak"
    ok = [(e["gflops"], name) for name, e in entries.items() if e["status"] == "ok" and e["precision"] == precision]
    if not ok:
        return None
    best, name = max(ok)
    why = "not measured" if own not in entries else entries[own]["status"].split(":")[0]
    return float(best), f"{name} peak (best {precision} measured here; {library} {precision} {why})"


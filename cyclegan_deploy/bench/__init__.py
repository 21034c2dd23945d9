"""`cgdeploy bench`: latency/throughput of one model across backends, sizes and batch sizes.

cases.py   specs, the run's configuration, the typed case record (CaseResult -> one results.json row)
metrics.py latency statistics, parity fields, seeded inputs, MAC counts, machine info, GPU datasheet peaks
peaks.py   the CPU's peaks measured per library and precision (GEMM, 3x3 conv; cached per machine)
report.py  results.json/.csv/.md and latency.png, written as one set; the table's rows
table.py   the printed table: what fits a terminal, plain aligned text when piped
limits.py  refused before anything runs: sizes below the model's smallest input, memory, a bad --video
timing.py  one backend on one input: the backend protocol, the default loader, the timed loops (latency,
           throughput with N in flight)
run.py     the harness: run_bench (every case), run_video (end-to-end vs inference-only)
Importing this package imports no inference library (torch, onnx, onnxruntime, openvino, tensorrt) and never
the export or train stages: the caller passes the artifacts in (see commands/bench_cmd.py).
"""

from cyclegan_deploy.bench.cases import (
    CPU_SPECS,
    GPU_SPECS,
    MIN_REPEATS,
    SCHEMA,
    SPECS,
    BenchConfig,
    CaseResult,
    Spec,
    artifact_error,
    default_specs,
    parse_spec,
)
from cyclegan_deploy.bench.metrics import latency_stats, machine_info, make_input, parity_record
from cyclegan_deploy.bench.peaks import machine_peaks
from cyclegan_deploy.bench.report import write_outputs
from cyclegan_deploy.bench.run import run_bench, run_video
from cyclegan_deploy.bench.table import print_table
from cyclegan_deploy.bench.timing import BenchBackend, Loader, default_loader

__all__ = ["CPU_SPECS", "GPU_SPECS", "MIN_REPEATS", "SCHEMA", "SPECS", "BenchBackend", "BenchConfig", "CaseResult",
           "Loader", "Spec", "artifact_error", "default_loader", "default_specs", "latency_stats", "machine_info",
           "machine_peaks", "make_input", "parity_record", "parse_spec", "print_table", "run_bench", "run_video",
           "write_outputs"]

"""Fake measured peaks for the bench tests (tests/runtime/conftest.py installs them for the whole session)."""

from __future__ import annotations

from typing import Any

from cyclegan_deploy.bench import peaks

REAL_MEASURE = peaks.measure_peaks  # imported before conftest replaces it: the tests of the real probes use it
# G(FL)OP/s by entry: each library and precision distinct, so a test sees which peak a case divided by
FAKE_RATES = {"torch-fp32": 100.0, "torch-bf16": 200.0, "openvino-fp32": 150.0, "openvino-bf16": 300.0,
              "openvino-int8": 600.0, "onnxruntime-fp32": 120.0}


def fake_entries() -> dict[str, dict[str, Any]]:
    return {name: {"library": lib, "precision": prec, "status": "ok", "gflops": FAKE_RATES[name],
                   "median_gflops": FAKE_RATES[name], "calls": 3, "op": "fake", "ran": prec, "threads": 1}
            for name, (lib, prec, _) in peaks.PROBES.items()}


FAKE_PEAKS = {"key": {"fake": True}, "measured": "now", "cache": "fake", "from_cache": False, "entries": fake_entries()}

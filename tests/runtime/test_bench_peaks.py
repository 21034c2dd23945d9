"""Issue 10's bench side: measured peaks (cache, keys, the int8 check), % of the right peak, the throughput
column from run_many, the int8 specs (found beside --model, or a clear message), the ISA line.

No timing assertions: a fake clock makes the throughput numbers exact; the real probes run on tiny ops only
to check what they claim ran.
"""

from __future__ import annotations

import csv
import json
import threading
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from peak_fakes import FAKE_PEAKS, FAKE_RATES, REAL_MEASURE

from cyclegan_deploy import machine
from cyclegan_deploy.bench import BenchConfig, Spec, peaks, print_table, run_bench, timing, write_outputs
from cyclegan_deploy.bench.cases import INT8_SPECS, default_specs, int8_beside, parse_spec, with_throughput
from cyclegan_deploy.errors import BackendUnavailableError
from cyclegan_deploy.metadata import ModelMeta

# ---- the peaks cache -----------------------------------------------------------------------------------------


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[int]:
    """A fresh cache folder and a measurement that counts its calls (and returns a distinct rate each time)."""
    monkeypatch.setenv("CGDEPLOY_CACHE", str(tmp_path / "cache"))
    calls: list[int] = []

    def measure(*_: Any, **__: Any) -> dict[str, Any]:
        calls.append(1)
        return {"torch-fp32": {"library": "torch", "precision": "fp32", "status": "ok", "gflops": float(len(calls))}}

    monkeypatch.setattr(peaks, "measure_peaks", measure)
    return calls


def test_peaks_are_measured_once_then_read_from_the_cache(counted: list[int], tmp_path: Path) -> None:
    first = peaks.machine_peaks()
    assert len(counted) == 1 and first["from_cache"] is False
    path = Path(first["cache"])
    assert path.parent == tmp_path / "cache" / "peaks" and path.is_file()
    stored = json.loads(path.read_text())
    assert stored["key"] == peaks.peaks_key() and stored["entries"]["torch-fp32"]["gflops"] == 1.0
    again = peaks.machine_peaks()
    assert len(counted) == 1 and again["from_cache"] is True and again["entries"] == first["entries"]
    assert peaks.machine_peaks(remeasure=True)["entries"]["torch-fp32"]["gflops"] == 2.0  # --remeasure-peaks
    assert len(counted) == 2 and peaks.machine_peaks()["entries"]["torch-fp32"]["gflops"] == 2.0


def test_a_changed_key_measures_again(counted: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    peaks.machine_peaks()
    key = peaks.peaks_key()
    for change in ({"versions": {**key["versions"], "openvino": "9999.0"}}, {"physical_cores": 64},
                   {"flags": ["sse2"]}, {"cpu": "another CPU"}):
        before = len(counted)
        monkeypatch.setattr(peaks, "peaks_key", lambda change=change: {**key, **change})
        assert peaks.machine_peaks()["from_cache"] is False and len(counted) == before + 1, change
        assert peaks.machine_peaks()["from_cache"] is True  # and that key is cached now
    monkeypatch.setattr(peaks, "peaks_key", lambda: key)
    assert peaks.machine_peaks()["from_cache"] is True  # the first machine's file is still there


def test_a_damaged_or_foreign_cache_file_is_measured_again(counted: list[int]) -> None:
    path = Path(peaks.machine_peaks()["cache"])
    path.write_text("{not json")
    assert peaks.machine_peaks()["from_cache"] is False and len(counted) == 2
    path.write_text(json.dumps({"key": {"cpu": "other"}, "entries": {}}))  # same name, another key inside
    assert peaks.machine_peaks()["from_cache"] is False and len(counted) == 3


def test_an_unwritable_cache_costs_a_remeasure_not_the_run(counted: list[int], monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("CGDEPLOY_CACHE", str(tmp_path / "file"))  # a file where the folder should be
    said: list[str] = []
    assert peaks.machine_peaks(log=said.append)["entries"]["torch-fp32"]["status"] == "ok"
    assert any("not cached" in s for s in said)


# ---- the probes -----------------------------------------------------------------------------------------------


def test_int8_peak_refused_when_the_runtime_model_says_f32(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("openvino")
    pytest.importorskip("onnx")
    monkeypatch.setattr(peaks, "gemm_precisions", lambda compiled: ["f32"])
    with pytest.raises(BackendUnavailableError, match="ran the int8 GEMM as f32"):
        peaks._openvino("int8", 64, 0.0)
    monkeypatch.setattr(peaks, "PROBES", {"openvino-int8": peaks.PROBES["openvino-int8"]})
    (entry,) = REAL_MEASURE(n=64, seconds=0.0).values()
    assert entry["status"].startswith("unavailable: OpenVINO ran the int8 GEMM as f32") and "gflops" not in entry
    assert peaks.best_by_precision({"entries": {"openvino-int8": entry}})["int8"] is None


def test_real_probes_say_what_ran() -> None:
    """Every entry on a tiny GEMM: ok with the precision its runtime reports, or a reason. An OpenVINO int8 entry
    is ok only when its GEMM ran u8/i8 (an f32 run is never an int8 peak)."""
    pytest.importorskip("onnx")
    found = REAL_MEASURE(n=64, seconds=0.0)
    assert set(found) == set(peaks.PROBES)
    for name, e in found.items():
        assert e["status"] == "ok" or e["status"].startswith(("unavailable: ", "failed: ")), (name, e)
        if e["status"] == "ok":
            assert e["gflops"] > 0 and e["calls"] >= 3
    if found["openvino-int8"]["status"] == "ok":
        assert set(found["openvino-int8"]["ran"].split("/")) <= {"u8", "i8"}
    if found["openvino-bf16"]["status"] == "ok":
        assert found["openvino-bf16"]["ran"] == "bf16"


def test_isa_from_cpu_flags() -> None:
    assert machine.isa({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}) == {
        "AVX2": True, "AVX-512": True, "AVX512-VNNI": True, "AVX512-BF16": True, "AMX": False}
    assert machine.isa({"avx2", "amx_int8"}) == {"AVX2": True, "AVX-512": False, "AVX512-VNNI": False,
                                               "AVX512-BF16": False, "AMX": True}


# ---- % of peak, throughput, the ISA line ---------------------------------------------------------------------


class Clock:
    """A fake perf_counter: only the fake backends advance it."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class Fake:
    """tanh(x); each call (or each group of `inflight` batches in run_many) takes `ms` on the fake clock."""

    def __init__(self, name: str, precision: str, clock: Clock, ms: float = 10.0, max_inflight: int = 1) -> None:
        self.name, self.precision, self.clock, self.ms, self.max_inflight = name, precision, clock, ms, max_inflight
        self.meta = ModelMeta(multiple=4)
        self.threads = 1
        self.inflight_asked: list[int | None] = []
        self.most_running = 0
        self._running = 0
        self._lock = threading.Lock()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.clock.now += self.ms / 1e3
        return np.tanh(batch).astype(np.float32)

    def run_many(self, batches: Any, inflight: int | None = None) -> Any:
        n = inflight or self.max_inflight
        self.inflight_asked.append(inflight)
        group: list[np.ndarray] = []
        for batch in batches:
            group.append(batch)
            if len(group) == n:
                yield from self._group(group)
                group = []
        yield from self._group(group)

    def _group(self, group: list[np.ndarray]) -> list[np.ndarray]:
        """`group` runs at once: the clock moves by one call's time; the most batches running is recorded."""
        if not group:
            return []
        with self._lock:
            self._running = len(group)
            self.most_running = max(self.most_running, self._running)
        self.clock.now += self.ms / 1e3
        return [np.tanh(b).astype(np.float32) for b in group]

    def close(self) -> None:
        pass


def _fakes(clock: Clock) -> dict[str, Fake]:
    return {"torch": Fake("torch-cpu", "fp32", clock), "torch-bf16": Fake("torch-cpu", "bf16", clock),
            "onnxruntime": Fake("onnxruntime-cpu", "fp32", clock),
            "onnxruntime-int8": Fake("onnxruntime-cpu", "int8", clock),
            "openvino-bf16": Fake("openvino-bf16", "bf16", clock),
            "openvino-int8": Fake("openvino-int8", "int8", clock),
            "openvino-int8-tput": Fake("openvino-int8", "int8", clock, max_inflight=4)}


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, specs: list[str], **cfg: Any) -> tuple[dict[str, Any],
                                                                                              dict[str, Fake]]:
    from test_bench import _conv_graph

    clock = Clock()
    monkeypatch.setattr(timing, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    fakes = _fakes(clock)

    def load(path: Path, spec: Spec, threads: int | None) -> Fake:
        return fakes[spec.name.split(":")[0]]

    graph = _conv_graph(tmp_path / "c.onnx")
    config = BenchConfig(out_dir=tmp_path / "r", onnx=graph, onnx_int8=graph, checkpoint=tmp_path / "unused.pth",
                         reference="onnxruntime", baseline="torch", specs=specs, sizes=[(32, 32)], warmup=1,
                         repeats=8, max_seconds=60, peaks=FAKE_PEAKS, **cfg)
    return run_bench(config, loader=load, log=lambda _: None), fakes


def _case(results: dict[str, Any], backend: str) -> dict[str, Any]:
    (hit,) = [c for c in results["cases"] if c["backend"] == backend]
    return hit


def test_percent_of_peak_uses_the_measured_peak_of_the_cases_library_and_precision(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results, _ = _run(tmp_path, monkeypatch, ["torch", "torch-bf16", "onnxruntime", "onnxruntime-int8",
                                              "openvino-bf16", "openvino-int8"])
    expected = {"torch": ("torch-fp32", "torch-fp32 peak"), "torch-bf16": ("torch-bf16", "torch-bf16 peak"),
                "onnxruntime": ("onnxruntime-fp32", "onnxruntime-fp32 peak"),
                "openvino-bf16": ("openvino-bf16", "openvino-bf16 peak"),
                "openvino-int8": ("openvino-int8", "openvino-int8 peak"),
                # no ORT int8 peak is measured: the best int8 GEMM measured here, and it says so
                "onnxruntime-int8": ("openvino-int8", "openvino-int8 peak (best int8 measured here; "
                                                      "onnxruntime int8 not measured)")}
    for backend, (entry, source) in expected.items():
        c = _case(results, backend)
        assert c["status"] == "ok" and c["peak_gflops"] == FAKE_RATES[entry], backend
        assert c["peak_source"] == source
        assert c["pct_peak"] == pytest.approx(100 * c["gflops"] / FAKE_RATES[entry])
    assert results["peaks"] == FAKE_PEAKS
    assert results["machine"]["cpu"]["peak_gflops"] == {"fp32": 150.0, "bf16": 300.0, "int8": 600.0}
    write_outputs(results, tmp_path / "r")
    md = (tmp_path / "r" / "results.md").read_text()
    # the peaks table beside the model numbers, each entry with the cases that divided by it
    assert "| openvino-int8 | 600.0 |" in md and "| onnxruntime-int8, openvino-int8 |" in md
    assert "| torch-fp32 | 100.0 |" in md and "| torch |" in md


def test_no_measured_peaks_means_no_percent_of_peak_on_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results, _ = run_bench_without_peaks(tmp_path, monkeypatch)
    c = _case(results, "torch")
    assert c["status"] == "ok" and c["pct_peak"] is None and c["peak_source"] is None
    write_outputs(results, tmp_path / "r2")
    assert "No measured CPU peaks" in (tmp_path / "r2" / "results.md").read_text()


def run_bench_without_peaks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, Any], Any]:
    from test_bench import _conv_graph

    clock = Clock()
    monkeypatch.setattr(timing, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    fake = Fake("torch-cpu", "fp32", clock)
    cfg = BenchConfig(out_dir=tmp_path / "r2", onnx=_conv_graph(tmp_path / "c2.onnx"), reference="torch",
                      checkpoint=tmp_path / "unused.pth", specs=["torch"], sizes=[(32, 32)], warmup=1, repeats=3)
    return run_bench(cfg, loader=lambda *_: fake, log=lambda _: None), fake


def test_throughput_column_from_run_many(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    results, fakes = _run(tmp_path, monkeypatch, ["torch", "openvino-int8", "openvino-int8-tput"])
    tput = _case(results, "openvino-int8-tput")
    # 10 ms per call on the fake clock: latency fps 100; 4 batches per 10 ms in flight: 400 frames/s
    assert tput["fps"] == pytest.approx(100.0)
    assert tput["throughput_mode"] == "async" and tput["throughput_inflight"] == 4
    assert tput["throughput_fps"] == pytest.approx(400.0)
    assert tput["throughput_speedup"] == pytest.approx(4.0)  # vs the baseline's (torch) batch-1 fps
    backend = fakes["openvino-int8-tput"]
    assert backend.inflight_asked and set(backend.inflight_asked) == {4} and backend.most_running == 4
    for sync in ("torch", "openvino-int8"):  # no async queue: blank, labelled sync
        c = _case(results, sync)
        assert (c["throughput_mode"], c["throughput_fps"], c["throughput_inflight"]) == ("sync", None, 1)
        assert fakes[sync].inflight_asked == []
    write_outputs(results, tmp_path / "r")
    md = (tmp_path / "r" / "results.md").read_text()
    assert "| tput fps |" in md.splitlines()[0]
    assert "400.00 (4)" in md
    rows = {r["backend"]: r for r in csv.DictReader((tmp_path / "r" / "results.csv").open())}
    assert float(rows["openvino-int8-tput"]["throughput_fps"]) == pytest.approx(400.0)
    assert rows["torch"]["throughput_mode"] == "sync" and rows["torch"]["throughput_fps"] == ""
    capsys.readouterr()
    print_table(results)
    out = capsys.readouterr().out
    assert "tput fps" in out.splitlines()[0] and "400.00 (4)" in out
    labels = [line.split()[0] for line in out.splitlines()[1:4]]
    assert labels == ["torch-cpu", "openvino-int8", "openvino-int8-tput"]  # the THROUGHPUT-mode row is named so


def test_inflight_option_overrides_the_backends_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results, fakes = _run(tmp_path, monkeypatch, ["torch", "openvino-int8-tput"], inflight=2)
    tput = _case(results, "openvino-int8-tput")
    assert tput["throughput_inflight"] == 2 and set(fakes["openvino-int8-tput"].inflight_asked) == {2}
    assert tput["throughput_fps"] == pytest.approx(200.0)


def test_isa_and_what_ran_are_in_every_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    results, _ = _run(tmp_path, monkeypatch, ["torch", "openvino-int8", "openvino-bf16"])
    assert set(results["machine"]["cpu"]["isa"]) == {"AVX2", "AVX-512", "AVX512-VNNI", "AVX512-BF16", "AMX"}
    write_outputs(results, tmp_path / "r")
    md = (tmp_path / "r" / "results.md").read_text()
    data = json.loads((tmp_path / "r" / "results.json").read_text())
    assert data["machine"]["cpu"]["isa"] == results["machine"]["cpu"]["isa"]
    assert "CPU ISA: AVX2 " in md and "AMX " in md
    assert "openvino-int8 -> openvino-int8 (int8)" in md and "openvino-bf16 -> openvino-bf16 (bf16)" in md
    capsys.readouterr()
    print_table(results)
    out = capsys.readouterr().out
    assert "CPU ISA: AVX2 " in out and "openvino-int8 -> openvino-int8 (int8)" in out and "Measured peaks" in out


# ---- the int8 specs -------------------------------------------------------------------------------------------


def test_int8_graph_is_found_beside_the_model(tmp_path: Path) -> None:
    fp32 = tmp_path / "g_AtoB.onnx"
    fp32.write_bytes(b"")
    assert int8_beside(fp32) is None and int8_beside(None) is None
    assert not set(INT8_SPECS) & set(default_specs(None, fp32, None, gpu=False))
    (tmp_path / "g_AtoB.int8.onnx").write_bytes(b"")
    assert int8_beside(fp32) == tmp_path / "g_AtoB.int8.onnx"
    assert int8_beside(tmp_path / "g_AtoB.int8.onnx") is None  # an int8 graph has no int8 graph beside it
    assert set(INT8_SPECS) <= set(default_specs(None, fp32, None, gpu=False, onnx_int8=int8_beside(fp32)))
    only = default_specs(None, None, None, gpu=False, onnx_int8=tmp_path / "g_AtoB.int8.onnx")
    assert only == list(INT8_SPECS)
    assert parse_spec("openvino-int8").artifact == parse_spec("onnxruntime-int8").artifact == "onnx-int8"
    assert with_throughput(["torch", "openvino-f32", "openvino-int8:threads=1"]) == [
        "torch", "openvino-f32", "openvino-f32-tput", "openvino-int8:threads=1", "openvino-int8-tput:threads=1"]
    assert parse_spec("openvino-int8-tput").options == {"performance_hint": "THROUGHPUT"}


def test_int8_specs_without_a_graph_say_how_to_make_one(tmp_path: Path) -> None:
    from test_bench import _conv_graph, _fake_loader

    cfg = BenchConfig(out_dir=tmp_path / "r", onnx=_conv_graph(tmp_path / "c.onnx"), reference="onnxruntime",
                      specs=["onnxruntime", "openvino-int8", "onnxruntime-int8"], sizes=[(8, 8)], warmup=1, repeats=1)
    results = run_bench(cfg, loader=_fake_loader([]), log=lambda _: None)
    for name in ("openvino-int8", "onnxruntime-int8"):
        assert _case(results, name)["status"].startswith(
            "unavailable: needs an int8 graph: cgdeploy export CKPT -o DIR --int8")
    assert _case(results, "onnxruntime")["status"] == "ok"


@pytest.fixture(scope="module")
def int8_graph(tiny_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny generator's graph beside its NNCF QDQ graph (g_AtoB.int8.onnx, card precision int8)."""
    nncf = pytest.importorskip("nncf")
    import onnx

    from cyclegan_deploy.artifacts import graph_path, onnx_metadata
    from cyclegan_deploy.metadata import ModelMeta as Meta

    folder = tmp_path_factory.mktemp("int8")
    fp32 = folder / "g_AtoB.onnx"
    fp32.write_bytes(tiny_onnx.read_bytes())
    model = onnx.load(str(fp32))
    name = model.graph.input[0].name
    rng = np.random.default_rng(0)
    data = [rng.uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32) for _ in range(8)]
    quantized = nncf.quantize(model, nncf.Dataset(data, lambda x: {name: x}), subset_size=8)
    card = Meta.from_props(onnx_metadata(fp32))
    assert card is not None
    card.precision = "int8"
    del quantized.metadata_props[:]
    for key, value in card.to_props().items():
        quantized.metadata_props.add(key=key, value=value)
    onnx.save(quantized, str(graph_path(fp32, "int8")))
    return fp32


def test_cli_bench_finds_the_int8_graph_beside_model(int8_graph: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from cyclegan_deploy.cli import main

    out = tmp_path / "res"
    assert main(["bench", "--model", str(int8_graph), "-o", str(out), "--sizes", "32x32", "--repeats", "3",
                 "--warmup", "1", "--threads", "1"]) == 0
    data = json.loads((out / "results.json").read_text())
    int8 = int8_graph.with_name("g_AtoB.int8.onnx")
    assert data["model"]["artifacts"]["onnx-int8"] == str(int8)
    assert any(f"int8 graph {int8} found beside" in n for n in data["notes"])
    ort = _case(data, "onnxruntime-int8")
    assert ort["status"] == "ok" and ort["precision"] == "int8"  # the graph's precision, as the card says
    assert ort["peak_source"].startswith("openvino-int8 peak (best int8 measured here")
    ov = _case(data, "openvino-int8")
    # OpenVINO reports int8 only when its runtime model ran the convolutions int8; else it refuses
    assert (ov["status"] == "ok" and ov["backend_name"] == "openvino-int8" and ov["precision"] == "int8") \
        or ov["status"].startswith("unavailable:"), ov["status"]
    assert data["peaks"]["entries"] and data["machine"]["cpu"]["isa"]


def test_row_names_keep_the_specs_options_apart() -> None:
    """An A/B of one backend (openvino-int8 with and without an option) gives two row names, not one twice."""
    from cyclegan_deploy.bench.report import case_label

    def row(spec: str, name: str, precision: str = "int8") -> dict[str, Any]:
        return {"status": "ok", "backend": spec, "backend_name": name, "precision": precision}

    assert case_label(row("openvino-int8", "openvino-int8")) == "openvino-int8"
    assert case_label(row("openvino-int8:space_to_depth=false", "openvino-int8")) == \
        "openvino-int8:space_to_depth=false"
    assert case_label(row("openvino-int8-bf16-tput", "openvino-int8-bf16")) == "openvino-int8-bf16-tput"
    assert case_label(row("onnxruntime-int8", "onnxruntime-cpu")) == "onnxruntime-cpu-int8"

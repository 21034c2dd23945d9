"""The bench harness on fake and tiny backends: statistics, parity, MAC counts, result files, failure reporting.

No timing assertions: only what the harness computes from the samples it gets.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from peak_fakes import FAKE_PEAKS

from cyclegan_deploy import bench
from cyclegan_deploy.bench import BenchConfig, Spec, parse_spec, run_bench
from cyclegan_deploy.bench.metrics import count_macs_onnx, latency_stats
from cyclegan_deploy.bench.metrics import parity_record as parity
from cyclegan_deploy.bench.report import CSV_FIELDS, write_outputs
from cyclegan_deploy.errors import BackendUnavailableError, ConfigError
from cyclegan_deploy.frames import parse_size
from cyclegan_deploy.metadata import ModelMeta

# ---- statistics and parity from known values ----------------------------------------------------------------


def test_latency_stats_known_samples() -> None:
    # type-7 percentiles of 1..10: position (n-1)p, linear between neighbours
    s = latency_stats([7, 1, 10, 2, 9, 3, 8, 4, 6, 5])
    assert s["n"] == 10
    assert s["p50"] == pytest.approx(5.5)
    assert s["p90"] == pytest.approx(9.1)
    assert s["p99"] == pytest.approx(9.91)
    assert (s["mean"], s["min"], s["max"]) == (pytest.approx(5.5), 1.0, 10.0)
    assert s["std"] == pytest.approx(math.sqrt(sum((x - 5.5) ** 2 for x in range(1, 11)) / 9))


def test_latency_stats_single_and_empty() -> None:
    s = latency_stats([4.0])
    assert s["p50"] == s["p99"] == s["min"] == 4.0 and s["std"] == 0.0
    with pytest.raises(ValueError):
        latency_stats([])


def test_parity_known_values() -> None:
    ref = np.zeros((3, 2, 2), np.float32)
    out = ref.copy()
    out[0, 0, 0] = 0.1
    p = parity(ref, out)
    assert p["max_abs"] == pytest.approx(0.1)
    # mse = 0.01 / 12 over the [-1, 1] range (peak-to-peak 2)
    assert p["psnr_db"] == pytest.approx(10 * math.log10(4 / (0.01 / 12)), rel=1e-6)
    assert p["max_u8"] == 12  # rint(127.5)=128 (half to even), rint(140.25)=140
    same = parity(ref, ref)
    assert same["max_abs"] == 0.0 and same["psnr_db"] is None
    with pytest.raises(ValueError):
        parity(ref, ref[:2])


def test_parse_spec_and_size() -> None:
    s = parse_spec("openvino-bf16:num_streams=2:performance_hint=THROUGHPUT")
    assert s.backend == "openvino-cpu" and s.precision == "bf16"
    assert s.options == {"precision": "bf16", "num_streams": 2, "performance_hint": "THROUGHPUT"}
    assert parse_spec("torch:compile=true").options["compile"] is True
    assert parse_spec("openvino-f32").precision == "fp32"
    assert parse_spec("openvino-int8").precision == "int8" and parse_spec("onnxruntime-int8").artifact == "onnx-int8"
    for bad in ("openvino-int4", "torch:compile"):
        with pytest.raises(ConfigError):
            parse_spec(bad)
    assert parse_size("720x1280") == (720, 1280)
    for bad in ("720", "1x5", "axb"):
        with pytest.raises(ConfigError):
            parse_size(bad)


# ---- MAC counting ---------------------------------------------------------------------------------------------


def _conv_graph(path: Path) -> Path:
    """Conv(3->4, k3, p1) -> ConvTranspose(4->2, k3, s2, p1, op1) -> Conv(2->2, k1, group 2), dynamic N/H/W."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=s).astype(np.float32), n)
             for n, s in (("w1", (4, 3, 3, 3)), ("w2", (4, 2, 3, 3)), ("w3", (2, 1, 1, 1)))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("ConvTranspose", ["a", "w2"], ["b"], strides=[2, 2], pads=[1, 1, 1, 1],
                              output_padding=[1, 1]),
             helper.make_node("Conv", ["b", "w3"], ["y"], group=2)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, None, None])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return path


def _hand_macs(h: int, w: int) -> tuple[int, int]:
    conv1 = h * w * 4 * 3 * 9  # out pixels x Cout x Cin x k^2
    convt_real = h * w * 4 * 2 * 9  # in pixels x Cin x Cout x k^2
    convt_dense = (2 * h) * (2 * w) * 2 * 4 * 9  # out pixels x Cout x Cin x k^2
    conv3 = (2 * h) * (2 * w) * 2 * 1 * 1  # groups=2: Cin/g = 1
    return conv1 + convt_real + conv3, conv1 + convt_dense + conv3


def test_mac_count_of_hand_built_graph(tmp_path: Path) -> None:
    path = _conv_graph(tmp_path / "conv.onnx")
    real, dense = _hand_macs(8, 12)
    assert count_macs_onnx(path, 8, 12) == {"macs": real, "macs_dense": dense}
    assert count_macs_onnx(path, 8, 12, batch=3)["macs"] == 3 * real


def test_mac_count_full_resnet9_and_tiny_onnx_agree_with_torch(tiny_resnet: Any, tiny_onnx: Path) -> None:
    pytest.importorskip("torch")
    from cyclegan_deploy.bench.metrics import count_macs_torch
    from cyclegan_deploy.train.models import GeneratorConfig, build_generator

    model, _ = tiny_resnet
    assert count_macs_torch(model, 36, 44) == count_macs_onnx(tiny_onnx, 36, 44)
    # ResNet-9 ngf 64 at 256^2 by hand: c7 3->64, d 64->128, d 128->256, 18 x c3 256->256 at 64^2,
    # u 256->128 and 128->64 (real count: input pixels), c7 64->3
    h = 256
    convs = h * h * 64 * 3 * 49 + (h // 2) ** 2 * 128 * 64 * 9 + (h // 4) ** 2 * 256 * 128 * 9 \
        + 18 * (h // 4) ** 2 * 256 * 256 * 9 + h * h * 3 * 64 * 49
    real = convs + (h // 4) ** 2 * 256 * 128 * 9 + (h // 2) ** 2 * 128 * 64 * 9
    dense = convs + (h // 2) ** 2 * 128 * 256 * 9 + h * h * 64 * 128 * 9
    full = build_generator(GeneratorConfig(arch="resnet_9blocks", ngf=64))
    assert count_macs_torch(full, 256, 256) == {"macs": real, "macs_dense": dense}
    assert round(real / 1e9, 2) == 49.55 and round(dense / 1e9, 2) == 56.80


# ---- the harness with fake backends --------------------------------------------------------------------------


class FakeBackend:
    """tanh(x + offset): deterministic, cheap; `multiple` 4 like a ResNet."""

    def __init__(self, name: str, offset: float = 0.0, fail_at_width: int | None = None) -> None:
        self.name, self.offset, self.fail_at_width = name, offset, fail_at_width
        self.meta = ModelMeta(multiple=4)
        self.closed = False
        self.threads = 2

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if batch.shape[-1] == self.fail_at_width:
            raise RuntimeError("kernel exploded")
        return np.tanh(batch + self.offset).astype(np.float32)

    def close(self) -> None:
        self.closed = True


def _fake_loader(opened: list[FakeBackend]) -> Any:
    def load(path: Path, spec: Spec, threads: int | None) -> FakeBackend:
        if spec.name == "openvino-f32":
            raise RuntimeError("could not compile")
        if spec.name == "torch-cuda":
            raise BackendUnavailableError("no CUDA device")
        backend = {"onnxruntime": FakeBackend("onnxruntime-cpu"),
                   "openvino-bf16": FakeBackend("openvino-bf16", offset=0.01, fail_at_width=44),
                   # a "GPU" backend that quietly runs on CPU: must not be reported as a GPU result
                   "onnxruntime-cuda": FakeBackend("onnxruntime-cpu")}[spec.name]
        opened.append(backend)
        return backend
    return load


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, str], Path, list[Any]]:
    out = tmp_path_factory.mktemp("bench")
    onnx_path = _conv_graph(out / "conv.onnx")
    opened: list[FakeBackend] = []
    # the checkpoint is never opened (fake loader) but makes torch-cuda reach the loader
    cfg = BenchConfig(out_dir=out / "results", onnx=onnx_path, checkpoint=out / "unused.pth", reference="onnxruntime",
                      sizes=[(30, 30), (40, 44)], batches=[1, 2],
                      specs=["onnxruntime", "openvino-bf16", "openvino-f32", "torch-cuda", "onnxruntime-cuda",
                             "tensorrt"], warmup=1, repeats=4, max_seconds=60, peaks=FAKE_PEAKS)
    results = run_bench(cfg, loader=_fake_loader(opened), log=lambda s: None)
    written = write_outputs(results, cfg.out_dir)
    return results, written, cfg.out_dir, opened


def _case(results: dict[str, Any], backend: str, size: str, batch: int) -> dict[str, Any]:
    (hit,) = [r for r in results["cases"] if (r["backend"], r["size"], r["batch"]) == (backend, size, batch)]
    return hit


def test_every_requested_case_is_reported(fake_run: Any) -> None:
    results, _, _, opened = fake_run
    assert len(results["cases"]) == 6 * 2 * 2  # nothing dropped
    assert all(b.closed for b in opened)
    for size in ("30x30", "40x44"):
        for batch in (1, 2):
            assert _case(results, "onnxruntime", size, batch)["status"] == "ok"
            assert _case(results, "openvino-f32", size, batch)["status"] == "failed: RuntimeError: could not compile"
            assert _case(results, "torch-cuda", size, batch)["status"] == "unavailable: no CUDA device"
            fell_back = _case(results, "onnxruntime-cuda", size, batch)
            assert fell_back["status"].startswith("unavailable:") and "onnxruntime-cpu" in fell_back["status"]
            assert fell_back["fps"] is None and fell_back["samples_ms"] == []
            assert _case(results, "tensorrt", size, batch)["status"].startswith("unavailable: needs --engine")
    # a failure in one size leaves the other sizes of that backend measured
    assert _case(results, "openvino-bf16", "40x44", 1)["status"] == "failed: RuntimeError: kernel exploded"
    assert _case(results, "openvino-bf16", "30x30", 2)["status"] == "ok"


def test_numbers_computed_from_samples(fake_run: Any) -> None:
    results, _, _, _ = fake_run
    assert results["reference"] == {"spec": "onnxruntime", "status": "ok: onnxruntime-cpu"}
    r = _case(results, "openvino-bf16", "30x30", 2)
    assert (r["run_height"], r["run_width"]) == (32, 32)  # rounded up to the backend's multiple
    assert len(r["samples_ms"]) == r["stats_ms"]["n"] == 4
    assert r["stats_ms"]["p50"] == pytest.approx(latency_stats(r["samples_ms"])["p50"], rel=1e-4)
    assert r["fps"] == pytest.approx(2 * 1e3 / r["stats_ms"]["p50"])
    assert r["macs_per_frame"] == _hand_macs(32, 32)[0]
    assert r["gflops"] == pytest.approx(2 * r["macs_per_frame"] * 2 / (r["stats_ms"]["p50"] / 1e3) / 1e9)
    assert results["model"]["macs"]["32x32"]["from"] == "onnx"
    # % of the peak measured through the case's library at its precision (peak_fakes: openvino bf16 300)
    assert r["peak_gflops"] == 300.0 and r["peak_source"] == "openvino-bf16 peak"
    assert r["pct_peak"] == pytest.approx(100 * r["gflops"] / 300.0)
    # parity against the reference backend's output on the same frame
    x = bench.make_input(1, 32, 32, 0)[0]
    expected = parity(np.tanh(x), np.tanh(x + 0.01))
    assert r["max_abs"] == pytest.approx(expected["max_abs"]) and r["psnr_db"] == pytest.approx(expected["psnr_db"])
    ref = _case(results, "onnxruntime", "30x30", 2)
    assert ref["speedup"] == pytest.approx(1.0) and ref["max_abs"] == 0.0
    assert r["speedup"] == pytest.approx(r["fps"] / ref["fps"])


def test_result_files(fake_run: Any) -> None:
    results, written, out, _ = fake_run
    assert {"results.json", "results.csv", "results.md"} <= set(written)
    data = json.loads((out / "results.json").read_text())
    assert data["schema"] == bench.SCHEMA
    for key in ("created", "machine", "settings", "model", "reference", "baseline", "cases", "video", "notes"):
        assert key in data
    cpu = data["machine"]["cpu"]
    assert isinstance(cpu["model"], str) and cpu["physical_cores"] >= 1
    assert cpu["peak_gflops"] == {"fp32": 150.0, "bf16": 300.0, "int8": 600.0}  # the best measured, per precision
    assert data["peaks"] == FAKE_PEAKS and set(cpu["isa"]) >= {"AVX2", "AVX-512", "AMX"}
    assert isinstance(data["machine"]["versions"]["python"], str)
    keys = set(data["cases"][0])
    for case in data["cases"]:
        assert set(case) == keys and isinstance(case["status"], str)
        if case["status"] == "ok":
            assert all(isinstance(v, float) for v in case["samples_ms"])
            assert set(case["stats_ms"]) == {"n", "p50", "p90", "p99", "mean", "min", "max", "std"}
            assert isinstance(case["fps"], float) and isinstance(case["max_abs"], float)
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == len(results["cases"]) and tuple(rows[0]) == CSV_FIELDS
    md = (out / "results.md").read_text()
    assert "failed: RuntimeError: could not compile" in md and "unavailable: no CUDA device" in md
    cases_table = md.split("\n\n")[0]  # then the notes, then the measured peaks' table
    assert sum(line.startswith("| ") for line in cases_table.splitlines()) == len(results["cases"]) + 1  # header+rows
    assert sum(line.startswith("| ") for line in md.split("\n\n")[-1].splitlines()) == len(FAKE_PEAKS["entries"]) + 1
    if "latency.png" in written:
        assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


def test_readme_performance_section(fake_run: Any, tmp_path: Path) -> None:
    import importlib.util

    results, _, out, _ = fake_run
    spec = importlib.util.spec_from_file_location(
        "make_readme_perf", Path(__file__).resolve().parents[2] / "benchmarks" / "make_readme_perf.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "results.json").write_text((out / "results.json").read_text())
    text = module.build(tmp_path, tmp_path)
    assert "## Performance" in text and "GMAC" in text and "peak" in text
    assert "| onnxruntime-cpu | 1 | fp32 |" in text  # one row per backend and batch, sizes as columns
    assert "failed: RuntimeError: could not compile" in text  # failures stay visible in the README too
    assert "### GPU" in text and "Not measured yet" in text


def test_time_budget_stops_early(tmp_path: Path) -> None:
    cfg = BenchConfig(out_dir=tmp_path, onnx=_conv_graph(tmp_path / "c.onnx"), specs=["onnxruntime"],
                      sizes=[(8, 8)], warmup=1, repeats=1000, max_seconds=0.0)
    results = run_bench(cfg, loader=_fake_loader([]), log=lambda s: None)
    (case,) = results["cases"]
    assert case["stats_ms"]["n"] == bench.MIN_REPEATS and case["budget_truncated"] is True


def test_case_record_keys_are_the_results_schema() -> None:
    # results.json "cases" rows (and results.csv, made from them) keep exactly these keys in this order
    record = bench.CaseResult.planned(parse_spec("onnxruntime"), 30, 40, 2)
    assert list(record.as_dict()) == [
        "backend", "backend_name", "device", "precision", "options", "height", "width", "size", "run_height",
        "run_width", "batch", "status", "threads", "load_s", "first_call_ms", "samples_ms", "stats_ms",
        "budget_truncated", "ms_per_frame", "fps", "speedup", "macs_per_frame", "gflops", "peak_gflops", "pct_peak",
        "max_abs", "psnr_db", "max_u8", "peak_source", "throughput_fps", "throughput_inflight", "throughput_mode",
        "throughput_speedup", "device_ms"]
    assert record.as_dict()["size"] == "30x40" and record.status == "not run"


def test_import_stays_light() -> None:
    import subprocess
    import sys

    heavy = ("torch", "onnx", "onnxruntime", "openvino", "tensorrt", "cyclegan_deploy.export", "cyclegan_deploy.train")
    code = f"import sys, cyclegan_deploy.bench; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


class ScaledBackend(FakeBackend):
    """A x2 super-resolution fake: nearest-neighbour upsampling of tanh(x + offset)."""

    def __init__(self, name: str, offset: float = 0.0, upsample: bool = True) -> None:
        super().__init__(name, offset)
        self.meta = ModelMeta(multiple=4, scale=2)
        self.upsample = upsample

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        y = super().__call__(batch)
        return y.repeat(2, axis=2).repeat(2, axis=3) if self.upsample else y


def test_scaled_model_output_and_parity(tmp_path: Path) -> None:
    def load(path: Path, spec: Spec, threads: int | None) -> ScaledBackend:
        return {"onnxruntime": ScaledBackend("onnxruntime-cpu"),
                "openvino-bf16": ScaledBackend("openvino-bf16", offset=0.01),
                "openvino-f32": ScaledBackend("openvino-cpu", upsample=False)}[spec.name]

    cfg = BenchConfig(out_dir=tmp_path, onnx=_conv_graph(tmp_path / "c.onnx"), reference="onnxruntime",
                      specs=["onnxruntime", "openvino-bf16", "openvino-f32"], sizes=[(30, 30)], warmup=1, repeats=3)
    results = run_bench(cfg, loader=load, log=lambda s: None)
    ok = _case(results, "openvino-bf16", "30x30", 1)
    assert ok["status"] == "ok" and (ok["run_height"], ok["run_width"]) == (32, 32)
    x = bench.make_input(1, 32, 32, 0)[0]
    up = np.tanh(x).repeat(2, axis=1).repeat(2, axis=2)
    assert ok["max_abs"] == pytest.approx(parity(up, np.tanh(x + 0.01).repeat(2, axis=1).repeat(2, axis=2))["max_abs"])
    assert _case(results, "onnxruntime", "30x30", 1)["max_abs"] == 0.0
    bad = _case(results, "openvino-f32", "30x30", 1)  # scale 2 on the card, but 1x output: not a result
    assert bad["status"].startswith("failed: bad output") and bad["fps"] is None


def test_unknown_spec_fails_before_running(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown bench backend"):
        run_bench(BenchConfig(out_dir=tmp_path, specs=["onnxruntime", "tensorflow"]), loader=_fake_loader([]))


def test_video_mode_reports_pipeline_and_inference_fps(tmp_path: Path) -> None:
    pytest.importorskip("av")
    from cyclegan_deploy.sample_media import make_sample_video

    clip = make_sample_video(tmp_path / "clip.mp4", frames=6, size=(30, 40), audio=None)
    cfg = BenchConfig(out_dir=tmp_path / "r", onnx=_conv_graph(tmp_path / "c.onnx"), specs=["onnxruntime"],
                      sizes=[(8, 8)], batches=[2], warmup=1, repeats=3, video=clip)
    results = run_bench(cfg, loader=_fake_loader([]), log=lambda s: None)
    video = results["video"]
    assert video["status"] == "ok" and video["backend"] == "onnxruntime" and video["frames"] == 6
    assert video["run_size"] == [32, 40]  # the clip's size rounded up to the backend's multiple
    assert video["inflight"] == 1  # a backend without an async queue: both sides measured one batch at a time
    assert video["end_to_end_vs_inference"] == pytest.approx(video["end_to_end_fps"] / video["inference_only_fps"])
    assert set(video["stage_busy_s"]) >= {"decode", "inference", "encode"}
    assert Path(video["output"]).is_file()
    write_outputs(results, cfg.out_dir)
    assert "Video end-to-end" in (cfg.out_dir / "results.md").read_text()


def test_device_time_from_cuda_events_is_reported_beside_the_wall_clock(tmp_path: Path) -> None:
    """A backend that measures its model's device time (torch CUDA, TensorRT: CUDA events) gets device_ms
    stats from its timed calls; one that does not gets none."""

    class Timed(FakeBackend):
        def __call__(self, batch: np.ndarray) -> np.ndarray:
            self.device_ms = 2.0 + 0.5 * (batch.shape[0] - 1)
            return super().__call__(batch)

    def load(path: Path, spec: Spec, threads: int | None) -> FakeBackend:
        return Timed("openvino-bf16") if spec.name == "openvino-bf16" else FakeBackend("onnxruntime-cpu")

    cfg = BenchConfig(out_dir=tmp_path / "r", onnx=_conv_graph(tmp_path / "c.onnx"), reference="onnxruntime",
                      specs=["onnxruntime", "openvino-bf16"], sizes=[(8, 8)], batches=[1, 2], warmup=1, repeats=3)
    results = run_bench(cfg, loader=load, log=lambda s: None)
    timed = _case(results, "openvino-bf16", "8x8", 2)
    assert timed["device_ms"]["p50"] == 2.5 and timed["device_ms"]["n"] == 3
    assert _case(results, "onnxruntime", "8x8", 1)["device_ms"] is None
    write_outputs(results, cfg.out_dir)
    md = (cfg.out_dir / "results.md").read_text()
    assert "Device time p50 (CUDA events" in md and "openvino-bf16 8x8 batch 2: 2.50 ms (wall " in md
    rows = list(csv.DictReader((cfg.out_dir / "results.csv").open()))
    assert [r["device_p50_ms"] for r in rows if r["backend"] == "openvino-bf16"] == ["2.0", "2.5"]


def test_video_mode_times_a_uint8_backend_on_its_uint8_call(tmp_path: Path, tiny_generator_file: Path) -> None:
    """torch with device_io (what CUDA runs by default): the pipeline calls run_uint8, and so does the
    inference-only side, so the percentage compares the same call."""
    pytest.importorskip("av")
    pytest.importorskip("torch")
    from cyclegan_deploy.sample_media import make_sample_video

    clip = make_sample_video(tmp_path / "clip.mp4", frames=4, size=(30, 40), audio=None)
    spec = "torch:device_io=true"
    cfg = BenchConfig(out_dir=tmp_path / "r", checkpoint=tiny_generator_file, specs=[spec], sizes=[(32, 32)],
                      batches=[2], warmup=1, repeats=3, video=clip, video_backend=spec, reference=spec)
    results = run_bench(cfg, log=lambda s: None)
    video = results["video"]
    assert video["status"] == "ok" and video["inference_io"] == "uint8" and video["frames"] == 4
    assert video["end_to_end_vs_inference"] == pytest.approx(video["end_to_end_fps"] / video["inference_only_fps"])
    write_outputs(results, cfg.out_dir)
    assert "pre/post-processing on the device" in (cfg.out_dir / "results.md").read_text()


# ---- the real CLI on the tiny model ----------------------------------------------------------------------------


def test_cli_bench_tiny_model(tmp_path: Path, tiny_generator_file: Path, tiny_onnx: Path) -> None:
    pytest.importorskip("onnxruntime")
    from cyclegan_deploy.cli import main

    out = tmp_path / "res"
    rc = main(["bench", "--checkpoint", str(tiny_generator_file), "--model", str(tiny_onnx), "-o", str(out),
               "--backends", "torch,onnxruntime,tensorrt", "--sizes", "32x36", "--batch", "1,2",
               "--repeats", "3", "--warmup", "1", "--threads", "1"])
    assert rc == 0
    data = json.loads((out / "results.json").read_text())
    assert data["reference"]["status"] == "ok: torch-cpu"
    ort = [c for c in data["cases"] if c["backend"] == "onnxruntime"]
    assert [c["status"] for c in ort] == ["ok", "ok"]
    assert all(c["max_abs"] < 1e-4 for c in ort)  # ORT fp32 vs torch fp32 on the same frame
    assert all(c["threads"] == 1 for c in ort)
    assert data["model"]["macs"]["32x36"]["macs"] > 0
    trt = [c for c in data["cases"] if c["backend"] == "tensorrt"]
    assert len(trt) == 2 and all(c["status"].startswith("unavailable:") for c in trt)


def test_cli_bench_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cyclegan_deploy.cli import main

    assert main(["bench", "-o", str(tmp_path / "r")]) == 1
    assert "give at least one of --checkpoint" in capsys.readouterr().err
    assert main(["bench", "--model", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "r")]) == 1
    assert "missing.onnx: no such file" in capsys.readouterr().err


def _stub_make_graphs(monkeypatch: pytest.MonkeyPatch, onnx: Path, fail: dict[bool, Exception]) -> list[Any]:
    """Replace export.pipeline.make_graphs (the export stage) by a copy of `onnx`; fail[fp16] raises."""
    pipeline = pytest.importorskip("cyclegan_deploy.export.pipeline")
    calls: list[Any] = []

    def make_graphs(checkpoint: Path, out_dir: Path, fp16: bool, echo: Any) -> dict[str, Path]:
        calls.append((checkpoint, out_dir, fp16))
        if fp16 in fail:
            raise fail[fp16]
        out_dir.mkdir(parents=True, exist_ok=True)
        made = {"onnx": out_dir / "g_AtoB.onnx"}
        made["onnx"].write_bytes(onnx.read_bytes())
        if fp16:
            made["onnx-fp16"] = out_dir / "g_AtoB.fp16.onnx"
            made["onnx-fp16"].write_bytes(onnx.read_bytes())
        echo("made")
        return made

    monkeypatch.setattr(pipeline, "make_graphs", make_graphs, raising=False)
    return calls


def test_cli_bench_exports_missing_graph_through_the_export_stage(
        tmp_path: Path, tiny_generator_file: Path, tiny_onnx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    from cyclegan_deploy.cli import main

    calls = _stub_make_graphs(monkeypatch, tiny_onnx, {})
    out = tmp_path / "res"
    rc = main(["bench", "--checkpoint", str(tiny_generator_file), "-o", str(out), "--backends", "torch,onnxruntime",
               "--sizes", "32x32", "--repeats", "3", "--warmup", "1", "--threads", "1"])
    assert rc == 0
    assert calls == [(tiny_generator_file, out / "artifacts", False)]  # no FP16 backend asked: no FP16 graph
    data = json.loads((out / "results.json").read_text())
    assert [c["status"] for c in data["cases"]] == ["ok", "ok"]
    assert data["model"]["artifacts"]["onnx"] == str(out / "artifacts" / "g_AtoB.onnx")
    assert any("for the ONNX-based backends" in n for n in data["notes"])


@pytest.mark.parametrize(("error", "status"), [
    (ImportError("No module named 'onnxscript'"), "unavailable: making the onnx artifact needs No module named"),
    (RuntimeError("boom"), "failed: making the onnx artifact failed: RuntimeError: boom"),
])
def test_graph_that_cannot_be_made_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception,
                                               status: str) -> None:
    from cyclegan_deploy.commands.bench_cmd import make_graphs_for

    _stub_make_graphs(monkeypatch, _conv_graph(tmp_path / "c.onnx"), {False: error})
    cfg = make_graphs_for(BenchConfig(out_dir=tmp_path / "r", checkpoint=tmp_path / "g.pth", specs=["onnxruntime"],
                                      reference="onnxruntime", sizes=[(8, 8)], warmup=1, repeats=1), echo=print)
    results = run_bench(cfg, loader=_fake_loader([]), log=lambda s: None)
    assert results["cases"][0]["status"].startswith(status)
    assert not (tmp_path / "r" / "artifacts").exists()


def test_fp16_failure_keeps_the_fp32_graph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cyclegan_deploy.commands.bench_cmd import make_graphs_for
    from cyclegan_deploy.errors import ParityError

    calls = _stub_make_graphs(monkeypatch, _conv_graph(tmp_path / "c.onnx"), {True: ParityError("fp16 at 31 dB")})
    cfg = make_graphs_for(BenchConfig(out_dir=tmp_path / "r", checkpoint=tmp_path / "g.pth", reference="onnxruntime",
                                      specs=["onnxruntime", "onnxruntime-cuda-fp16"], sizes=[(8, 8)], warmup=1,
                                      repeats=1), echo=print)
    assert [c[2] for c in calls] == [True, False]  # FP16 failed: retried for the FP32 graph alone
    results = run_bench(cfg, loader=_fake_loader([]), log=lambda s: None)
    assert _case(results, "onnxruntime", "8x8", 1)["status"] == "ok"
    assert _case(results, "onnxruntime-cuda-fp16", "8x8", 1)["status"] == "failed: fp16 at 31 dB"
    assert results["notes"] == [f"exported {tmp_path / 'r' / 'artifacts' / 'g_AtoB.onnx'} from {tmp_path / 'g.pth'} "
                                "for the ONNX-based backends"]


def test_fp16_graph_is_made_from_a_given_model(tiny_onnx: Path, tmp_path: Path) -> None:
    """--model alone: the *-fp16 ONNX specs get that graph's FP16 conversion (real export stage, no stub)."""
    pytest.importorskip("onnxconverter_common")
    from cyclegan_deploy.artifacts import read_card
    from cyclegan_deploy.commands.bench_cmd import make_graphs_for

    cfg = make_graphs_for(BenchConfig(out_dir=tmp_path / "r", onnx=tiny_onnx, specs=["onnxruntime-cuda-fp16"]),
                          echo=lambda _: None)
    assert cfg.onnx == tiny_onnx and cfg.onnx_fp16 == tmp_path / "r" / "artifacts" / "g_AtoB.fp16.onnx"
    assert read_card(cfg.onnx_fp16).precision == "fp16"
    assert any("converted" in n for n in cfg.notes)

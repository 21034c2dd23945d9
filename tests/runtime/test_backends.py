"""Backend conformance: every backend present runs the same seeded tiny generator and must match torch fp32.

Measured on the tiny model (ngf 8, 2 blocks; uniform inputs in [-1, 1]; worst of batch 1/2 at 32x32 and
1x36x52; 2-core AMD EPYC, AVX2, no AVX-512/AMX): onnxruntime-cpu max abs 1.4e-6, openvino-f32 1.8e-6,
torch channels_last 1.2e-6, torch-cpu-bf16 PSNR 52.0 dB (max abs 2.2e-2). openvino-bf16 needs AVX512-BF16
or AMX and is refused here (FACTS.md: ~49 dB on the full model on AMX). Tolerances leave headroom for other
CPUs' kernels, not for a wrong graph: fp32 1e-4 max abs, bf16 >= 40 dB.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cyclegan_deploy.artifacts import onnx_metadata
from cyclegan_deploy.artifacts import read_card as read_onnx_meta
from cyclegan_deploy.backends import UNAVAILABLE, Backend, available_backends, load_backend, parse_backend_spec
from cyclegan_deploy.errors import BackendUnavailableError, ConfigError, ShapeError

FP32_MAX_ABS = 1e-4
GPU_FP32_MAX_ABS = 5e-3  # cuDNN/ORT-CUDA use TF32 convolutions by default on Ampere+
BF16_MIN_PSNR = 40.0  # measured ~53 dB (torch bf16 autocast) on this model
FP16_MIN_PSNR = 45.0
SHAPES = [(1, 32, 32), (2, 32, 32), (1, 36, 52)]  # batch 1, batch 2, non-square


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(4.0 / mse)  # peak-to-peak 2 on [-1, 1]


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _has(name: str) -> bool:
    return not available_backends([name])[name].startswith(UNAVAILABLE)


@pytest.fixture(scope="session")
def inputs() -> dict[tuple[int, int, int], np.ndarray]:
    rng = np.random.default_rng(7)
    return {s: rng.uniform(-1, 1, size=(s[0], 3, s[1], s[2])).astype(np.float32) for s in SHAPES}


@pytest.fixture(scope="session")
def reference(tiny_resnet, inputs) -> dict[tuple[int, int, int], np.ndarray]:
    import torch

    model, _ = tiny_resnet
    with torch.no_grad():
        return {s: model(torch.from_numpy(x)).numpy() for s, x in inputs.items()}


# (id, artifact fixture, backend spec, options, tolerance kind, marks)
CASES: list[Any] = [
    pytest.param("tiny_onnx", "onnxruntime-cpu", {}, "fp32", id="onnxruntime-cpu"),
    pytest.param("tiny_onnx", "openvino-f32", {}, "fp32", id="openvino-f32"),
    pytest.param("tiny_generator_file", "torch-cpu", {}, "fp32", id="torch-cpu-fp32"),
    pytest.param("tiny_generator_file", "torch-cpu", {"channels_last": True}, "fp32", id="torch-cpu-channels-last"),
    pytest.param("tiny_generator_file", "torch-cpu-bf16", {}, "bf16", id="torch-cpu-bf16"),
    pytest.param("tiny_onnx", "onnxruntime-cuda", {}, "gpu32", id="onnxruntime-cuda", marks=pytest.mark.gpu),
    pytest.param("tiny_generator_file", "torch-cuda", {}, "gpu32", id="torch-cuda-fp32", marks=pytest.mark.gpu),
    pytest.param("tiny_generator_file", "torch-cuda-fp16", {}, "fp16", id="torch-cuda-fp16", marks=pytest.mark.gpu),
]
NEEDS = {"onnxruntime-cpu": "onnxruntime", "openvino-f32": "openvino", "torch-cpu": "torch",
         "torch-cpu-bf16": "torch", "onnxruntime-cuda": "onnxruntime-cuda", "torch-cuda": "torch-cuda",
         "torch-cuda-fp16": "torch-cuda"}


def assert_conforms(backend: Backend, kind: str, inputs: dict, reference: dict) -> dict[str, float]:
    assert isinstance(backend, Backend)
    assert backend.meta.arch == "resnet_2blocks" and backend.meta.multiple == 4  # card read from the artifact
    worst = {"max_abs": 0.0, "psnr": float("inf")}
    for shape, x in inputs.items():
        before = x.copy()
        y = backend(x)
        np.testing.assert_array_equal(x, before)  # backends must not write into the caller's batch
        ref = reference[shape]
        assert y.shape == ref.shape and y.dtype == np.float32, (backend.name, shape, y.shape, y.dtype)
        err, quality = float(np.abs(y - ref).max()), psnr(y, ref)
        worst = {"max_abs": max(worst["max_abs"], err), "psnr": min(worst["psnr"], quality)}
        if kind == "fp32":
            assert err <= FP32_MAX_ABS, f"{backend.name} {shape}: max abs {err:.2e} > {FP32_MAX_ABS}"
        elif kind == "gpu32":
            assert err <= GPU_FP32_MAX_ABS, f"{backend.name} {shape}: max abs {err:.2e} > {GPU_FP32_MAX_ABS}"
        else:
            floor = BF16_MIN_PSNR if kind == "bf16" else FP16_MIN_PSNR
            assert quality >= floor, f"{backend.name} {shape}: PSNR {quality:.1f} dB < {floor}"
    return worst


@pytest.mark.parametrize("artifact,spec,options,kind", CASES)
def test_backend_conformance(request, artifact, spec, options, kind, inputs, reference) -> None:
    need = NEEDS[spec]
    if not _has(need):
        pytest.skip(f"{need}: {available_backends([need])[need]}")
    backend = load_backend(request.getfixturevalue(artifact), spec, **options)
    try:
        worst = assert_conforms(backend, kind, inputs, reference)
        print(f"\n{backend.name}: max abs {worst['max_abs']:.2e}, PSNR {worst['psnr']:.1f} dB")
    finally:
        backend.close()


def test_openvino_bf16_runs_where_the_cpu_can_and_is_refused_elsewhere(tiny_onnx, inputs, reference) -> None:
    pytest.importorskip("openvino")
    if {"amx_bf16", "avx512_bf16"} & cpu_flags():
        backend = load_backend(tiny_onnx, "openvino-bf16")
        assert backend.name == "openvino-bf16"
        worst = assert_conforms(backend, "bf16", inputs, reference)
        print(f"\nopenvino-bf16: max abs {worst['max_abs']:.2e}, PSNR {worst['psnr']:.1f} dB")
    else:  # OpenVINO would quietly run f32; we refuse instead of mislabelling it
        with pytest.raises(BackendUnavailableError, match="asked for bf16 but chose f32"):
            load_backend(tiny_onnx, "openvino", precision="bf16")


def test_openvino_auto_reports_what_it_chose_and_caches_shapes(tiny_onnx, inputs) -> None:
    pytest.importorskip("openvino")
    backend = load_backend(tiny_onnx, "openvino", precision="auto")
    expected = "bf16" if {"amx_bf16", "avx512_bf16"} & cpu_flags() else "f32"
    assert backend.name == f"openvino-{expected}" and backend.precision == expected
    for x in inputs.values():
        backend(x)
    backend(inputs[(1, 32, 32)])
    cached = list(backend._compiled)  # one compiled model per shape, reused, bounded
    assert len(cached) == len(set(cached)) <= 4
    assert (1, 3, 36, 52) in cached


def test_openvino_reads_ir_with_sidecar(tiny_onnx, tmp_path, inputs, reference) -> None:
    ov = pytest.importorskip("openvino")
    xml = tmp_path / "g_AtoB.xml"
    ov.save_model(ov.Core().read_model(str(tiny_onnx)), str(xml), compress_to_fp16=False)
    card = json.loads(onnx_metadata(tiny_onnx)["cgdeploy.model_card"])
    (tmp_path / "g_AtoB.xml.json").write_text(json.dumps({"model_card": card}))
    backend = load_backend(xml)
    assert backend.name == "openvino-f32"
    assert_conforms(backend, "fp32", inputs, reference)


def test_onnx_card_reader_matches_onnx_package(tiny_onnx) -> None:
    onnx = pytest.importorskip("onnx")
    expected = {p.key: p.value for p in onnx.load(str(tiny_onnx)).metadata_props}
    assert onnx_metadata(tiny_onnx) == expected
    assert read_onnx_meta(tiny_onnx).arch == "resnet_2blocks"


def test_foreign_onnx_without_card_gets_marked_defaults(tmp_path) -> None:
    from cyclegan_deploy.doctor import probe_onnx_model

    path = tmp_path / "foreign.onnx"
    path.write_bytes(probe_onnx_model())
    meta = read_onnx_meta(path)
    assert meta.model == "unknown" and "assumed" in meta.extra["card"]


def test_shape_checks(tiny_onnx) -> None:
    pytest.importorskip("onnxruntime")
    backend = load_backend(tiny_onnx, "onnxruntime", device="cpu")
    with pytest.raises(ShapeError, match="multiple of 4"):
        backend(np.zeros((1, 3, 30, 32), np.float32))
    with pytest.raises(ShapeError, match=r"\(N,3,H,W\)"):
        backend(np.zeros((1, 32, 32, 3), np.float32))


# ---- no silent fallback -------------------------------------------------------------------------------------

@pytest.mark.skipif(_has("onnxruntime-cuda"), reason="this machine has a working CUDA provider")
def test_onnxruntime_cuda_on_cpu_machine_is_refused(tiny_onnx) -> None:
    pytest.importorskip("onnxruntime")
    with pytest.raises(BackendUnavailableError, match="CUDAExecutionProvider"):
        load_backend(tiny_onnx, "onnxruntime", device="cuda")
    with pytest.raises(BackendUnavailableError, match="TensorrtExecutionProvider"):
        load_backend(tiny_onnx, "onnxruntime-trt")


@pytest.mark.skipif(_has("torch-cuda"), reason="this machine has CUDA")
def test_torch_cuda_on_cpu_machine_is_refused(tiny_generator_file) -> None:
    with pytest.raises(BackendUnavailableError, match="--device cuda"):
        load_backend(tiny_generator_file, "torch", device="cuda")
    with pytest.raises(BackendUnavailableError, match="fp16 runs on CUDA only"):
        load_backend(tiny_generator_file, "torch", device="cpu", precision="fp16")


def test_onnxruntime_silent_provider_fallback_is_caught(tiny_onnx, monkeypatch) -> None:
    """onnxruntime-gpu without CUDA libraries lists CUDA, starts a session, and runs it on CPU: refuse that."""
    ort = pytest.importorskip("onnxruntime")
    real = ort.InferenceSession

    class CpuOnlySession(real):  # what an ORT without session.disable_cpu_ep_fallback does when CUDA fails to load
        def __init__(self, path: str, sess_options: Any = None, providers: Any = None, **kwargs: Any) -> None:
            super().__init__(path, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", CpuOnlySession)
    with pytest.raises(BackendUnavailableError, match="started only CPUExecutionProvider"):
        load_backend(tiny_onnx, "onnxruntime", device="cuda")
    auto = load_backend(tiny_onnx, "onnxruntime")  # "auto" may settle for CPU, and its name says so
    assert auto.name == "onnxruntime-cpu"


# ---- load_backend errors ------------------------------------------------------------------------------------

def test_missing_and_unknown_files(tmp_path) -> None:
    with pytest.raises(ConfigError, match="nope.onnx: no such file"):
        load_backend(tmp_path / "nope.onnx")
    odd = tmp_path / "model.bin"
    odd.write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"model.bin: unknown model file type '.bin'.*\.onnx"):
        load_backend(odd)


def test_backend_artifact_mismatch_and_bad_options(tiny_onnx, tiny_generator_file) -> None:
    with pytest.raises(ConfigError, match="torch backend cannot read a .onnx"):
        load_backend(tiny_onnx, "torch")
    with pytest.raises(ConfigError, match="tensorrt backend cannot read a .onnx.*--engine"):
        load_backend(tiny_onnx, "tensorrt")
    with pytest.raises(ConfigError, match="unknown backend 'tflite'"):
        load_backend(tiny_onnx, "tflite")
    with pytest.raises(ConfigError, match="does not take option"):
        load_backend(tiny_onnx, "onnxruntime", compile=True)
    with pytest.raises(ConfigError, match="graph's own precision"):
        load_backend(tiny_onnx, "onnxruntime", precision="bf16")
    with pytest.raises(ConfigError, match="disagree"):
        load_backend(tiny_generator_file, "torch-cuda", device="cpu")


def test_parse_backend_spec() -> None:
    assert parse_backend_spec("onnxruntime-cuda") == ("onnxruntime", {"device": "cuda"})
    assert parse_backend_spec("ort-trt") == ("onnxruntime", {"device": "tensorrt"})
    assert parse_backend_spec("openvino-bf16") == ("openvino", {"precision": "bf16"})
    assert parse_backend_spec("torch-cuda-fp16") == ("torch", {"device": "cuda", "precision": "fp16"})
    assert parse_backend_spec("auto") == ("auto", {})
    with pytest.raises(ConfigError, match="variant 'xyz'"):
        parse_backend_spec("torch-xyz")


def test_available_backends_reports_versions_or_reasons() -> None:
    report = available_backends()
    assert set(report) >= {"onnxruntime", "openvino", "torch", "tensorrt", "onnxruntime-cuda"}
    if pytest.importorskip("onnxruntime"):
        import onnxruntime

        assert report["onnxruntime"] == onnxruntime.__version__
    if report["tensorrt"].startswith(UNAVAILABLE):
        assert "TensorRT" in report["tensorrt"] or "tensorrt" in report["tensorrt"]


def test_backends_package_import_is_light() -> None:
    import subprocess

    code = ("import sys, cyclegan_deploy.backends, cyclegan_deploy.backends.tensorrt; "
            "print([m for m in ('torch','onnxruntime','openvino','tensorrt','onnx') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---- TensorRT (stand-in tests of the backend's own logic: test_tensorrt_backend.py) -----------------------

@pytest.mark.gpu
def test_tensorrt_engine_conformance(tiny_onnx, tmp_path, inputs, reference) -> None:
    if not _has("tensorrt"):
        pytest.skip(available_backends(["tensorrt"])["tensorrt"])
    from cyclegan_deploy.export import tensorrt as trt_export

    plan = tmp_path / "g_AtoB.plan"
    profile = trt_export.derive_profile(read_onnx_meta(tiny_onnx), "1x32x32", "1x32x32", "2x64x64")
    trt_export.build_engine(tiny_onnx, plan, profile)
    backend = load_backend(plan)
    assert backend.name == "tensorrt" and backend.precision == "fp32"
    worst = assert_conforms(backend, "gpu32", inputs, reference)
    print(f"\n{backend.name}: max abs {worst['max_abs']:.2e}, PSNR {worst['psnr']:.1f} dB")
    with pytest.raises(ShapeError, match="outside the engine's optimization profile"):
        backend(np.zeros((4, 3, 32, 32), np.float32))
    backend.close()


def test_backend_base_validates_every_batch_once(tiny_onnx) -> None:
    """A backend subclass implements only _run; the base class's __call__ refuses bad batches for it."""
    from cyclegan_deploy.metadata import ModelMeta

    calls = []

    class Echo(Backend):
        name, meta = "echo", ModelMeta(multiple=4)

        def _run(self, batch: np.ndarray) -> np.ndarray:
            calls.append(batch.dtype)
            return batch

        def close(self) -> None:
            calls.append("closed")

    with Echo() as echo:
        with pytest.raises(ShapeError, match="echo: 30x32 is not a multiple of 4"):
            echo(np.zeros((1, 3, 30, 32), np.float32))
        with pytest.raises(ShapeError, match=r"\(N,3,H,W\)"):
            echo(np.zeros((1, 32, 32, 3), np.float32))
        assert echo(np.zeros((1, 3, 32, 32), np.float64)).dtype == np.float32  # converted once, before _run
    assert calls == [np.float32, "closed"]


def test_precision_names_are_case_insensitive(tiny_onnx, tiny_generator_file) -> None:
    """(The TensorRT engine's aliases and its refusal of --threads: test_tensorrt_backend.py.)"""
    with load_backend(tiny_generator_file, "torch", device="cpu", precision="AUTO") as backend:
        assert backend.precision == "fp32"
    with load_backend(tiny_onnx, "onnxruntime", device="cpu", precision=" Auto ") as backend:
        assert backend.precision == "fp32"
    if _has("openvino"):
        with load_backend(tiny_onnx, "openvino", precision="F32") as backend:
            assert backend.name == "openvino-f32"

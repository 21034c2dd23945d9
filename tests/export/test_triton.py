"""`cgdeploy export --triton-repo`: the model repository, its config parsed by Triton's own ModelConfig message
(tritonclient ships the message definitions; it is in the dev extra), and the overwrite/name rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_checks import leftovers, one_error, run_cli

from cyclegan_deploy.cli import main
from cyclegan_deploy.errors import ConfigError, OutputError
from cyclegan_deploy.export.triton import TritonOptions, check_name, write_model
from cyclegan_deploy.metadata import ModelMeta

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
text_format = pytest.importorskip("google.protobuf.text_format")


def parse(folder: Path):  # -> model_config_pb2.ModelConfig
    """config.pbtxt parsed strictly (unknown fields, bad enums or syntax raise) into Triton's ModelConfig."""
    return text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def exported(tiny_generator_file, tmp_path_factory):
    """One CLI export of the tiny generator with a Triton repository (CPU instances, batch 2, 2 instances)."""
    root = tmp_path_factory.mktemp("triton")
    out, repo = root / "out", root / "repo"
    rc = main(["export", str(tiny_generator_file), "-o", str(out), "--triton-repo", str(repo),
               "--triton-max-batch", "2", "--triton-instances", "2", "--triton-device", "cpu"])
    return rc, out, repo


def test_onnx_repository(exported):
    rc, out, repo = exported
    assert rc == 0
    folder = repo / "g_AtoB"  # default name: the artifact's
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) == [
        "1", "1/model.onnx", "cgdeploy_card.json", "config.pbtxt"]
    assert not (folder / "1" / "model.onnx").is_symlink()
    assert (folder / "1" / "model.onnx").read_bytes() == (out / "g_AtoB.onnx").read_bytes()
    card = ModelMeta.from_json((folder / "cgdeploy_card.json").read_text())
    cfg = parse(folder)
    assert (cfg.name, cfg.platform, cfg.max_batch_size) == ("g_AtoB", "onnxruntime_onnx", 2)
    assert [(t.name, t.data_type, list(t.dims)) for t in cfg.input] == [
        (card.input_name, model_config_pb2.TYPE_FP32, [3, -1, -1])]
    assert [(t.name, t.data_type, list(t.dims)) for t in cfg.output] == [
        (card.output_name, model_config_pb2.TYPE_FP32, [3, -1, -1])]
    assert cfg.HasField("dynamic_batching") and 0 < cfg.dynamic_batching.max_queue_delay_microseconds <= 1000
    assert [(g.kind, g.count) for g in cfg.instance_group] == [(model_config_pb2.ModelInstanceGroup.KIND_CPU, 2)]
    assert not cfg.HasField("optimization")
    assert (card.direction, card.precision, card.multiple) == ("AtoB", "fp32", 4)
    assert "multiples of 4" in (folder / "config.pbtxt").read_text()  # the client's duties, said in the file
    assert not leftovers(repo)


def test_existing_model_refused_without_force(exported, tiny_generator_file, tmp_path, capsys):
    _, _, repo = exported
    before = (repo / "g_AtoB" / "config.pbtxt").read_text()
    code, _, err = run_cli(capsys, "export", tiny_generator_file, "-o", tmp_path / "out2", "--triton-repo", repo)
    assert code == 1
    one_error(err, str(repo / "g_AtoB"), "--force")
    assert (repo / "g_AtoB" / "config.pbtxt").read_text() == before
    assert not (tmp_path / "out2").exists()  # refused before any export work


@pytest.mark.parametrize("args", [["--triton-name", "../up"], ["--triton-name", ".hidden"],
                                  ["--triton-trt", "--triton-device", "cpu"], ["--triton-max-batch", "0"],
                                  ["--triton-trt", "--engine"]])
def test_bad_triton_options_refused(args, tiny_generator_file, tmp_path, capsys):
    code, _, err = run_cli(capsys, "export", tiny_generator_file, "-o", tmp_path / "out", "--triton-repo",
                           tmp_path / "repo", *args)
    assert code == 1
    one_error(err, args[0])
    assert not (tmp_path / "repo").exists() and not (tmp_path / "out").exists()


def test_engine_batch_beyond_profile_refused(tiny_generator_file, tmp_path, capsys):
    """Triton sends batches up to max_batch_size: more than the engine's profile takes is refused up front."""
    code, _, err = run_cli(capsys, "export", tiny_generator_file, "-o", tmp_path / "out", "--engine",
                           "--max-shape", "2x256x256", "--triton-repo", tmp_path / "repo", "--triton-max-batch", "4")
    assert code == 1
    one_error(err, "--triton-max-batch 4", "--max-shape")
    assert not (tmp_path / "repo").exists() and not (tmp_path / "out").exists()


def test_names_per_direction(tmp_path):
    from cyclegan_deploy.export.triton import model_names

    assert model_names(TritonOptions(repo=tmp_path), ["AtoB", "BtoA"]) == {"AtoB": "g_AtoB", "BtoA": "g_BtoA"}
    assert model_names(TritonOptions(repo=tmp_path, name="h2z"), ["AtoB", "BtoA"]) == {
        "AtoB": "h2z_AtoB", "BtoA": "h2z_BtoA"}
    assert model_names(TritonOptions(repo=tmp_path, name="h2z"), ["BtoA"]) == {"BtoA": "h2z"}


def test_triton_option_without_repo_refused(tiny_generator_file, tmp_path, capsys):
    code, _, err = run_cli(capsys, "export", tiny_generator_file, "-o", tmp_path / "out", "--triton-trt")
    assert code == 1
    one_error(err, "--triton-repo")


@pytest.mark.parametrize("name", ["cyclegan_AtoB", "horse2zebra-v2.1", "_x"])
def test_valid_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "a/b", "..", "-x", "a b", "x" * 129])
def test_invalid_names(name):
    with pytest.raises(ConfigError, match="--triton-name"):
        check_name(name)


def test_tensorrt_accelerator_on_fp16_graph(tiny_fp16, tmp_path):
    """--triton-trt: the ONNX Runtime backend's TensorRT block parses; the FP16 graph keeps float32 I/O."""
    from cyclegan_deploy.artifacts import read_card
    from cyclegan_deploy.export.triton import graph_io_dtype

    card = read_card(tiny_fp16)
    opts = TritonOptions(repo=tmp_path, tensorrt=True)
    folder = write_model(tmp_path, "cyclegan_AtoB", tiny_fp16, card, opts, graph_io_dtype(tiny_fp16))
    cfg = parse(folder)
    assert cfg.platform == "onnxruntime_onnx" and cfg.input[0].data_type == model_config_pb2.TYPE_FP32
    assert [(g.kind, g.count) for g in cfg.instance_group] == [(model_config_pb2.ModelInstanceGroup.KIND_GPU, 1)]
    (accel,) = cfg.optimization.execution_accelerators.gpu_execution_accelerator
    assert accel.name == "tensorrt"
    assert accel.parameters["precision_mode"] == "FP16"
    assert accel.parameters["trt_profile_max_shapes"].startswith(f"{card.input_name}:4x3x")
    assert (folder / "1" / "model.onnx").read_bytes() == tiny_fp16.read_bytes()


def test_plan_repository(tmp_path):
    """An engine is served as tensorrt_plan (a fake engine file: TensorRT is not installable here)."""
    plan = tmp_path / "g_BtoA.plan"
    plan.write_bytes(b"not really an engine" * 10)
    meta = ModelMeta(direction="BtoA", precision="fp16", input_name="x", output_name="y")
    folder = write_model(tmp_path / "repo", "g_BtoA", plan, meta, TritonOptions(repo=tmp_path / "repo"), "TYPE_FP32")
    cfg = parse(folder)
    assert (cfg.platform, cfg.max_batch_size) == ("tensorrt_plan", 4)
    assert [(t.name, list(t.dims)) for t in (*cfg.input, *cfg.output)] == [("x", [3, -1, -1]), ("y", [3, -1, -1])]
    assert (folder / "1" / "model.plan").read_bytes() == plan.read_bytes()
    assert json.loads((folder / "cgdeploy_card.json").read_text())["precision"] == "fp16"
    with pytest.raises(ConfigError, match="--triton-trt"):
        write_model(tmp_path / "repo2", "g_BtoA", plan, meta, TritonOptions(repo=tmp_path, tensorrt=True),
                    "TYPE_FP32")
    # the overwrite rule, and --force replacing the whole folder in one rename
    with pytest.raises(OutputError, match="--force"):
        write_model(tmp_path / "repo", "g_BtoA", plan, meta, TritonOptions(repo=tmp_path / "repo"), "TYPE_FP32")
    (folder / "stale.txt").write_text("old")
    write_model(tmp_path / "repo", "g_BtoA", plan, meta, TritonOptions(repo=tmp_path / "repo", max_batch=8),
                "TYPE_FP32", force=True)
    assert parse(folder).max_batch_size == 8 and not (folder / "stale.txt").exists()
    assert not leftovers(tmp_path)

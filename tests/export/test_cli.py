"""`cgdeploy export` as a user runs it: a reference-format checkpoint, and --engine without TensorRT."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from cyclegan_deploy.cli import main
from cyclegan_deploy.export.validate import ort_session, sample_images
from cyclegan_deploy.frames import to_model
from cyclegan_deploy.metadata import ModelMeta


@pytest.fixture(scope="session")
def reference_checkpoint(tiny_resnet, tmp_path_factory):
    """A bare state_dict as the reference saves it, with the running stats old PyTorch wrote under
    InstanceNorm2d(track_running_stats=False) layers, named like a CycleGAN G_B file."""
    model, _ = tiny_resnet
    state = dict(model.state_dict())
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.InstanceNorm2d):
            state[f"{name}.running_mean"] = torch.zeros(module.num_features)
            state[f"{name}.running_var"] = torch.ones(module.num_features)
            state[f"{name}.num_batches_tracked"] = torch.tensor(0)
    path = tmp_path_factory.mktemp("ref") / "latest_net_G_B.pth"
    torch.save(state, path)
    return path


@pytest.fixture(scope="session")
def reference_export(reference_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref_out")
    rc = main(["export", str(reference_checkpoint), "-o", str(out)])
    return rc, out


def test_reference_checkpoint_exports(reference_export, tiny_resnet):
    rc, out = reference_export
    assert rc == 0
    path = out / "g_BtoA.onnx"  # direction from the file name
    assert sorted(p.name for p in out.iterdir()) == ["g_BtoA.onnx", "g_BtoA.parity.json"]
    proto = onnx.load(str(path))
    card = ModelMeta.from_props({p.key: p.value for p in proto.metadata_props})
    assert (card.arch, card.ngf, card.norm, card.direction, card.source) == (
        "resnet_2blocks", 8, "instance", "BtoA", "latest_net_G_B.pth")
    assert len(card.source_sha256) == 64 and card.train_size == 256
    assert not [i.name for i in proto.graph.initializer if "running" in i.name]
    report = json.loads((out / "g_BtoA.parity.json").read_text())
    assert report["passed"] and [c["shape"] for c in report["cases"]] == [[2, 3, 256, 256], [2, 3, 192, 320]]
    # the exported graph computes what the original torch model computes
    model, _ = tiny_resnet
    x = to_model(sample_images(1, 60, 84, seed=3))
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.abs(ort_session(path).run(None, {"input": x})[0] - ref).max() < 1e-5


def test_engine_without_tensorrt_keeps_onnx(tiny_generator_file, tmp_path_factory, capsys):
    out = tmp_path_factory.mktemp("engine_out")
    rc = main(["export", str(tiny_generator_file), "-o", str(out), "--fp16", "--engine", "--target", "openvino",
               "--opt-shape", "64x64"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert len(err) == 1 and err[0].startswith("error: TensorRT is not installed")
    assert "the ONNX artifacts were written" in err[0] and "--engine" in err[0]
    names = {p.name for p in out.iterdir()}
    assert {"g_AtoB.onnx", "g_AtoB.parity.json", "g_AtoB.fp16.onnx", "g_AtoB.fp16.parity.json",
            "g_AtoB.fp16.safety.json", "g_AtoB.xml", "g_AtoB.bin", "g_AtoB.xml.json", "g_AtoB.xml.parity.json"} <= names
    assert not {n for n in names if n.endswith(".plan") or n.startswith(".")}  # no engine, no temp leftovers
    card = ModelMeta.from_json((out / "g_AtoB.xml.json").read_text())
    assert card.precision == "fp32" and card.extra["openvino_inference_precision"] == "f32"
    assert json.loads((out / "g_AtoB.fp16.safety.json").read_text())["verdict"].startswith("FP16 verdict")


def test_bad_options_exit_1_before_work(tiny_generator_file, tmp_path, capsys):
    assert main(["export", str(tiny_generator_file), "-o", str(tmp_path), "--direction", "both"]) == 1
    assert "single generator file has one direction" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing.pth"), "-o", str(tmp_path)]) == 1
    assert "no such checkpoint" in capsys.readouterr().err
    assert main(["export", str(tiny_generator_file), "-o", str(tmp_path), "--engine-io", "uint8"]) == 1
    assert "--engine-io uint8 applies to TensorRT engines; add --engine" in capsys.readouterr().err
    assert main(["export", str(tiny_generator_file), "-o", str(tmp_path), "--engine", "--engine-io", "u8"]) == 1
    assert "--engine-io 'u8': choose one of float32, uint8" in capsys.readouterr().err
    assert main(["export", str(tiny_generator_file), "-o", str(tmp_path), "--engine", "--engine-io", "uint8",
                 "--triton-repo", str(tmp_path / "repo")]) == 1
    assert "--triton-repo serves float32 tensors" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_directions_of_run_dirs_and_files(tmp_path):
    from cyclegan_deploy.errors import ConfigError
    from cyclegan_deploy.export.pipeline import ExportOptions, _directions

    run = tmp_path / "run"
    run.mkdir()
    (run / "latest_net_G_A.pth").write_bytes(b"")
    assert _directions(ExportOptions(run, tmp_path)) == ["AtoB"]  # pix2pix-like: one generator
    with pytest.raises(ConfigError, match="needs latest_net_G_A.pth and latest_net_G_B.pth"):
        _directions(ExportOptions(run, tmp_path, direction="both"))
    (run / "latest_net_G_B.pth").write_bytes(b"")
    assert _directions(ExportOptions(run, tmp_path)) == ["AtoB", "BtoA"]
    assert _directions(ExportOptions(run, tmp_path, direction="BtoA")) == ["BtoA"]
    assert _directions(ExportOptions(run / "latest_net_G_B.pth", tmp_path)) == [None]  # from the name/card


def test_failed_gate_moves_the_artifact_aside(tmp_path):
    from cyclegan_deploy.errors import ParityError
    from cyclegan_deploy.export.pipeline import ExportResult, gate

    artifact = tmp_path / "g_AtoB.fp16.onnx"
    artifact.write_bytes(b"graph")

    def failing():
        raise ParityError(f"{artifact}: parity gate failed (PSNR 20.0 dB < 40.0 dB)")

    with pytest.raises(ParityError, match=r"moved to g_AtoB\.fp16\.rejected\.onnx"):
        gate(failing, artifact, ExportResult())
    assert not artifact.exists() and (tmp_path / "g_AtoB.fp16.rejected.onnx").read_bytes() == b"graph"

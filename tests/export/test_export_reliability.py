"""`cgdeploy export` against the reliability floor, driven as a user would (in-process main() + capsys): one
test per class of failure.

Every refusal checks: exit code 1, one `error:` line naming the file (or option) and the fix, no traceback, no
partial, temp, probe or lock files left, no output folder created for nothing, and the checkpoint unchanged
(sha256).
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from cli_checks import leftovers, one_error, run_cli, sha256
from faults import refuse_writes

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from cyclegan_deploy.errors import ParityError  # noqa: E402
from cyclegan_deploy.export.tensorrt import tensorrt_unavailable  # noqa: E402
from cyclegan_deploy.train.checkpoints import save_generator  # noqa: E402


@pytest.fixture
def checkpoint(tiny_generator_file: Path) -> Iterator[Path]:
    """The tiny generator file; after the test it must be byte-for-byte what it was."""
    before = sha256(tiny_generator_file)
    yield tiny_generator_file
    assert sha256(tiny_generator_file) == before


def _export(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    return run_cli(capsys, "export", *args)


def _one_error(err: str, *names: str) -> str:
    return one_error(err, *names, alone=True, no_warnings=True)


def _save_state(path: Path, state: dict, protocol: int = 2) -> Path:
    torch.save(state, path, pickle_protocol=protocol)
    return path


# ---- 1. non-finite numbers: NaN weights refused at load; NaN/inf outputs fail the parity gate --------------

def test_non_finite_weights_and_outputs_fail(tiny_resnet, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, meta = tiny_resnet
    state = model.state_dict()
    nan = _save_state(tmp_path / "nan_net_G_A.pth",
                      {k: v * float("nan") if v.is_floating_point() else v for k, v in state.items()})
    before = sha256(nan)
    out = tmp_path / "out"
    code, _, err = _export(capsys, nan, "-o", out)
    assert code == 1
    _one_error(err, f"{nan}: tensor 'model.1.weight' holds", "NaN/inf", "earlier checkpoint")
    assert not out.exists() and sha256(nan) == before

    # finite weights whose first conv overflows float32: the model outputs NaN, which used to "pass" (NaN > tol
    # is False); the report stays strict JSON
    overflow = _save_state(tmp_path / "overflow_net_G_A.pth",
                           {**state, "model.1.weight": torch.full_like(state["model.1.weight"], 3e38)})
    code, _, err = _export(capsys, overflow, "-o", out)
    assert code == 1
    _one_error(err, f"{out / 'g_AtoB.onnx'}: parity gate failed", "NaN/inf values", "another checkpoint")
    report = json.loads((out / "g_AtoB.parity.json").read_text(),
                        parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert report["passed"] is False and report["max_abs"] is None and report["cases"][0]["nonfinite_reference"]
    assert not (out / "g_AtoB.onnx").exists() and (out / "g_AtoB.rejected.onnx").exists() and not leftovers(tmp_path)

    # the gate itself, for a candidate that alone outputs NaN/inf
    from cyclegan_deploy.export.validate import validate_candidate

    def broken(x: np.ndarray) -> np.ndarray:
        y = np.zeros((x.shape[0], 3, *x.shape[2:]), np.float32)
        y[0, 0, 0, 0], y[-1, -1, -1, -1] = np.nan, np.inf
        return y

    with pytest.raises(ParityError, match="candidate-x outputs 4 NaN/inf values"):
        validate_candidate(model, meta, broken, artifact=tmp_path / "x.onnx", candidate="candidate-x",
                           precision="fp32", echo=False)
    assert json.loads((tmp_path / "x.parity.json").read_text())["min_psnr_db"] is None


# ---- 2. OS errors: read-only output folder, disk full mid-export -----------------------------------------

def test_os_errors_name_the_file_and_leave_nothing(checkpoint: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "readonly"
    out.mkdir()
    with monkeypatch.context() as m:
        refuse_writes(m, out, errno.EACCES)
        code, _, err = _export(capsys, checkpoint, "-o", out)
    assert code == 1
    _one_error(err, str(out), "Permission denied", "choose another output folder")
    assert list(out.iterdir()) == []

    import onnx

    def full_disk(proto: object, f: str, *args: object, **kwargs: object) -> None:
        Path(f).write_bytes(b"half a graph")  # what a writer leaves when the disk fills up
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f)

    monkeypatch.setattr(onnx, "save_model", full_disk)
    out = tmp_path / "new" / "out"
    code, _, err = _export(capsys, checkpoint, "-o", out, "--no-validate")
    assert code == 1  # the final name, not the temp file that was being written
    _one_error(err, f"{out / 'g_AtoB.onnx'}: No space left on device", "free space")
    assert list(tmp_path.iterdir()) == [tmp_path / "readonly"]  # the folders made for the export are gone too


# ---- 4. resource bounds: an absurd TensorRT profile is refused before any export work ----------------------

def test_absurd_max_shape_is_refused_with_the_memory_it_needs(checkpoint: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code, stdout, err = _export(capsys, checkpoint, "-o", out, "--engine", "--max-shape", "64x65536x65536")
    assert code == 1
    _one_error(err, "--max-shape 64x65536x65536", "GiB of GPU memory", "lower --max-shape")
    assert "wrote" not in stdout and not out.exists()


# ---- 6. concurrency: a second export into the same folder is refused, naming the holder's PID -------------

def test_a_second_export_into_the_same_folder_is_refused(checkpoint: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time\nfrom pathlib import Path\nfrom cyclegan_deploy.outputs import locked"
         f"\nwith locked(Path({str(out)!r})):\n    print('held', flush=True)\n    time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        code, stdout, err = _export(capsys, checkpoint, "-o", out)
        assert code == 1
        _one_error(err, str(out), f"PID {holder.pid}", "wait for it to finish")
        assert not out.exists() and stdout == ""
    finally:
        holder.kill()
        holder.wait()


# ---- 7. overwrite rule: existing outputs are refused unless --force; a clean run prints no library noise --

def test_existing_outputs_are_refused_unless_force(checkpoint: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code, stdout, err = _export(capsys, checkpoint, "-o", out, "--no-validate")
    assert code == 0 and err == "", err  # nothing but our own lines (no exporter log records or warnings)
    assert all(line.startswith(("loaded ", "wrote ", "done: ", "  g_")) for line in stdout.splitlines()), stdout
    before = {p: sha256(p) for p in out.iterdir()}
    code, stdout, err = _export(capsys, checkpoint, "-o", out)
    assert code == 1
    _one_error(err, f"{out / 'g_AtoB.onnx'}: the output file already exists", "--force")
    assert {p: sha256(p) for p in out.iterdir()} == before and "wrote" not in stdout
    code, _, err = _export(capsys, checkpoint, "-o", out, "--force")
    assert code == 0, err
    assert {p.name for p in out.iterdir()} == {"g_AtoB.onnx", "g_AtoB.parity.json"} and not leftovers(tmp_path)


# ---- 9. misleading messages: what exactly is wrong with a checkpoint, no torch warnings, no empty folders --

def test_bad_checkpoints_say_what_is_wrong(tiny_resnet, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, _ = tiny_resnet
    state = model.state_dict()
    missing = {k: v for k, v in state.items() if k != "model.10.conv_block.5.weight"}
    wrong = {**state, "model.10.conv_block.1.weight": torch.zeros(8, 8, 3, 3)}
    cases = {
        "random.pth": (b"\x93\x12" + bytes(range(256)) * 8, "not a PyTorch checkpoint"),
        "pickle4.pth": (pickle.dumps({"weights": [1.0, 2.0]}, protocol=4), "not a PyTorch checkpoint"),
        "missing_net_G_A.pth": (missing, "1 missing key(s): model.10.conv_block.5.weight [32, 32, 3, 3];"),
        "extra_net_G_A.pth": ({**state, "head.weight": torch.zeros(3)}, "1 unexpected key(s): head.weight [3];"),
        "shape_net_G_A.pth": (wrong, "1 wrong shape(s): model.10.conv_block.1.weight [8, 8, 3, 3] (model "
                                     "[32, 32, 3, 3])"),
        "proto4_net_G_A.pth": (state, "saved with pickle protocol 4, which torch.load(weights_only=True)"),
    }
    for name, (content, expected) in cases.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            _save_state(path, content, protocol=4 if name.startswith("proto4") else 2)
        before = sha256(path)
        out = tmp_path / "exports" / name
        code, _, err = _export(capsys, path, "-o", out)
        assert code == 1, name
        line = _one_error(err, f"{path}: ", expected)  # _one_error: no "Detected pickle protocol" UserWarning
        assert "the keys fit" not in line and sha256(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(cases)  # no (empty) output folders


# ---- 10. UX: --engine without TensorRT says so before the ONNX work and gives every direction's trtexec ---

@pytest.mark.skipif(tensorrt_unavailable() is None, reason="TensorRT is installed here")
def test_engine_without_tensorrt_says_so_first_and_prints_every_trtexec(
        tiny_resnet, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, meta = tiny_resnet
    run = tmp_path / "run"
    for tag in ("G_A", "G_B"):
        save_generator(model, meta, run / f"latest_net_{tag}.pth")
    out = tmp_path / "out"
    code, stdout, err = _export(capsys, run, "-o", out, "--engine", "--no-validate")
    assert code == 1
    _one_error(err, "TensorRT is not installed", "the ONNX artifacts were written", "trtexec")
    lines = stdout.splitlines()
    note = next(i for i, line in enumerate(lines) if line.startswith("note: TensorRT is not installed"))
    assert note < min(i for i, line in enumerate(lines) if line.startswith("wrote "))
    commands = [line for line in lines if "trtexec --onnx=" in line]
    assert [c.split(":", 1)[0] for c in commands] == ["to build g_AtoB.plan on a machine with TensorRT",
                                                      "to build g_BtoA.plan on a machine with TensorRT"]
    assert f"--saveEngine={out / 'g_BtoA.plan'}" in commands[1]
    assert {p.name for p in out.iterdir()} == {"g_AtoB.onnx", "g_BtoA.onnx"}

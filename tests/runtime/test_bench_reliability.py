"""`cgdeploy bench` against the reliability floor, driven as a user would (in-process main() + capsys):
OS errors on -o, resource bounds, sizes below the model's smallest input (run padded, labelled), a bad
--video, the overwrite rule and the lock, SIGTERM, and a table that fits 80 columns / stays plain when piped.

Every CLI test checks: the exit code, one `error:` line naming the file, no traceback, no partial, temp or
lock files left, and the model files unchanged (sha256).
"""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_checks import leftovers, one_error, run_cli, sha256  # noqa: E402
from faults import refuse_writes

from cyclegan_deploy import bench
from cyclegan_deploy.bench import limits
from cyclegan_deploy.cli import main
from cyclegan_deploy.metadata import ModelMeta

pytest.importorskip("onnxruntime")
QUICK = ["--repeats", "3", "--warmup", "1", "--max-seconds", "1", "--threads", "1"]





@pytest.fixture
def model(tiny_onnx: Path, tiny_generator_file: Path) -> Iterator[Path]:
    """The tiny ONNX model; after the test, both model files must be byte-for-byte what they were."""
    before = {p: sha256(p) for p in (tiny_onnx, tiny_generator_file)}
    yield tiny_onnx
    assert {p: sha256(p) for p in before} == before


def _bench(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    return run_cli(capsys, "bench", *args)


_one_error, _leftovers = one_error, leftovers


# ---- 1. OS errors on the results folder -------------------------------------------------------------------


@pytest.mark.parametrize("code", [errno.EACCES, errno.ENOSPC])
def test_unwritable_results_folder_is_refused_before_any_case(
        model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        code: int) -> None:
    ran: list[Any] = []
    monkeypatch.setattr(bench, "run_bench", lambda *a, **k: ran.append(a))
    parent = tmp_path / "disk"
    parent.mkdir()
    refuse_writes(monkeypatch, parent, code)
    out = parent / "res"
    rc, stdout, err = _bench(capsys, "--model", str(model), "-o", str(out), "--backends", "onnxruntime",
                             "--sizes", "32x32", *QUICK)
    assert rc == 1 and ran == [] and stdout == ""
    _one_error(err, str(out), os.strerror(code), alone=True)
    assert not out.exists() and _leftovers(tmp_path) == []


def test_disk_full_while_writing_results_leaves_no_partial_set(
        model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "res"
    real = bench.run_bench

    def run_then_fill(*args: Any, **kwargs: Any) -> dict[str, Any]:
        results = real(*args, **kwargs)
        refuse_writes(monkeypatch, out, errno.ENOSPC)  # the disk fills after the cases ran
        return results

    monkeypatch.setattr(bench, "run_bench", run_then_fill)
    rc, _, err = _bench(capsys, "--model", str(model), "-o", str(out), "--backends", "onnxruntime",
                        "--sizes", "32x32", *QUICK)
    assert rc == 1
    _one_error(err, str(out / "latency.png"), "No space left on device", "free space")
    assert not out.exists()  # this run created it and wrote no results: nothing left behind
    assert _leftovers(tmp_path) == []


# ---- 2. resource bounds -------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["--sizes", "100000x100000"], ["--sizes", "2048x2048", "--batch", "100000"]])
def test_case_that_cannot_fit_in_memory_is_refused_up_front(
        model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    out = tmp_path / "res"
    t = time.perf_counter()
    rc, _, err = _bench(capsys, "--model", str(model), "-o", str(out), "--backends", "onnxruntime", *args, *QUICK)
    assert rc == 1 and time.perf_counter() - t < 10  # refused, not attempted
    line = _one_error(err, str(model), "needs about", "is available", "--batch", alone=True)
    assert "activations" in line and "input" in line and "output" in line
    assert not out.exists() and _leftovers(tmp_path) == []


def test_memory_estimate_against_a_small_machine(model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    meta = ModelMeta(arch="resnet_2blocks", family="resnet", ngf=8, n_blocks=2)
    need = limits.case_memory(meta, 30, 30, 64)  # run at 32x32
    assert need == {"input": 4 * 64 * 3 * 32 * 32, "output": 4 * 64 * 3 * 32 * 32,
                    "activations": 4 * 64 * 8 * 32 * 32 * limits.ACTIVATION_FACTOR}
    monkeypatch.setattr(limits, "available_memory", lambda: 10_000_000)  # 10 MB free
    rc, _, err = _bench(capsys, "--model", str(model), "-o", str(tmp_path / "res"), "--backends", "onnxruntime",
                        "--sizes", "32x32", "--batch", "1,64", *QUICK)
    assert rc == 1
    _one_error(err, "--sizes 32x32 --batch 64", "10.0 MB is available", alone=True)
    assert not (tmp_path / "res").exists()


def test_gpu_case_checks_host_and_gpu_memory_apart() -> None:
    from cyclegan_deploy.errors import ConfigError

    meta = ModelMeta(ngf=64)
    need = limits.case_memory(meta, 720, 1280, 4)
    io_bytes = need["input"] + need["output"]
    case = [("cuda", 720, 1280, 4, "--sizes 720x1280 --batch 4")]
    limits.check_memory(meta, case, host=io_bytes + 1, gpu=need["activations"] + 1)  # activations not on the host
    with pytest.raises(ConfigError, match="of GPU memory for activations"):
        limits.check_memory(meta, case, host=None, gpu=need["activations"] - 1)
    with pytest.raises(ConfigError, match=r"--sizes 720x1280 --batch 4: the model needs about .* but 1.0 GB"):
        limits.check_memory(meta, [("cpu", *case[0][1:])], host=10**9, gpu=None)


# ---- 3. sizes smaller than the model ---------------------------------------------------------------------


def test_small_size_reports_the_size_that_ran(model: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "res"
    rc, stdout, err = _bench(capsys, "--model", str(model), "-o", str(out), "--backends", "onnxruntime",
                             "--sizes", "7x7,32x32", *QUICK)
    assert rc == 0 and "error:" not in err
    assert "7x7 (run 8x8)" in stdout and "32x32 (run" not in stdout
    assert "| 7x7 (run 8x8) |" in (out / "results.md").read_text()
    case = json.loads((out / "results.json").read_text())["cases"][0]
    assert (case["size"], case["run_height"], case["run_width"], case["status"]) == ("7x7", 8, 8, "ok")


def test_size_below_the_models_smallest_input_runs_padded_with_a_note(
        model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """4x6 would leave 1x1 after the ResNet's two halvings (its reflect-pad needs 2): it runs at 8x8, the way the
    runtime pads such a frame, and every report says so."""
    out = tmp_path / "res"
    rc, stdout, err = _bench(capsys, "--model", str(model), "-o", str(out), "--backends", "onnxruntime",
                             "--sizes", "4x6", *QUICK)
    assert rc == 0 and "error:" not in err and "Traceback" not in err
    assert "4x6 (run 8x8)" in stdout
    data = json.loads((out / "results.json").read_text())
    case = data["cases"][0]
    assert (case["status"], case["run_height"], case["run_width"]) == ("ok", 8, 8)
    assert data["reference"]["status"].startswith("ok")
    note = next(n for n in data["notes"] if n.startswith("4x6 is below the smallest input"))
    assert str(model) in note and "8x8" in note
    md = (out / "results.md").read_text()
    assert "| 4x6 (run 8x8) |" in md and note in md


def test_smallest_input_per_family() -> None:
    assert limits.min_side(ModelMeta(arch="resnet_9blocks", family="resnet", multiple=4)) == 8
    assert limits.min_side(ModelMeta(arch="resnet_6blocks", family="", multiple=4)) == 8  # pre-registry card
    assert limits.min_side(ModelMeta(arch="unet_256", family="unet", multiple=256, n_blocks=0)) == 256


# ---- 4. a bad --video ----------------------------------------------------------------------------------------


def test_bad_video_fails_before_running(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("av")
    clip = tmp_path / "bad.mp4"
    clip.write_bytes(b"not a video at all" * 100)
    before = sha256(clip)
    out = tmp_path / "res"
    rc, _, err = _bench(capsys, "--model", str(model), "-o", str(out), "--backends", "onnxruntime",
                        "--sizes", "32x32", "--video", str(clip), *QUICK)
    assert rc == 1
    _one_error(err, str(clip), "not a readable video", alone=True)
    assert not out.exists() and sha256(clip) == before and _leftovers(tmp_path) == []


def test_video_that_cannot_run_fails_after_writing_the_results(
        model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("av")
    from cyclegan_deploy.sample_media import make_sample_video

    clip = make_sample_video(tmp_path / "clip.mp4", frames=4, size=(32, 32), audio=None)
    before = sha256(clip)
    out = tmp_path / "res"
    rc, stdout, err = _bench(capsys, "--model", str(model), "-o", str(out), "--backends", "onnxruntime",
                             "--sizes", "32x32", "--video", str(clip), "--video-backend", "tensorrt", *QUICK)
    assert rc == 1
    _one_error(err, str(clip), "video benchmark did not run", "needs --engine", str(out / "results.md"))
    data = json.loads((out / "results.json").read_text())  # the inference results that ran are kept
    assert data["cases"][0]["status"] == "ok" and data["video"]["status"].startswith("unavailable")
    assert "wrote" in stdout and sha256(clip) == before and _leftovers(tmp_path) == []


# ---- 5. overwrite rule, lock, interrupted runs ---------------------------------------------------------


def test_existing_results_are_refused_without_force(model: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "res"
    args = ["--model", str(model), "-o", str(out), "--backends", "onnxruntime", "--sizes", "32x32", *QUICK]
    assert _bench(capsys, *args)[0] == 0
    first = sha256(out / "results.json")
    rc, _, err = _bench(capsys, *args)
    assert rc == 1
    _one_error(err, str(out / "results.json"), "--force", alone=True)
    assert sha256(out / "results.json") == first
    assert _bench(capsys, *args, "--force")[0] == 0
    assert sha256(out / "results.json") != first and _leftovers(tmp_path) == []


def test_a_second_run_to_the_same_folder_is_refused(model: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from cyclegan_deploy.outputs import locked

    out = tmp_path / "res"
    with locked(out):  # another bench holds -o
        rc, _, err = _bench(capsys, "--model", str(model), "-o", str(out), "--backends", "onnxruntime",
                            "--sizes", "32x32", *QUICK)
        assert rc == 1
        _one_error(err, str(out), "in use by another cgdeploy process", str(os.getpid()), alone=True)
        assert not out.exists()  # the folder this run made to check it was writable is gone again
    assert _leftovers(tmp_path) == []


def test_sigterm_mid_run_leaves_no_folder(model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    def terminated(*args: Any, **kwargs: Any) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # cli.main turns it into Terminated in this thread
        time.sleep(5)
        raise AssertionError("SIGTERM was not delivered")

    monkeypatch.setattr(bench, "run_bench", terminated)
    out = tmp_path / "res"
    rc, _, err = _bench(capsys, "--model", str(model), "-o", str(out), "--backends", "onnxruntime",
                        "--sizes", "32x32", *QUICK)
    assert rc == 143 and "terminated" in err and "Traceback" not in err
    assert not out.exists() and _leftovers(tmp_path) == []


# ---- 6. the printed table ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def four_backends(tiny_onnx: Path, tiny_generator_file: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    pytest.importorskip("openvino")
    out = tmp_path_factory.mktemp("table") / "res"
    assert main(["bench", "--checkpoint", str(tiny_generator_file), "--model", str(tiny_onnx), "-o", str(out),
                 "--backends", "torch,onnxruntime,openvino-f32,openvino-bf16,tensorrt", "--sizes", "7x7,32x32",
                 "--batch", "1,2", *QUICK]) == 0
    return json.loads((out / "results.json").read_text())


def _expected_cells(results: dict[str, Any]) -> tuple[set[str], set[str]]:
    from cyclegan_deploy.bench.report import _fmt

    names = {c["backend_name"] if c["status"] == "ok" else c["backend"] for c in results["cases"]}
    p50s = {_fmt(c["stats_ms"]["p50"]) for c in results["cases"] if c["status"] == "ok"}
    return names, p50s


def _cell_present(text: str, cell: str) -> bool:
    """`cell` as a whole word of some line (not the start of a longer, or a cut, value)."""
    return any(cell in line.split() for line in text.splitlines())


def test_table_fits_80_columns_on_a_terminal(four_backends: dict[str, Any]) -> None:
    from rich.console import Console

    buf = io.StringIO()
    bench.print_table(four_backends, Console(file=buf, width=80, force_terminal=True, color_system=None))
    text = buf.getvalue()
    table = text.split("\n\n")[0].splitlines()
    assert all(len(line.rstrip()) <= 80 for line in text.splitlines()), text
    assert "…" not in text and not set("┏━┃│┡╇└") & set(text)
    names, p50s = _expected_cells(four_backends)
    assert len(names) == 5 and all(_cell_present(text, n) for n in names), text
    assert all(_cell_present(text, p) for p in p50s), text
    assert "7x7 (run 8x8)" in text and "p99 ms" not in table[1]  # a low-value column made room
    assert "tensorrt: unavailable: needs --engine" in " ".join(text.split())  # the reason in full, below


def test_table_is_plain_and_complete_when_piped(four_backends: dict[str, Any], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    bench.print_table(four_backends)  # capsys: stdout is not a terminal
    text = capsys.readouterr().out
    header = text.splitlines()[0].split()
    assert header[:2] == ["backend", "size"] and "p99" in header and "abs" in header  # every column
    assert "…" not in text and not set("┏━┃│┡╇└") & set(text)
    names, p50s = _expected_cells(four_backends)
    assert all(_cell_present(text, n) for n in names) and all(_cell_present(text, p) for p in p50s), text
    rows = [line for line in text.splitlines()[1:] if line.split() and line.split()[0] in names]
    assert len(rows) == len(four_backends["cases"])  # one line per case, none wrapped

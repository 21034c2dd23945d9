"""`cgdeploy train` and `cgdeploy data synth` against the reliability floor, driven as a user would (in-process
main() + capsys; a real process for SIGTERM): one test per class of failure.

Every refusal checks: exit code 1, one `error:` line naming the file (or option) and the fix, no traceback, no
partial, temp, probe or lock files left, no empty folder created, and the input data unchanged (sha256).
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_checks import leftovers, one_error, run_cli, sha256
from faults import refuse_writes

torch = pytest.importorskip("torch")

from cyclegan_deploy.train.loop import CHECKPOINT  # noqa: E402
from cyclegan_deploy.train.synthetic import write_synthetic  # noqa: E402

TINY = ["--ngf", "8", "--ndf", "8", "--n-blocks", "1", "--crop-size", "32", "--load-size", "32", "--workers", "0",
        "--device", "cpu", "--epochs", "1", "--epochs-decay", "0"]


def _hashes(root: Path) -> dict[Path, str]:
    return {p: sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def _synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("syn") / "data", n_train=4, n_test=2, size=32)


@pytest.fixture
def data(_synth: Path) -> Iterator[Path]:
    """The tiny synthetic data root; after the test, every file in it must be byte-for-byte what it was."""
    before = _hashes(_synth)
    yield _synth
    assert _hashes(_synth) == before


_run, _one_error, _leftovers = run_cli, one_error, leftovers


# ---- 2. OS errors: read-only folder, full disk (torch's zip writer included), mid-way through data synth ----

def test_os_errors_name_the_file_and_leave_nothing_partial(data: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    locked_dir = tmp_path / "readonly"
    locked_dir.mkdir()
    with monkeypatch.context() as m:
        refuse_writes(m, locked_dir, errno.EACCES)
        code, _, err = _run(capsys, "train", str(data), "-o", str(locked_dir / "run"), *TINY)
    assert code == 1
    _one_error(err, str(locked_dir), "Permission denied", "choose another output folder")
    assert list(locked_dir.iterdir()) == []

    def full_disk(obj: object, f: object, *args: object, **kwargs: object) -> None:  # what torch raises on ENOSPC
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 1088 vs 1024")

    run = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(torch, "save", full_disk)
        code, _, err = _run(capsys, "train", str(data), "-o", str(run), *TINY)
    assert code == 1
    _one_error(err, str(run / "latest_net_G_A.pth"), "disk is probably full")
    assert not _leftovers(tmp_path) and not (run / "latest_net_G_A.pth").exists()

    from cyclegan_deploy.train import synthetic

    real_save, saved = synthetic._save_png, []

    def disk_fills_up(img: object, path: Path) -> None:
        if len(saved) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        saved.append(path)
        real_save(img, path)  # type: ignore[arg-type]

    monkeypatch.setattr(synthetic, "_save_png", disk_fills_up)
    out = tmp_path / "new" / "data"
    code, _, err = _run(capsys, "data", "synth", str(out), "--n-train", "4", "--n-test", "2", "--size", "32")
    assert code == 1  # named by its final path, not the temp folder it was written in
    _one_error(err, f"{out / 'trainB' / '000001.png'}: No space left on device", "the disk is full")
    assert not (tmp_path / "new").exists()


# ---- 3. SIGTERM: a resumable checkpoint, exit 143, and --resume continues --------------------------------

def test_sigterm_saves_a_checkpoint_that_resume_continues(data: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    args = ["train", str(data), "-o", str(run), *TINY[:-4], "--epochs", "1000", "--epochs-decay", "0"]
    proc = subprocess.Popen([sys.executable, "-m", "cyclegan_deploy", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.stderr is not None
    seen = []
    deadline = time.monotonic() + 90
    for line in proc.stderr:  # the first epoch is done: a checkpoint exists and training goes on
        seen.append(line)
        if "done, iteration" in line or time.monotonic() > deadline:
            break
    assert proc.poll() is None, "".join(seen)
    time.sleep(0.3)  # inside the next epoch's steps
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=60)
    err = "".join(seen) + rest
    assert proc.returncode == 143, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "terminated (SIGTERM)"
    assert "saved" in err and "continue with --resume" in err
    state = torch.load(run / CHECKPOINT, weights_only=True)
    assert state["iteration"] >= 4 and not _leftovers(tmp_path)
    epoch, iteration = int(state["epoch"]), int(state["iteration"])

    code, out, err = _run(capsys, "train", str(data), "-o", str(run), "--resume", "--epochs", str(epoch))
    assert code == 0, err
    assert f"resuming {run} at epoch {epoch}/{epoch}, iteration {iteration}" in err
    assert f"done: {epoch} epochs, {4 * epoch} iterations" in out


# ---- 4. resource bounds: absurd sizes refused with the memory they need, before anything is allocated -----

def test_absurd_sizes_are_refused_with_the_memory_they_need(data: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "runs" / "big"
    code, _, err = _run(capsys, "train", str(data), "-o", str(run), *TINY, "--crop-size", "65536",
                        "--load-size", "65536")
    assert code == 1
    line = _one_error(err, "--crop-size 65536", "GiB", "lower --crop-size")
    assert "free on cpu" in line
    code, _, err = _run(capsys, "data", "synth", str(tmp_path / "syn"), "--size", "1000000")
    assert code == 1
    _one_error(err, "--size 1000000", "GiB")
    assert list(tmp_path.iterdir()) == []  # no run dir, no parent folder, no data folder


# ---- 6. concurrency: a second run on the same run dir is refused, naming the holder's PID -----------------

def test_a_second_process_on_the_same_run_dir_is_refused(data: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "runs" / "same"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\nfrom cyclegan_deploy.outputs import locked"
         f"\nwith locked(Path({str(run)!r})):\n    print('held', flush=True)\n    time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        code, _, err = _run(capsys, "train", str(data), "-o", str(run), *TINY)
        assert code == 1
        _one_error(err, str(run), f"PID {holder.pid}", "in use by another cgdeploy process")
        assert not run.exists()
    finally:
        holder.kill()
        holder.wait()
    assert _run(capsys, "train", str(data), "-o", str(run), *TINY)[0] == 0  # released with its holder


# ---- 7. overwrite rule: an existing run or data folder is refused unless --force -------------------------

def test_existing_outputs_are_refused_unless_force(data: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert _run(capsys, "train", str(data), "-o", str(run), *TINY)[0] == 0
    (run / "notes.txt").write_text("mine")
    before = _hashes(run)
    code, _, err = _run(capsys, "train", str(data), "-o", str(run), *TINY)
    assert code == 1
    _one_error(err, str(run / CHECKPOINT), "--resume", "--force")
    assert _hashes(run) == before
    code, out, err = _run(capsys, "train", str(data), "-o", str(run), *TINY, "--force")
    assert code == 0 and "done: 1 epochs, 4 iterations" in out, err
    assert (run / "notes.txt").read_text() == "mine"  # only the run's own files are deleted
    assert torch.load(run / CHECKPOINT, weights_only=True)["iteration"] == 4  # a new run, not a continued one

    out_dir = tmp_path / "syn"
    assert _run(capsys, "data", "synth", str(out_dir), "--n-train", "1", "--n-test", "1", "--size", "16")[0] == 0
    before = _hashes(out_dir)
    code, _, err = _run(capsys, "data", "synth", str(out_dir), "--n-train", "2", "--n-test", "1", "--size", "16")
    assert code == 1
    _one_error(err, f"{out_dir}: the output folder already exists", "--force")
    assert _hashes(out_dir) == before
    code, _, err = _run(capsys, "data", "synth", str(out_dir), "--n-train", "2", "--n-test", "1", "--size", "16",
                        "--force")
    assert code == 0 and len(list((out_dir / "trainA").iterdir())) == 2 and not _leftovers(tmp_path)


# ---- 9. misleading output: failed runs leave no empty folders, no torch noise before a refusal ------------

def test_failed_runs_leave_no_empty_folders(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "a" / "b" / "run"
    code, _, err = _run(capsys, "train", str(tmp_path / "missing"), "-o", str(run), *TINY)
    assert code == 1
    _one_error(err, str(tmp_path / "missing"), "data root not found")
    assert list(tmp_path.iterdir()) == []
    code, _, err = _run(capsys, "train", str(data), "-o", str(run), *TINY, "--resume")
    assert code == 1 and list(tmp_path.iterdir()) == []
    _one_error(err, "config.json")


# ---- 10. UX: workers fit the machine, --resume says where it resumes --------------------------------------

def test_default_workers_fit_the_machine(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cyclegan_deploy.machine import allowed_cpus
    from cyclegan_deploy.train.config import TrainConfig

    assert 1 <= TrainConfig().num_workers <= min(4, allowed_cpus())
    args = TINY[:10] + TINY[12:]  # without --workers
    code, _, err = _run(capsys, "train", str(data), "-o", str(tmp_path / "run"), *args)
    assert code == 0, err
    assert "This DataLoader will create" not in err and "warning" not in err
    code, _, err = _run(capsys, "train", str(data), "-o", str(tmp_path / "run2"), *TINY[:-8], "--workers",
                        str(allowed_cpus() + 1), *TINY[-6:])
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and f"--workers {allowed_cpus() + 1} is more than" in warnings[0], err

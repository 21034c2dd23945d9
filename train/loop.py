"""The training loop both trainers share: epochs, checkpoints (resumable to the bit), logs, samples, progress,
Ctrl-C / SIGTERM and a wall-clock budget; the run dir is locked for the whole run and checked (writable, room
in memory for a step, no earlier run unless --force) before the first step.

Exact resume rests on three things: the data order and per-sample randomness come from (seed, epoch, index)
(see data.py), the image pools draw from their own checkpointed RNGs, and the global torch/numpy/python RNG
states are saved with the weights, optimizers and schedulers. A run split anywhere at an iteration boundary
(epoch end, Ctrl-C, --max-minutes) and resumed gives the same losses and weights as an unsplit one.
"""

from __future__ import annotations

import math
import random
import shutil
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import numpy as np
import torch

from cyclegan_deploy.artifacts import write_json
from cyclegan_deploy.errors import CheckpointError, ConfigError
from cyclegan_deploy.outputs import check_writable, locked, output_errors, removed_if_failed
from cyclegan_deploy.train.base import GanModel, check_memory, resolve_device
from cyclegan_deploy.train.checkpoints import atomic_save, safe_load
from cyclegan_deploy.train.config import CONFIG_NAME, TrainConfig
from cyclegan_deploy.train.cyclegan import CycleGAN
from cyclegan_deploy.train.data import TORCH_WORKER_WARNING, EpochSampler, build_dataset, make_loader, sample_seed
from cyclegan_deploy.train.distill import Distiller
from cyclegan_deploy.train.losses import python_rng_state, set_python_rng_state
from cyclegan_deploy.train.pix2pix import Pix2Pix
from cyclegan_deploy.train.runlog import LOSSES_CSV, LOSSES_PNG, LossLog, plot_losses, save_grid
from cyclegan_deploy.train.srgan import SRGAN
from cyclegan_deploy.train.synthetic import evaluate_synthetic, is_synthetic

TRAINERS: dict[str, type[GanModel]] = {"cyclegan": CycleGAN, "pix2pix": Pix2Pix, "distill": Distiller, "srgan": SRGAN}
STATE_FORMAT = "cgdeploy-train-state"
CHECKPOINT = Path("checkpoints") / "latest.pt"
SYNTHETIC_EVAL = "synthetic_eval.json"
DISTILL_EVAL = "distill_eval.json"  # student vs teacher at the end of a distillation (train/evaluate.py)
SR_EVAL = "sr_eval.json"  # SR and bicubic vs HR on the held-out pairs at the end of an srgan run (train/sr_eval.py)
# options that may change when a run is resumed; anything else would make it a different run
RESUMABLE = frozenset({"dataroot", "run_dir", "epochs", "epochs_decay", "max_minutes", "num_workers", "device",
                       "save_every", "samples", "vgg_weights"})  # vgg_weights: the path; its sha256 is fixed

Log = Callable[[str], None]


@dataclass
class TrainResult:
    run_dir: Path
    epochs_done: int
    iterations: int
    elapsed_s: float
    stopped_early: bool
    last_losses: dict[str, float] = field(default_factory=dict)
    synthetic: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None  # distillation: the student-vs-teacher eval report


def resume_config(run_dir: str | Path, **overrides: Any) -> TrainConfig:
    """The run's saved config with the given overrides (None = keep); only RESUMABLE options may change."""
    cfg = TrainConfig.load(run_dir)
    changed = {k: v for k, v in overrides.items() if v is not None and getattr(cfg, k, object()) != v}
    fixed = sorted(k for k in changed if k not in RESUMABLE)
    if fixed:
        raise ConfigError(f"{Path(run_dir) / CONFIG_NAME}: --resume keeps the run's settings, but "
                          f"{', '.join('--' + k.replace('_', '-') for k in fixed)} differ; drop them, or start a new "
                          "run in another folder")
    data = cfg.to_dict() | changed
    data["run_dir"] = str(run_dir)
    return TrainConfig.from_dict(data)


# --- RNG state as plain tensors/ints/lists (weights_only-loadable) ---

def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # type: ignore[misc]
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached": float(cached)},
            "python": python_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    set_python_rng_state(None, state["python"])


# --- Ctrl-C and SIGTERM ---

class StopFlag:
    """The first Ctrl-C or SIGTERM asks the loop to stop after the current step (it then saves a resumable
    checkpoint and re-raises); a second one interrupts at once. SIGTERM is finally raised by the handler it
    replaced (the CLI's, which raises its Terminated: exit 143), Ctrl-C as KeyboardInterrupt."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.requested:
            self.interrupt(signum)
        self.requested, self.signum = True, signum

    def interrupt(self, signum: int | None = None) -> NoReturn:
        """Raise the interrupt for `signum` (default: the one that asked to stop)."""
        signum = signum or self.signum
        previous = self._previous.get(signum) if signum is not None else None
        if signum == signal.SIGTERM and callable(previous):
            previous(signum, None)  # the CLI's handler raises Terminated (a KeyboardInterrupt)
        raise KeyboardInterrupt

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread only
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_exc: object) -> None:
        previous_handlers = self._previous
        for signum, previous in previous_handlers.items():
            if previous is not None:  # None: installed outside Python, cannot be restored from here
                signal.signal(signum, previous)
        self._previous = {}
        if self.requested and exc_type is None:
            # the signal came after the loop's last check (the final step, the last epoch's outputs): the run
            # is complete and saved, but the user still asked to stop, so end as interrupted (130/143)
            self._previous = previous_handlers
            self.interrupt()


# --- progress ---

def _progress(enabled: bool) -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        Task,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class SpeedColumn(ProgressColumn):
        def render(self, task: Task) -> Text:
            return Text(f"{task.speed:.2f} it/s" if task.speed else "-- it/s", style="progress.data.speed")

    return Progress(TextColumn("{task.description}"), BarColumn(bar_width=24), MofNCompleteColumn(), SpeedColumn(),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                    console=Console(stderr=True), disable=not enabled)


def _summary(losses: dict[str, float], monitors: tuple[str, ...] = ()) -> str:
    """Generator and discriminator totals: all eight CycleGAN losses do not fit beside a progress bar. Losses
    logged only to watch (`monitors`, e.g. SRGAN's pixel MSE beside its content loss) are not summed."""
    d = sum(v for k, v in losses.items() if k.startswith("D_"))
    g = sum(v for k, v in losses.items() if not k.startswith("D_") and k not in monitors)
    return f"G {g:.3f}  D {d:.3f}"


# --- the loop ---

class _Run:
    """State of one train() call: the model, its counters and the run-dir writers."""

    def __init__(self, cfg: TrainConfig, resume: bool, log: Log | None, force: bool = False) -> None:
        self.cfg, self.log = cfg, log or (lambda _msg: None)
        self.run_dir = Path(cfg.run_dir)
        self.ckpt_path = self.run_dir / CHECKPOINT
        if resume and not self.ckpt_path.is_file():
            raise ConfigError(f"{self.ckpt_path}: no checkpoint to resume; train without --resume first")
        if not resume and not force and self.ckpt_path.is_file():
            raise ConfigError(f"{self.run_dir}: already holds a run ({self.ckpt_path}); pass --resume to continue "
                              "it, --force to start over (its checkpoints, generators and logs are deleted), or "
                              "choose a new -o")
        self.device = resolve_device(cfg)
        self.dataset = build_dataset(cfg)  # before anything is written: bad data fails fast
        check_memory(cfg, self.device, TRAINERS[cfg.model].passes(cfg))  # before any image or step is allocated
        check_writable(self.run_dir)
        seed_everything(cfg.seed)
        self.model = TRAINERS[cfg.model](cfg, self.device)
        self.epoch, self.samples_done, self.iteration = 1, 0, 0
        if resume:
            self._restore(safe_load(self.ckpt_path))
            if self.epoch <= cfg.total_epochs:
                self.log(f"resuming {self.run_dir} at epoch {self.epoch}/{cfg.total_epochs}, iteration "
                         f"{self.iteration} ({self.samples_done} of {len(self.dataset)} images of the epoch done)")
            else:
                self.log(f"{self.run_dir}: all {cfg.total_epochs} epochs are done (iteration {self.iteration}); "
                         "nothing to train: raise --epochs or --epochs-decay to continue")
        elif force:
            clear_run(self.run_dir)
        cfg.save(self.run_dir)
        n = min(cfg.samples, len(self.dataset))
        fixed = [self.dataset[(i, sample_seed(cfg.seed, 0, i))] for i in range(n)]
        self.sample_a = torch.stack([f["A"] for f in fixed]).to(self.device)
        # a plain folder of inputs (distillation) has no target domain
        self.sample_b = torch.stack([f["B"] for f in fixed]).to(self.device) if "B" in fixed[0] else None

    def _restore(self, state: Any) -> None:
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise CheckpointError(f"{self.ckpt_path}: not a training checkpoint of cgdeploy; cannot resume from it")
        saved = state["config"]
        differing = sorted(f.name for f in fields(TrainConfig)
                           if f.name not in RESUMABLE and saved.get(f.name) != getattr(self.cfg, f.name))
        if differing:
            raise ConfigError(f"{self.ckpt_path}: saved with different {', '.join(differing)}; resume with the run's "
                              "own settings (see config.json)")
        self.model.load_state_dict(state["model"])
        self.epoch, self.samples_done = int(state["epoch"]), int(state["epoch_samples"])
        self.iteration = int(state["iteration"])
        set_rng_state(state["rng"])

    def save_checkpoint(self) -> None:
        atomic_save({"format": STATE_FORMAT, "version": 1, "config": self.cfg.to_dict(), "epoch": self.epoch,
                     "epoch_samples": self.samples_done, "iteration": self.iteration,
                     "model": self.model.state_dict(), "rng": rng_state()}, self.ckpt_path)

    def save_samples(self, name: str) -> None:
        save_grid(self.model.sample_rows(self.sample_a, self.sample_b), self.run_dir / "samples" / f"{name}.png")

    def end_of_epoch_outputs(self, done: int) -> None:
        self.save_samples(f"epoch_{done:03d}")
        self.model.save_generators(self.run_dir, "latest")
        self.save_checkpoint()
        if done % self.cfg.save_every == 0 or done == self.cfg.total_epochs:
            self.model.save_generators(self.run_dir, str(done))
            self.plot()  # with the per-epoch files only: a matplotlib figure costs more than a tiny epoch

    def plot(self) -> None:
        plot_losses(self.run_dir / LOSSES_CSV, self.run_dir / LOSSES_PNG, self.model.loss_names)


def clear_run(run_dir: Path) -> None:
    """What a run writes into its run dir (--force starts over); other files there are left alone."""
    for name in (CHECKPOINT.parent, "samples"):
        shutil.rmtree(run_dir / name, ignore_errors=True)
    for path in (run_dir / CONFIG_NAME, run_dir / LOSSES_CSV, run_dir / LOSSES_PNG, run_dir / SYNTHETIC_EVAL,
                 run_dir / DISTILL_EVAL, run_dir / SR_EVAL,
                 *run_dir.glob("*_net_*.pth")):
        path.unlink(missing_ok=True)


def train(cfg: TrainConfig, resume: bool = False, progress: bool | None = None, log: Log | None = None,
          on_step: Callable[[int, dict[str, float]], None] | None = None, force: bool = False) -> TrainResult:
    """Train cfg.model on cfg.dataroot into cfg.run_dir (resume=True continues its checkpoint exactly; force=True
    deletes an existing run there and starts over).

    The run dir is locked for the whole run (a second process is refused, naming this one's PID). Ctrl-C or
    SIGTERM finishes the current step, saves a resumable checkpoint and re-raises the interrupt;
    cfg.max_minutes stops after that much wall-clock time the same way, but returns normally.
    """
    if not cfg.run_dir:
        raise ConfigError("no run dir given; pass -o RUN_DIR")
    if resume and force:
        raise ConfigError("--resume continues the run in -o and --force starts it over; pass one of them")
    run_dir = Path(cfg.run_dir)
    with removed_if_failed(run_dir), output_errors(run_dir), locked(run_dir), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=TORCH_WORKER_WARNING)  # make_loader said it in one line
        return _train(cfg, resume, force, progress, log, on_step)


def _train(cfg: TrainConfig, resume: bool, force: bool, progress: bool | None, log: Log | None,
           on_step: Callable[[int, dict[str, float]], None] | None) -> TrainResult:
    run = _Run(cfg, resume, log, force)
    model, dataset = run.model, run.dataset
    sampler = EpochSampler(len(dataset), cfg.seed)
    loader = make_loader(dataset, cfg, sampler, pin_memory=run.device.type == "cuda")
    losslog = LossLog(run.run_dir / LOSSES_CSV, model.loss_names, keep_until=run.iteration if resume else None)
    per_epoch = math.ceil(len(dataset) / cfg.batch_size)
    start, budget = time.monotonic(), (cfg.max_minutes * 60.0 if cfg.max_minutes else math.inf)
    stopped_early, consistent, losses = False, True, {}
    run.log(f"training {cfg.model} on {len(dataset)} images ({per_epoch} it/epoch, {cfg.total_epochs} epochs, "
            f"device {run.device.type}) -> {run.run_dir}")
    bar = _progress(sys.stderr.isatty() if progress is None else progress)
    try:
        with StopFlag() as stop, bar:
            task = bar.add_task("train", total=per_epoch * cfg.total_epochs, completed=run.iteration, info="")
            while run.epoch <= cfg.total_epochs:
                sampler.set_epoch(run.epoch, run.samples_done)
                for batch in loader:
                    consistent = False  # from here until the counters move, memory is mid-step
                    losses = model.optimize(batch)
                    run.iteration += 1
                    run.samples_done += len(batch["A"])
                    consistent = True
                    losslog.write(run.epoch, run.iteration, model.lr, time.monotonic() - start, losses)
                    bar.update(task, advance=1, description=f"epoch {run.epoch}/{cfg.total_epochs}",
                               info=_summary(losses, model.monitor_losses))
                    if on_step is not None:
                        on_step(run.iteration, losses)
                    if run.samples_done < len(dataset) and (stop.requested or time.monotonic() - start > budget):
                        break
                if run.samples_done < len(dataset):  # stopped mid-epoch
                    if stop.requested:
                        stop.interrupt()
                    stopped_early = True
                    break
                consistent = False
                model.end_epoch()
                run.epoch, run.samples_done = run.epoch + 1, 0
                consistent = True
                losslog.flush()
                run.end_of_epoch_outputs(run.epoch - 1)
                run.log(f"epoch {run.epoch - 1}/{cfg.total_epochs} done, iteration {run.iteration}, "
                        f"{time.monotonic() - start:.0f} s: " + " ".join(f"{k} {v:.3f}" for k, v in losses.items()))
                if stop.requested:
                    stop.interrupt()
                if run.epoch <= cfg.total_epochs and time.monotonic() - start > budget:
                    stopped_early = True
                    break
    except KeyboardInterrupt:
        losslog.flush()
        if consistent:
            run.save_checkpoint()
            run.model.save_generators(run.run_dir, "latest")
            run.plot()
            run.log(f"interrupted at epoch {run.epoch}, iteration {run.iteration}: saved {run.ckpt_path}; "
                    "continue with --resume")
        raise
    finally:
        losslog.close()
    if stopped_early:
        run.save_checkpoint()
        run.model.save_generators(run.run_dir, "latest")
        run.save_samples(f"epoch_{run.epoch:03d}_partial")
        run.plot()
        run.log(f"time budget of {cfg.max_minutes} min reached at epoch {run.epoch}, iteration {run.iteration}: "
                f"saved {run.ckpt_path}; continue with --resume")
    result = TrainResult(run.run_dir, run.epoch - 1, run.iteration, time.monotonic() - start, stopped_early, losses)
    if cfg.model == "cyclegan" and is_synthetic(cfg.dataroot):
        result.synthetic = evaluate_synthetic(model.generator_AtoB, cfg.dataroot, str(run.device), cfg.multiple)
        write_json(run.run_dir / SYNTHETIC_EVAL, result.synthetic)
    if cfg.model == "srgan":
        from cyclegan_deploy.train.sr_eval import evaluate_run

        run.log("evaluating SR and bicubic against HR on the held-out pairs")
        result.evaluation = evaluate_run(run.run_dir, cfg.dataroot, str(run.device))
        write_json(run.run_dir / SR_EVAL, result.evaluation)
    if cfg.model == "distill":
        from cyclegan_deploy.metadata import sha256_file
        from cyclegan_deploy.train.evaluate import evaluate

        if sha256_file(Path(cfg.teacher)) != cfg.teacher_sha256:  # e.g. its run is still training and rewrote it
            run.log(f"{cfg.teacher}: changed since the distillation started; not evaluating against it (run "
                    "`cgdeploy eval` against the file you distilled from)")
        else:
            run.log("evaluating the student against the teacher")
            result.evaluation = evaluate(run.run_dir / "latest_net_G.pth", cfg.teacher, cfg.dataroot,
                                         device=str(run.device), training_folder=True)
            write_json(run.run_dir / DISTILL_EVAL, result.evaluation)
    return result

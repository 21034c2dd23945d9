"""What a `cgdeploy batch` run did, per input and in total: the summary table it prints and the JSON report it
writes into OUT_DIR (one per run, named by its start time)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cyclegan_deploy.artifacts import atomic_output


@dataclass
class InputResult:
    src: str
    dst: str
    status: str  # "done" | "skipped" (--resume: already there) | "failed"
    frames: int = 0
    segments: int = 0
    retried_segments: int = 0  # segments a worker died on and another attempt finished
    reused_segments: int = 0  # finished by an interrupted earlier run (--resume)
    seconds: float = 0.0  # from its first segment's start to its join
    error: str | None = None


@dataclass
class BatchReport:
    out_dir: Path
    artifact: str
    backend: str
    workers: int
    ray_address: str
    started: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    wall_s: float = 0.0
    worker_restarts: int = 0
    inputs: list[InputResult] = field(default_factory=list)
    path: Path | None = None  # where the JSON went

    @property
    def frames(self) -> int:
        return sum(r.frames for r in self.inputs)

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.inputs)

    @property
    def failed(self) -> list[InputResult]:
        return [r for r in self.inputs if r.status == "failed"]

    def write(self) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.strptime(self.started[:19], "%Y-%m-%dT%H:%M:%S"))
        path = self.out_dir / f"cgdeploy-batch-{stamp}.json"
        data: dict[str, Any] = {k: v for k, v in asdict(self).items() if k not in ("out_dir", "path")}
        data.update(out_dir=str(self.out_dir), frames=self.frames, fps=round(self.fps, 3),
                    done=self.count("done"), skipped=self.count("skipped"), failed=self.count("failed"))
        with atomic_output(path) as tmp:
            tmp.write_text(json.dumps(data, indent=2) + "\n")
        self.path = path
        return path

    def table(self) -> str:
        """The per-input lines and the totals, as plain text (logs and pipes read it as well as terminals)."""
        rows = [("input", "status", "frames", "segments", "seconds", "output / error")]
        for r in self.inputs:
            rows.append((Path(r.src).name, r.status + (f" ({r.retried_segments} retried)" if r.retried_segments
                                                        else ""), str(r.frames), str(r.segments), f"{r.seconds:.1f}",
                         r.error if r.error else r.dst))
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:5], widths, strict=True)) + "  " + row[5]
                 for row in rows]
        restarts = f", {self.worker_restarts} worker restarts" if self.worker_restarts else ""
        lines.append(f"{self.count('done')} done, {self.count('skipped')} skipped, {self.count('failed')} failed: "
                     f"{self.frames} frames in {self.wall_s:.1f}s = {self.fps:.2f} fps with {self.workers} workers "
                     f"({self.backend}){restarts}; report {self.path}")
        return "\n".join(lines)

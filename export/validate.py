"""Parity gate: the exported artifact must compute what the PyTorch FP32 generator computes.

Reference: the torch model in FP32 on CPU. Candidate: ONNX Runtime CPU on the .onnx file (the FP32 graph,
or the FP16 graph: ORT CPU inserts casts around FP16 convolutions and runs them in FP32, so on CPU the FP16
gate measures weight rounding, not FP16 arithmetic — precision.py's safety report simulates that).
Numbers: max abs error and PSNR on the card's output range (peak-to-peak 2 for CycleGAN's [-1, 1], 1 for
ESRGAN's [0, 1]), max uint8 pixel difference after the card's output mapping. Inputs are seeded images mapped
onto the card's input range; both outputs must be the card's scale x the input size.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cyclegan_deploy.artifacts import parity_path, read_card, write_json
from cyclegan_deploy.errors import ParityError, ShapeError
from cyclegan_deploy.frames import to_model
from cyclegan_deploy.metadata import REFERENCE_RANGE, ModelMeta
from cyclegan_deploy.quality import parity

if TYPE_CHECKING:
    from torch import nn

# Measured on the 2-core dev machine (ORT 1.32, torch 2.13, seeded images, batch 2): tiny ResNet (ngf 8)
# 1.5e-6..3.6e-6; full ResNet-9 ngf 64 (seeded init) 1.29e-5 over 256x256 and 192x320. 1e-4 leaves ~8x headroom
# for other CPUs' kernels while a single perturbed weight (test_parity) still fails it.
FP32_MAX_ABS = 1e-4
# FP16 graph on ORT CPU: weight rounding only, 69.2 dB measured on the full ResNet-9 (75 dB tiny); 40 dB is the
# design's gate for any FP16/bf16 candidate (visually lossless, one or two uint8 levels).
FP16_MIN_PSNR = 40.0


@dataclass
class ParityCase:
    shape: list[int]
    max_abs: float  # inf (null in the JSON) when either output holds NaN/inf values
    mean_abs: float
    psnr_db: float  # -inf when either output holds NaN/inf values
    max_uint8_diff: int
    nonfinite_reference: int = 0  # NaN/inf values in the PyTorch output
    nonfinite_candidate: int = 0  # NaN/inf values in the candidate's output


@dataclass
class ParityReport:
    artifact: str
    reference: str
    candidate: str
    precision: str
    seed: int
    cases: list[ParityCase]
    max_abs: float
    min_psnr_db: float
    max_uint8_diff: int
    tolerance: dict[str, float]
    passed: bool
    failures: list[str] = field(default_factory=list)
    note: str = ""
    versions: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        shapes = ["x".join(map(str, c.shape)) for c in self.cases]
        sizes = ", ".join(dict.fromkeys(s if shapes.count(s) == 1 else f"{shapes.count(s)} x {s}" for s in shapes))
        bad_ref, bad_out = (sum(getattr(c, f"nonfinite_{w}") for c in self.cases) for w in ("reference", "candidate"))
        nonfinite = f", NaN/inf values: reference {bad_ref}, candidate {bad_out}" if bad_ref or bad_out else ""
        return (f"parity {verdict} {Path(self.artifact).name} ({self.candidate} vs {self.reference}) on {sizes}: "
                f"max abs {self.max_abs:.3g}, min PSNR {self.min_psnr_db:.1f} dB, "
                f"max uint8 diff {self.max_uint8_diff}{nonfinite}")


def compare(reference: np.ndarray, candidate: np.ndarray, value_range: Sequence[float] = REFERENCE_RANGE
            ) -> ParityCase:
    """Parity of one case. NaN/inf anywhere make it the worst possible case (max abs inf, PSNR -inf):
    comparisons with NaN are all False, so a NaN max abs would otherwise pass every tolerance."""
    bad_ref, bad_out = int((~np.isfinite(reference)).sum()), int((~np.isfinite(candidate)).sum())
    if bad_ref or bad_out:
        lo, hi = float(value_range[0]), float(value_range[1])
        # the pixels a user would get: NaN as black, inf clipped (to_uint8 warns on NaN casts)
        reference, candidate = (np.nan_to_num(x, nan=lo, posinf=hi, neginf=lo) for x in (reference, candidate))
    try:
        p = parity(reference, candidate, value_range)
    except ShapeError as e:
        raise ParityError(str(e)) from e
    if bad_ref or bad_out:
        return ParityCase(shape=list(reference.shape), max_abs=math.inf, mean_abs=math.inf, psnr_db=-math.inf,
                          max_uint8_diff=p.max_uint8_diff, nonfinite_reference=bad_ref, nonfinite_candidate=bad_out)
    return ParityCase(shape=list(reference.shape), max_abs=p.max_abs, mean_abs=p.mean_abs, psnr_db=p.psnr_db,
                      max_uint8_diff=p.max_uint8_diff)


def sample_images(batch: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Seeded uint8 RGB 'images' (N,H,W,3): smooth colour fields plus fine noise, so both the flat-region
    and the edge statistics an instance norm sees are exercised — closer to photos than white noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(batch, max(2, height // 8), max(2, width // 8), 3))
    rows = np.linspace(0, coarse.shape[1] - 1, height)
    cols = np.linspace(0, coarse.shape[2] - 1, width)
    r0, c0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
    r1, c1 = np.minimum(r0 + 1, coarse.shape[1] - 1), np.minimum(c0 + 1, coarse.shape[2] - 1)
    fr, fc = (rows - r0)[None, :, None, None], (cols - c0)[None, None, :, None]
    top = coarse[:, r0][:, :, c0] * (1 - fc) + coarse[:, r0][:, :, c1] * fc
    bottom = coarse[:, r1][:, :, c0] * (1 - fc) + coarse[:, r1][:, :, c1] * fc
    smooth = top * (1 - fr) + bottom * fr
    noisy = smooth + rng.normal(0, 12, size=smooth.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def default_sizes(meta: ModelMeta) -> list[tuple[int, int]]:
    """The training size (rounded to the model's multiple) and a non-square size that is also a multiple:
    64 -> 64x64 and 48x80; 256 -> 256x256 and 192x320; unet_128 -> 128x128 and 128x256."""
    m = meta.multiple
    side = max(m, -(-meta.train_size // m) * m)
    if m >= 64:  # U-Nets: the only non-square option that keeps the multiple is doubling one side
        return [(side, side), (side, 2 * side)]

    def rounded(x: float) -> int:
        return max(m, int(round(x / m)) * m)

    return [(side, side), (rounded(side * 3 / 4), rounded(side * 5 / 4))]


def _versions() -> dict[str, str]:
    import onnxruntime
    import torch

    return {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
            "machine": platform.machine()}


def torch_reference(model: nn.Module, batch: np.ndarray) -> np.ndarray:
    import torch

    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(batch).float()).numpy()


def ort_session(onnx_path: Path | bytes, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session of a graph file, or of a serialized graph (bytes)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    source = onnx_path if isinstance(onnx_path, bytes) else str(onnx_path)
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])


def validate_onnx(model: nn.Module, meta: ModelMeta, onnx_path: Path, *,
                  sizes: list[tuple[int, int]] | None = None, batch: int = 2, seed: int = 0,
                  precision: str | None = None, max_abs: float | None = None, min_psnr: float | None = None,
                  report_path: Path | None = None, raise_on_fail: bool = True, echo: bool = True,
                  ) -> ParityReport:
    """Run torch FP32 and ORT CPU on the same seeded images (every size at `batch`), write + print the report.

    Default report path: artifacts.parity_path beside the artifact. The precision (and so the tolerance) is
    the graph's card's: FP32 graph max abs <= FP32_MAX_ABS; FP16 graph PSNR >= FP16_MIN_PSNR. Raises
    ParityError beyond tolerance.
    """
    onnx_path = Path(onnx_path)
    precision = precision or read_card(onnx_path).precision
    note = "FP32 graph on ONNX Runtime CPU vs PyTorch FP32 CPU"
    if precision != "fp32":
        note = ("FP16 graph on ONNX Runtime CPU vs PyTorch FP32: ORT CPU runs FP16 convolutions in FP32 (it "
                "inserts casts), so this measures FP16 weight rounding only, not FP16 arithmetic; see the FP16 "
                "safety report for simulated FP16 arithmetic")
    session = ort_session(onnx_path)
    in_name, out_name = session.get_inputs()[0].name, session.get_outputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(session.run([out_name], {in_name: x})[0])

    return validate_candidate(model, meta, run, artifact=onnx_path, candidate="onnxruntime-cpu",
                              precision=precision, note=note, sizes=sizes, batch=batch, seed=seed, max_abs=max_abs,
                              min_psnr=min_psnr, report_path=report_path, raise_on_fail=raise_on_fail, echo=echo)


def validate_candidate(model: nn.Module, meta: ModelMeta, run: Callable[[np.ndarray], np.ndarray], *,
                       artifact: Path, candidate: str, precision: str, note: str = "",
                       sizes: list[tuple[int, int]] | None = None, batch: int = 2, seed: int = 0,
                       max_abs: float | None = None, min_psnr: float | None = None,
                       report_path: Path | None = None, raise_on_fail: bool = True, echo: bool = True,
                       images: Sequence[np.ndarray] | None = None) -> ParityReport:
    """The gate for any runner of float32 NCHW batches in the card's input range (ORT, OpenVINO, a TensorRT
    backend...). Cases: seeded images at `sizes` (batch `batch`), or the given model-range NCHW `images`, one
    case each."""
    artifact = Path(artifact)
    if precision == "fp32":
        tolerance = {"max_abs": FP32_MAX_ABS if max_abs is None else max_abs}
    else:
        tolerance = {"min_psnr_db": FP16_MIN_PSNR if min_psnr is None else min_psnr}
        if max_abs is not None:
            tolerance["max_abs"] = max_abs
    if images is None:
        images = [to_model(sample_images(batch, h, w, seed + i), meta.input_range)
                  for i, (h, w) in enumerate(sizes or default_sizes(meta))]
    cases = [compare(*_scaled_outputs(model, meta, run, x, artifact, candidate), meta.output_range) for x in images]
    worst_abs = max(c.max_abs for c in cases)
    worst_psnr = min(c.psnr_db for c in cases)
    bad_ref, bad_out = sum(c.nonfinite_reference for c in cases), sum(c.nonfinite_candidate for c in cases)
    failures = []
    if bad_ref:
        failures.append(f"the PyTorch model itself outputs {bad_ref} NaN/inf values")
    if bad_out:
        failures.append(f"{candidate} outputs {bad_out} NaN/inf values")
    # written as "not within" so that a NaN that slipped through can never pass
    if "max_abs" in tolerance and not worst_abs <= tolerance["max_abs"] and not (bad_ref or bad_out):
        failures.append(f"max abs {worst_abs:.3g} > {tolerance['max_abs']:.3g}")
    if "min_psnr_db" in tolerance and not worst_psnr >= tolerance["min_psnr_db"] and not (bad_ref or bad_out):
        failures.append(f"PSNR {worst_psnr:.1f} dB < {tolerance['min_psnr_db']:.1f} dB")
    report = ParityReport(artifact=str(artifact), reference="torch-fp32-cpu", candidate=candidate,
                          precision=precision, seed=seed, cases=cases, max_abs=worst_abs, min_psnr_db=worst_psnr,
                          max_uint8_diff=max(c.max_uint8_diff for c in cases), tolerance=tolerance,
                          passed=not failures, failures=failures, note=note, versions=_versions())
    report_path = report_path or parity_path(artifact)
    write_report(report, report_path)
    if echo:
        print(report.summary())
    if failures and raise_on_fail and bad_ref:
        raise ParityError(f"{artifact}: parity gate failed ({'; '.join(failures)}): the weights overflow float32 on "
                          f"the test images, so neither the model nor its export is usable (report: "
                          f"{report_path.name}); export another checkpoint")
    if failures and raise_on_fail:
        raise ParityError(f"{artifact}: parity gate failed ({'; '.join(failures)}): {candidate} does not compute "
                          f"what the PyTorch model computes (report: {report_path.name}). Re-export; if it "
                          "persists, report it with that file")
    return report


def _scaled_outputs(model: nn.Module, meta: ModelMeta, run: Callable[[np.ndarray], np.ndarray], x: np.ndarray,
                    artifact: Path, candidate: str) -> tuple[np.ndarray, np.ndarray]:
    """(reference, candidate) outputs for `x`, each checked to be (N, C, scale*H, scale*W) for the card's scale:
    a graph whose upsampling froze the trace size, or a card whose scale is wrong, fails here by name."""
    n, _, h, w = x.shape
    want = (n, meta.output_nc, meta.scale * h, meta.scale * w)
    outputs = torch_reference(model, x), run(x)
    for who, y in zip(("the PyTorch model", candidate), outputs, strict=True):
        if tuple(y.shape) != want:
            raise ParityError(f"{artifact}: {who} returned {'x'.join(map(str, y.shape))} for a "
                              f"{'x'.join(map(str, x.shape))} batch; the card (scale {meta.scale}) expects "
                              f"{'x'.join(map(str, want))}. Re-export from the checkpoint")
    return outputs


def write_report(report: ParityReport, path: Path) -> Path:
    """Strict JSON: a bit-exact case (PSNR inf) is written as null."""
    return write_json(path, report.as_dict())

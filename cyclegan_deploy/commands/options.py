"""Options shared by several commands (one definition, one error text): model selection for `video`,
`translate` and `bench`, and --force, the one overwrite rule (outputs.refuse_existing)."""

from __future__ import annotations

from pathlib import Path

import typer

from cyclegan_deploy.errors import ConfigError

ENGINE = typer.Option(None, "--engine", help="TensorRT engine (.plan) built by `cgdeploy export --engine`.")
MODEL = typer.Option(None, "--model", help="ONNX model (.onnx) or OpenVINO IR (.xml) from `cgdeploy export`.")
CHECKPOINT = typer.Option(None, "--checkpoint", help="Generator .pth (ours or the reference's) or a run dir.")
BACKEND = typer.Option("auto", "--backend",
                       help="auto | onnxruntime | openvino | torch | tensorrt (auto: chosen by the artifact).")
DEVICE = typer.Option("auto", "--device", help="auto | cpu | cuda. Asking for cuda never falls back to cpu.")
ADDRESS = typer.Option(None, "--address", help="Ray cluster to run on (batch, serve): auto (the one `ray start` "
                                               "made on this node) or ray://HEAD:10001. Default: a local Ray "
                                               "instance for this run.")
FORCE = typer.Option(False, "--force", help="Replace an existing output (refused otherwise).")
PRECISION = typer.Option(None, "--precision",
                         help="Backend precision: fp32 | fp16 | bf16 (torch: the model cast on CUDA, autocast on CPU; "
                              "OpenVINO: its hint); int8: "
                              "require an int8 graph's int8 execution (OpenVINO).")
TILE = typer.Option(None, "--tile", min=1, help="Run the model on tiles of this many pixels (frames too large for "
                                                "memory or a TensorRT profile; super-resolution models, not "
                                                "instance-norm ones). Default: whole frames.")
TILE_OVERLAP = typer.Option(16, "--tile-overlap", min=0, help="Pixels of context around each tile, discarded from "
                                                              "its output (no seams when >= the model's reach).")


def resolve_artifact(engine: Path | None, model: Path | None, checkpoint: Path | None) -> Path:
    """Exactly one of --engine / --model / --checkpoint, and it must exist."""
    given = [p for p in (engine, model, checkpoint) if p is not None]
    if len(given) != 1:
        raise ConfigError("give exactly one of --engine X.plan, --model X.onnx|X.xml or --checkpoint X.pth")
    path = given[0]
    if not path.exists():
        raise ConfigError(f"{path}: no such file; check the path (export one with `cgdeploy export`)")
    return path

"""Typed errors. Library code raises these; only the CLI turns them into a one-line message + exit 1.

A message names the file (if any), what was wrong, and the fix.
"""

from __future__ import annotations


class CgDeployError(Exception):
    """Base class: anything the CLI reports as a one-line error."""


class ConfigError(CgDeployError):
    """Bad options or option combinations."""


class CheckpointError(CgDeployError):
    """A checkpoint is missing, unreadable, not a plain state dict, or does not fit the architecture."""


class DataError(CgDeployError):
    """A dataset folder is missing, empty or unusable."""


class ExportError(CgDeployError):
    """Export to ONNX / FP16 / TensorRT / OpenVINO failed."""


class ParityError(CgDeployError):
    """A candidate artifact's outputs differ from the reference beyond tolerance."""


class ModelError(CgDeployError):
    """A model returned unusable output (NaN/Inf, wrong shape) or is not the kind of model the command needs."""


class BackendUnavailableError(CgDeployError):
    """The requested backend/provider/device cannot be used here (never silently replaced)."""


class EngineMismatchError(CgDeployError):
    """A TensorRT engine was built for another TensorRT version or GPU."""


class ShapeError(CgDeployError):
    """Input shape not supported by the model or the engine's optimization profile."""


class OutputError(CgDeployError):
    """An output cannot be written: it exists (no --force), is locked by another run, or the folder refuses
    (permissions, read-only, disk full)."""


class MediaError(CgDeployError):
    """A video/image input is missing, truncated or not decodable, or the output can't be written."""


def interrupt_behind(e: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C/SIGTERM interrupt a library wrapped into its own exception (torch.export does), if any:
    re-raise it so the command ends as interrupted (130/143) with its cleanup, not as that library's failure."""
    seen: set[int] = set()
    cause: BaseException | None = e
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None

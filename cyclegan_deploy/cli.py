"""The `cgdeploy` command line. Commands live in cyclegan_deploy/commands/ (one module per stage) and stay
thin: parse -> config -> one library call. Here only: typed errors and OS errors become a one-line message
and exit 1, usage errors exit 2, Ctrl-C 130 and SIGTERM 143 (SIGTERM is raised as an interrupt in the main
thread, so every cleanup path Ctrl-C takes runs for it too: temp files removed, training checkpointed).
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

import typer

from cyclegan_deploy.errors import CgDeployError

app = typer.Typer(name="cgdeploy", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Train, export and run CycleGAN / pix2pix generators fast.")
data_app = typer.Typer(no_args_is_help=True, help="Datasets: the built-in known-mapping data.")
app.add_typer(data_app, name="data")
def _hide_flag_types() -> None:
    """typer 0.29 prints `<bool>` after every on/off flag in --help; a flag takes no value, so show none."""
    from typer.core import TyperOption

    original = getattr(TyperOption, "display_type_rich", None)
    if original is None or getattr(original, "_cgdeploy", False):
        return

    def display_type_rich(self: TyperOption, ctx: typer.Context) -> str | None:
        return None if getattr(self, "is_flag", False) else original(self, ctx)

    display_type_rich._cgdeploy = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_hide_flag_types()
_state: dict[str, bool] = {"debug": False, "terminated": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors (anywhere on the "
                                                          "command line).")) -> None:
    _state["debug"] = _state["debug"] or debug


def _register() -> None:
    # Imported here, not at module top, so `import cyclegan_deploy.cli` stays light; each module
    # imports its heavy stack (torch, onnx, av...) only inside its command bodies.
    from cyclegan_deploy.commands import (
        batch_cmd,
        bench_cmd,
        distill_cmd,
        doctor_cmd,
        export_cmd,
        media_cmd,
        serve_cmd,
        train_cmd,
    )

    train_cmd.register(app, data_app)
    distill_cmd.register(app)
    export_cmd.register(app)
    media_cmd.register(app)
    batch_cmd.register(app)
    serve_cmd.register(app)
    bench_cmd.register(app)
    doctor_cmd.register(app)


_register()


class Terminated(KeyboardInterrupt):
    """SIGTERM (timeouts, `docker stop`, systemd), delivered like Ctrl-C so the same cleanup runs."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _state["terminated"] = True
    raise Terminated


def _interrupted() -> int:
    terminated = bool(_state.get("terminated"))
    typer.secho("terminated (SIGTERM)" if terminated else "interrupted", err=True, fg="yellow")
    return 143 if terminated else 130


def main(argv: list[str] | None = None) -> int:
    """Run the app in typer's standalone mode (usage errors -> exit 2) and map our typed errors to exit 1."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in args[: args.index("--") if "--" in args else len(args)]:  # anywhere on the line
        args.remove("--debug")
        _state["debug"] = True
    _state["terminated"] = False
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (an embedding app): leave SIGTERM alone
        previous = None
    try:
        app(args, prog_name="cgdeploy")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        return _interrupted() if code == 130 else code  # typer turns an interrupt into a silent Exit(130)
    except KeyboardInterrupt:
        return _interrupted()
    except (CgDeployError, OSError) as e:
        if _state["terminated"] and not _state["debug"]:
            return _interrupted()
        if _state["debug"]:
            raise
        from cyclegan_deploy.outputs import os_error_message

        text = os_error_message(e) if isinstance(e, OSError) else str(e)
        typer.secho(f"error: {text}", err=True, fg="red")
        return 1
    except Exception:
        # SIGTERM landing inside a library (a C extension's import turns it into "ImportError: initialization
        # failed") is still the user's SIGTERM: exit 143 with its cleanup done, not that library's traceback
        if _state["terminated"] and not _state["debug"]:
            return _interrupted()
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

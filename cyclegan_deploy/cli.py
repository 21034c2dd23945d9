"""The `cgdeploy` command line. Commands live in cyclegan_deploy/commands/ (one module per stage) and stay
thin: parse -> config -> one library call. Typed errors become a one-line message and exit 1 here only.
"""

from __future__ import annotations

import sys

import typer

from cyclegan_deploy.errors import CgDeployError

app = typer.Typer(name="cgdeploy", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Train, export and run CycleGAN / pix2pix generators fast.")
data_app = typer.Typer(no_args_is_help=True, help="Datasets: the built-in known-mapping data.")
app.add_typer(data_app, name="data")
_state = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    _state["debug"] = debug


def _register() -> None:
    # Imported here, not at module top, so `import cyclegan_deploy.cli` stays light; each module
    # imports its heavy stack (torch, onnx, av...) only inside its command bodies.
    from cyclegan_deploy.commands import bench_cmd, doctor_cmd, export_cmd, media_cmd, train_cmd

    train_cmd.register(app, data_app)
    export_cmd.register(app)
    media_cmd.register(app)
    bench_cmd.register(app)
    doctor_cmd.register(app)


_register()


def main(argv: list[str] | None = None) -> int:
    """Run the app in typer's standalone mode (usage errors -> exit 2) and map our typed errors to exit 1."""
    args = sys.argv[1:] if argv is None else argv
    try:
        app(args, prog_name="cgdeploy")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if code == 130:  # typer turns Ctrl-C into a silent Exit(130)
            typer.secho("interrupted", err=True, fg="yellow")
        return code
    except CgDeployError as e:
        if _state["debug"]:
            raise
        typer.secho(f"error: {e}", err=True, fg="red")
        return 1
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True, fg="yellow")
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

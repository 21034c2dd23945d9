"""`cgdeploy doctor`: versions, CPU/GPU, and which backends/providers really load here."""

from __future__ import annotations

import typer


def register(app: typer.Typer, *sub: typer.Typer) -> None:
    @app.command("doctor")
    def doctor(
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON instead of tables."),
        probe: bool = typer.Option(True, "--probe/--no-probe",
                                   help="Run a 1-node graph on every backend/provider (default) or only list them."),
    ) -> None:
        """What is installed, which backends and providers really load, the CPU (AVX-512/AMX) and the GPU."""
        import json

        from cyclegan_deploy.doctor import collect, render

        report = collect(probe=probe)
        if as_json:
            typer.echo(json.dumps(report, indent=2))
        else:
            render(report)

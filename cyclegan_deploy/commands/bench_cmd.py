"""Placeholder: filled in by the stage that owns these commands."""

from __future__ import annotations

import typer


def register(app: typer.Typer, *sub: typer.Typer) -> None:
    return None

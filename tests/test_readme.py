"""The README and the help of every command."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from collector.cli.app import app

README = Path(__file__).resolve().parent.parent / "README.md"
COMMANDS = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def test_readme_exists() -> None:
    assert README.is_file()
    assert README.read_text(encoding="utf-8").strip()


def test_main_help() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    for name in COMMANDS:
        assert name in result.stdout


def test_the_commands_are_there() -> None:
    assert {"search", "summary", "hosts", "fetch", "trace", "demo"} <= set(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_command_help(name: str) -> None:
    result = CliRunner().invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Usage: ")
    assert f" {name} " in result.stdout.splitlines()[0]


def test_no_arguments_shows_help() -> None:
    result = CliRunner().invoke(app, [])
    assert "Usage: " in result.output
    assert "Commands:" in result.output

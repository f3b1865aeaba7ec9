"""The console script as a user meets it: help, version, and honest 'not implemented yet'."""

from __future__ import annotations

import subprocess
import sys

import pytest

from daemon import __version__
from daemon.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon", *args], capture_output=True, text=True,
                          timeout=60, check=False)


def test_help_lists_the_planned_subcommands() -> None:
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    for command in ("run", "check", "approve", "deny", "sim", "demo"):
        assert f"    {command} " in result.stdout, f"{command!r} missing from --help:\n{result.stdout}"


def test_version() -> None:
    result = run_cli("--version")
    assert (result.returncode, result.stdout.strip()) == (0, f"rollguard {__version__}")


def test_missing_subcommand_is_a_usage_error() -> None:
    result = run_cli()
    assert result.returncode == 2
    assert "required: COMMAND" in result.stderr


def test_bad_flag_value_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["sim", "--log-level", "loud"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'loud'" in capsys.readouterr().err

"""Helpers several test modules share: the CLI run in-process, the demo fleet copied."""

from __future__ import annotations

import shutil
import subprocess
from importlib.resources import files
from pathlib import Path

from typer.testing import CliRunner, Result

from collector.cli.app import app

#: The built-in sample fleet (real logs of the Postfix lab's relay chain).
DEMO = Path(str(files("collector") / "demo"))
DEMO_HOSTS = ("mx1", "filter1", "mbox1", "out1")


def run(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    """The CLI in this process, 100 columns wide, with no inventory from the environment."""
    runner = CliRunner(env={"COLUMNS": "100", "COLLECTOR_INVENTORY": "", **(env or {})})
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def copy_demo(dest: Path) -> Path:
    """A copy of the demo fleet under ``dest``; returns its inventory."""
    shutil.copytree(DEMO, dest / "demo")
    return dest / "demo" / "inventory.toml"


#: Keys of the crowded test agent: more than sshd's MaxAuthTries (6 by default; the test
#: hosts keep it).
AGENT_KEYS = 7


def keygen(path: Path, passphrase: str = "") -> Path:
    """A new ed25519 key pair at ``path`` (and ``path.pub``)."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", path.name, "-f", str(path)],
        check=True, capture_output=True,
    )
    return path

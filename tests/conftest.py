"""Fixtures and options for the whole suite.

``pytest --update-golden`` rewrites tests/golden/ from the real output instead of comparing.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import AGENT_KEYS, copy_demo, keygen


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite tests/golden/ from the real output of the demo fleet",
    )


#: Set by .ci/run: there every package a test needs is installed, so a skip (sudo or
#: systemd-journal-remote "not installed", not root) means the machine is not what CI
#: promises, and the test fails instead of passing unseen.
NO_SKIP = "COLLECTOR_NO_SKIP"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and os.environ.get(NO_SKIP) and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped where {NO_SKIP} is set (CI): {report.longrepr}"


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture
def demo_fleet(tmp_path: Path) -> Path:
    """A copy of the demo fleet (to change freely); returns its inventory."""
    return copy_demo(tmp_path)


@pytest.fixture
def crowded_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A real ssh-agent holding AGENT_KEYS throwaway keys that no host authorizes, set as
    this process's SSH_AUTH_SOCK."""
    sock = tmp_path / "agent.sock"
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        for i in range(AGENT_KEYS):
            key = keygen(tmp_path / f"agent{i}")
            subprocess.run(["ssh-add", "-q", str(key)], env={"SSH_AUTH_SOCK": str(sock)},
                           check=True, capture_output=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        yield sock
    finally:
        proc.kill()
        proc.wait()

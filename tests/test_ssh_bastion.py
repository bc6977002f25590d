"""Many hosts behind one bastion, and sshd's MaxStartups, against real sshd.

The bastion ``gate`` allows only two unauthenticated connections at once (``MaxStartups
2:100:2``: every connection beyond two is dropped). Twelve hosts sit behind it; one
connection per host would lose most of them, as 64 hosts behind a default bastion
(``MaxStartups 10:30:100``) did. ``tight`` is a direct host with ``MaxStartups 1:100:1``.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sshfleet import Fleet, HostSpec, running_fleet
from typer.testing import CliRunner

from collector.cli.app import app
from collector.models import Host, Settings
from collector.transport import open_session
from collector.transport.base import Session
from collector.transport.bastions import BASTIONS

pytestmark = pytest.mark.ssh

INNER = tuple(f"in{n:02d}" for n in range(1, 13))
LINE = "Mar  3 10:00:0{n} {host} postfix/qmgr[42]: 4F2A51C0A{n}: from=<a@example.org>, size=1, nrcpt=1 (queue active)\n"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    specs = [
        HostSpec("gate", jump_only=True, sshd_extra=("MaxStartups 2:100:2",)),
        *(HostSpec(name, via="gate", files={"/var/log/maillog": LINE.format(n=i % 10, host=name)})
          for i, name in enumerate(INNER)),
        HostSpec("tight", sshd_extra=("MaxStartups 1:100:1",),
                 files={"/var/log/maillog": LINE.format(n=0, host="tight")}),
    ]
    with running_fleet(tmp_path_factory.mktemp("bastion"), specs) as running:
        yield running


@pytest.fixture(autouse=True)
def no_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


def host_of(fleet: Fleet, name: str) -> Host:
    address, port = fleet.address(name)
    spec = fleet.spec(name)
    jump = None
    if spec.via is not None:
        jump_address, jump_port = fleet.address(spec.via)
        jump = f"root@{jump_address}:{jump_port}"
    return Host(name, address=address, port=port, user="root",
                identity_file=str(fleet.client_key), proxy_jump=jump)


def settings_of(fleet: Fleet) -> Settings:
    return Settings(known_hosts=str(fleet.known_hosts), connect_timeout=10)


def accepted(fleet: Fleet, name: str) -> int:
    return len(re.findall(r"Accepted publickey for ", fleet.sshd_log(name)))


def test_hosts_behind_one_bastion_share_one_connection(fleet: Fleet, tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.toml"
    inventory.write_text(fleet.inventory_toml())
    before = accepted(fleet, "gate")
    result = CliRunner().invoke(app, ["search", "-i", str(inventory), "--workers", "13",
                                      "--from", "a@example.org", "--format", "json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    answered = {h["name"] for h in payload["hosts"] if h.get("error") is None}
    assert answered == {*INNER, "tight"}
    assert {r["host"] for r in payload["results"]} == {*INNER, "tight"}
    assert accepted(fleet, "gate") - before == 1
    assert BASTIONS.open_connections() == 0


def test_sessions_end_with_a_disconnect_message(fleet: Fleet) -> None:
    log_before = len(fleet.sshd_log("gate"))
    inner_before = len(fleet.sshd_log("in01"))
    sessions: list[Session] = []
    for name in INNER[:3]:
        sessions.append(open_session(host_of(fleet, name), settings_of(fleet)))
    assert BASTIONS.open_connections() == 1
    for session in sessions:
        assert session.run(["true"]).exit_code == 0
        session.close()
    assert BASTIONS.open_connections() == 0
    deadline = time.monotonic() + 5
    while "collector done" not in fleet.sshd_log("gate")[log_before:]:
        assert time.monotonic() < deadline, fleet.sshd_log("gate")[log_before:]
        time.sleep(0.05)
    gate_log = fleet.sshd_log("gate")[log_before:]
    inner_log = fleet.sshd_log("in01")[inner_before:]
    assert "Received disconnect from" in inner_log and "collector done" in inner_log
    assert "Connection reset" not in gate_log + inner_log


def test_a_connection_dropped_at_max_startups_is_tried_again(fleet: Fleet) -> None:
    address, port = fleet.address("tight")
    # Holds tight's only pre-authentication slot for a moment, like another client's
    # handshake in progress: sshd drops every other new connection meanwhile.
    blocker = socket.create_connection((address, port))
    release = threading.Timer(0.6, blocker.close)
    release.start()
    try:
        session = open_session(host_of(fleet, "tight"), settings_of(fleet))
    finally:
        release.join()
    try:
        assert session.run(["hostname"]).stdout == b"tight\n"
    finally:
        session.close()
    assert re.search(r"drop connection #\d+ from .* past MaxStartups", fleet.sshd_log("tight"))

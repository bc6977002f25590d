"""Hostile or unusual SSH surroundings, on real sshd hosts: known_hosts lines paramiko does not
read, a revoked host key, a server that does not speak SSH.

A known_hosts file is shared by every host: one line collector cannot use must not fail them
all, and a key the admin revoked must be refused even where another line still lists it.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet_support import FleetEnv, Run, cli, host_entry, write_inventory

pytest_plugins = ["fleet_support"]
pytestmark = pytest.mark.ssh

HOSTS = ("rhel1", "deb1", "mx1")


def search(inv: Path, *extra: str) -> Run:
    hosts = [a for h in HOSTS for a in ("--host", h)]
    return cli("search", "-i", str(inv), "-f", "json", *hosts, "--to", "alice@example.test", *extra)


def host_line(known: str, addr: str, port: int) -> str:
    (line,) = [x for x in known.splitlines() if x.startswith(f"[{addr}]:{port} ")]
    return line


def test_markers_and_malformed_lines_do_not_fail_every_host(
    fleet_env: FleetEnv, tmp_path: Path
) -> None:
    fleet = fleet_env.fleet
    addr, port = fleet.address("mx1")
    key = host_line(fleet.known_hosts.read_text(), addr, port).split(" ", 1)[1]
    known = tmp_path / "known_hosts"
    known.write_text(
        f"@cert-authority *.example.test {key}\n"
        "this line is not a known_hosts line\n"
        "host.example.test ssh-ed25519 !!!not-base64!!!\n"
        + fleet.known_hosts.read_text()
    )
    inv = write_inventory(tmp_path / "inv.toml", fleet, settings={"known_hosts": str(known)})
    run = search(inv)
    assert run.code in (0, 1), run.stderr
    for name in HOSTS:
        entry = host_entry(run.json(), name)
        assert entry["ok"], entry
        assert f"{known}:1: @cert-authority skipped (host certificates are not supported)" in (
            entry["notes"]
        )
        assert f"{known}:2: malformed line skipped" in entry["notes"]
        assert f"{known}:3: malformed line skipped" in entry["notes"]


def test_a_revoked_host_key_is_refused_even_when_listed(
    fleet_env: FleetEnv, tmp_path: Path
) -> None:
    fleet = fleet_env.fleet
    addr, port = fleet.address("deb1")
    listed = host_line(fleet.known_hosts.read_text(), addr, port)
    known = tmp_path / "known_hosts"
    known.write_text(fleet.known_hosts.read_text() + f"@revoked {listed}\n")
    inv = write_inventory(tmp_path / "inv.toml", fleet, settings={"known_hosts": str(known)})
    run = search(inv)
    assert run.code == 3, run.stderr
    entry = host_entry(run.json(), "deb1")
    assert entry["ok"] is False and entry["error"]["stage"] == "host-key"
    assert "@revoked" in entry["error"]["message"]
    assert f"collector: deb1: host-key: {entry['error']['message']}" in run.stderr.splitlines()
    assert host_entry(run.json(), "mx1")["ok"] and host_entry(run.json(), "rhel1")["ok"]
    # and when the revoked key is not listed at all, it is still "revoked", not "unknown"
    known.write_text(
        "".join(x + "\n" for x in fleet.known_hosts.read_text().splitlines() if x != listed)
        + f"@revoked {listed}\n"
    )
    run = search(inv, "--host", "deb1")
    assert "@revoked" in host_entry(run.json(), "deb1")["error"]["message"]


@pytest.fixture
def chatty_port() -> Iterator[int]:
    """A server that answers with a banner that is not SSH (an SMTP greeting, escapes, junk)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"220 mx.example ESMTP \x1b]0;owned\x07\x1b[2J\r\n" + b"x" * 300 + b"\r\n")
                time.sleep(0.5)

    worker = threading.Thread(target=serve, daemon=True)
    worker.start()
    yield server.getsockname()[1]
    stop.set()
    worker.join()
    server.close()


def test_a_server_that_does_not_speak_ssh_is_one_line(
    fleet_env: FleetEnv, tmp_path: Path, chatty_port: int
) -> None:
    inv = write_inventory(tmp_path / "inv.toml", fleet_env.fleet,
                          {"smtp1": {"address": "127.0.0.1", "port": chatty_port}},
                          settings={"connect_timeout": 3})
    proc = subprocess.run(
        [sys.executable, "-m", "collector", "search", "-i", str(inv), "--host", "smtp1",
         "--host", "mx1", "--to", "alice@example.test"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("collector: smtp1: connect: ") and lines[0].endswith(
        "did not answer with an SSH banner (is an SSH server listening there?)"
    )
    assert "\x1b" not in proc.stderr
    assert "Traceback" not in proc.stderr

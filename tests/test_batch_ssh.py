"""Batches over real sshd: discovery asks its first questions in one round trip and finds
exactly what it found asking them one by one, on every kind of host of the shared fleet
(postconf or none, maillog_file or syslog files, a journal, sudo with and without a rule,
a bastion, a FIFO log, hostile file names)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from fleet_support import FleetEnv, write_inventory

from collector.errors import TransportError
from collector.inventory.load import load_inventory
from collector.models import CommandResult, Host, Inventory
from collector.search.view import SessionView, discover_host
from collector.transport import open_session
from collector.transport.base import Session, batch_argv, run_batch

pytest_plugins = ["fleet_support"]
pytestmark = pytest.mark.ssh

HOSTS = ("rhel1", "deb1", "logfile1", "journal1", "sudo1", "nosudo1", "inner1", "fifo1",
         "mx1", "mbox1", "quirk1")


class Counted:
    """A session that counts the commands (exec channels) it runs."""

    def __init__(self, inner: Session) -> None:
        self.inner = inner
        self.host = inner.host
        self.runs = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def run(self, argv: Sequence[str], **kw: Any) -> CommandResult:
        self.runs += 1
        return self.inner.run(argv, **kw)


@pytest.fixture(scope="module")
def inventory(fleet_env: FleetEnv, tmp_path_factory: pytest.TempPathFactory) -> Inventory:
    path = tmp_path_factory.mktemp("inv") / "inventory.toml"
    return load_inventory(write_inventory(path, fleet_env.fleet))


def _host(inventory: Inventory, name: str) -> Host:
    return next(h for h in inventory.hosts if h.name == name)


def _discover(inventory: Inventory, host: Host) -> tuple[object, int]:
    session = Counted(open_session(host, inventory.settings))
    try:
        try:
            found: object = discover_host(session, host)  # type: ignore[arg-type]
        except TransportError as exc:
            found = (exc.stage, exc.message)
        return found, session.runs
    finally:
        session.inner.close()


@pytest.mark.parametrize("name", HOSTS)
def test_discovery_in_one_round_trip_finds_what_it_found_before(
    inventory: Inventory, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = _host(inventory, name)
    batched, fewer = _discover(inventory, host)
    with monkeypatch.context() as m:
        m.setattr(SessionView, "prefetch", lambda self: None)
        one_by_one, more = _discover(inventory, host)
    assert batched == one_by_one
    if not isinstance(batched, tuple):  # a host that failed may fail before its listings
        assert fewer < more, (fewer, more)


def test_each_command_of_a_batch_over_ssh_gives_its_own_result(inventory: Inventory) -> None:
    """A sudo host's refusal, a missing program, a missing main.cf, hostile words: each
    command's result is its own, as ``run`` gives it."""
    host = _host(inventory, "nosudo1")
    session = open_session(host, inventory.settings)
    try:
        commands = [
            ["sudo", "-n", "--", "/usr/bin/cat", "/var/log/maillog"],
            ["/usr/sbin/postconf", "-c", "/nonexistent", "-x", "maillog_file"],
            ["/no/such/postconf", "-d"],
            ["printf", "%s\\n", "$(id)", "`id`", "C1", "X0", " 6c 6f", "'\"", "-n"],
            ["find", "/var/log", "-maxdepth", "1", "-printf", "%f\\0"],
        ]
        alone = [session.run(c, sudo=False) for c in commands]
        together = run_batch(session, commands)
        for one, batched, words in zip(alone, together, commands):
            assert (batched.stdout, batched.exit_code) == (one.stdout, one.exit_code), words
            if words[0] != "/no/such/postconf":  # bash -c words it "No such file or directory"
                assert batched.stderr == one.stderr, words
        assert together[0].exit_code == 1 and b"a password is required" in together[0].stderr
        assert together[2].exit_code == 127
        raw = session.run(batch_argv(commands), sudo=False)
        assert raw.stdout.count(b"\nX") == len(commands)  # one exec channel for all
    finally:
        session.close()


def test_prefetched_answers_are_taken_once(inventory: Inventory) -> None:
    """A question asked twice is asked of the host the second time (an answer is no cache)."""
    host = _host(inventory, "deb1")
    session = Counted(open_session(host, inventory.settings))
    try:
        view = SessionView(session)  # type: ignore[arg-type]
        view.prefetch()
        assert session.runs == 1
        first = view.list_dir("/var/log")
        assert session.runs == 1
        again = view.list_dir("/var/log")
        assert session.runs == 2 and first == again and first
    finally:
        session.inner.close()

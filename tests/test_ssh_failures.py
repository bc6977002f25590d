"""collector when hosts fail for real: sshd down, host keys, auth, sudo, a hanging command.

Each failure is produced on a real sshd host (tests/sshfleet.py), never faked. A failing host
must show up as one ``collector: NAME: STAGE: ...`` line on stderr and in the JSON ``hosts``
list, and must never hold the other hosts back beyond its own timeout.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet_support import FleetEnv, Run, cli, host_entry, row_key, write_inventory

pytest_plugins = ["fleet_support"]
pytestmark = pytest.mark.ssh

SELECTOR = ("--to", "alice@example.test")  # rows on the lab hosts, nothing on the others
GOOD = ("rhel1", "deb1", "mx1", "filter1", "mbox1", "out1")


def hosts_args(names: tuple[str, ...] | list[str]) -> list[str]:
    return [arg for name in names for arg in ("--host", name)]


def search(inv: Path, names: tuple[str, ...] | list[str], *extra: str) -> Run:
    return cli("search", "-i", str(inv), "-f", "json", *hosts_args(names), *SELECTOR, *extra)


def failed(run: Run, name: str, stage: str) -> str:
    """The error message of a failed host, checked in JSON and on stderr."""
    entry = host_entry(run.json(), name)
    assert entry["ok"] is False, entry
    assert entry["error"]["stage"] == stage, entry["error"]
    message: str = entry["error"]["message"]
    assert f"collector: {name}: {stage}: {message}" in run.stderr.splitlines(), run.stderr
    return message


def good_rows(run: Run) -> list[tuple[object, ...]]:
    return sorted(row_key(r) for r in run.json()["results"] if r["host"] in GOOD)


@pytest.fixture(scope="module")
def inv(fleet_env: FleetEnv, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_inventory(tmp_path_factory.mktemp("inv") / "inventory.toml", fleet_env.fleet)


@pytest.fixture(scope="module")
def baseline(inv: Path) -> list[tuple[object, ...]]:
    """What the healthy hosts return when nothing fails."""
    run = search(inv, GOOD)
    assert run.code == 0, run.stderr
    rows = good_rows(run)
    assert rows
    return rows


@contextlib.contextmanager
def stopped(fleet_env: FleetEnv, *names: str) -> Iterator[None]:
    for name in names:
        fleet_env.fleet.stop_host(name)
    try:
        yield
    finally:
        for name in names:
            fleet_env.fleet.start_host(name)


@pytest.fixture
def mute_port() -> Iterator[int]:
    """A port that accepts TCP connections but never says a word of SSH."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


# --------------------------------------------------------------------------- connect


def test_stopped_host_is_reported_and_the_others_answer(
    fleet_env: FleetEnv, inv: Path, baseline: list[tuple[object, ...]]
) -> None:
    with stopped(fleet_env, "quirk1"):
        run = search(inv, [*GOOD, "quirk1"])
    assert run.code == 3, run.stderr
    message = failed(run, "quirk1", "connect")
    assert "refused" in message and str(fleet_env.fleet.address("quirk1")[1]) in message
    assert good_rows(run) == baseline
    assert all(host_entry(run.json(), n)["ok"] for n in GOOD)
    # The table format says the same on stderr.
    with stopped(fleet_env, "quirk1"):
        table = cli("search", "-i", str(inv), *hosts_args([*GOOD, "quirk1"]), *SELECTOR)
    assert table.code == 3
    assert any(line.startswith("collector: quirk1: connect: ") for line in
               table.stderr.splitlines())
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["time", "host", "queue_id"]
    assert len(lines) == 2 + len(baseline)


def test_all_hosts_down_is_exit_2(fleet_env: FleetEnv, inv: Path) -> None:
    with stopped(fleet_env, "rhel1", "deb1"):
        run = search(inv, ["rhel1", "deb1"])
        check = cli("hosts", "--check", "-i", str(inv), "-f", "json", "--host", "rhel1",
                    "--host", "deb1")
    assert run.code == 2, run.stderr
    assert run.json()["results"] == []
    for name in ("rhel1", "deb1"):
        failed(run, name, "connect")
    assert check.code == 2
    for name in ("rhel1", "deb1"):
        entry = host_entry(check.json(), name)
        assert entry["ok"] is False and entry["reachable"] is False
        assert entry["error"]["stage"] == "connect"


def test_host_that_never_speaks_ssh_times_out_on_connect(
    fleet_env: FleetEnv, tmp_path: Path, mute_port: int, baseline: list[tuple[object, ...]]
) -> None:
    inv = write_inventory(tmp_path / "inv.toml", fleet_env.fleet,
                          {"mute1": {"address": "127.0.0.1", "port": mute_port}},
                          settings={"connect_timeout": 2})
    run = search(inv, [*GOOD, "mute1"])
    assert run.code == 3, run.stderr
    failed(run, "mute1", "connect")
    assert good_rows(run) == baseline
    assert run.seconds < 10, f"a mute host held the run for {run.seconds:.1f} s"


def test_banner_timeout_message_names_the_timeout(fleet_env: FleetEnv, tmp_path: Path,
                                                  mute_port: int) -> None:
    # Eight mute hosts at once: the race cannot pass eight times by luck (about 1 in 6500).
    mutes = {f"mute{n}": {"address": "127.0.0.1", "port": mute_port} for n in range(8)}
    inv = write_inventory(tmp_path / "inv.toml", fleet_env.fleet, mutes,
                          settings={"connect_timeout": 2})
    run = search(inv, ["rhel1", *mutes])
    assert run.code == 3, run.stderr
    messages = {name: failed(run, name, "connect") for name in mutes}
    assert all("timed out after 2 s" in m for m in messages.values()), messages


# --------------------------------------------------------------------------- host keys, auth


def test_unknown_host_key_is_a_host_key_error(
    fleet_env: FleetEnv, tmp_path: Path, baseline: list[tuple[object, ...]]
) -> None:
    fleet = fleet_env.fleet
    addr, port = fleet.address("mx1")
    known = tmp_path / "known_hosts"
    lines = fleet.known_hosts.read_text().splitlines(keepends=True)
    kept = [line for line in lines if not line.startswith(f"[{addr}]:{port} ")]
    assert len(kept) == len(lines) - 1
    known.write_text("".join(kept))
    inv = write_inventory(tmp_path / "inv.toml", fleet, settings={"known_hosts": str(known)})
    run = search(inv, GOOD)
    assert run.code == 3, run.stderr
    message = failed(run, "mx1", "host-key")
    assert "unknown host key" in message and str(known) in message
    assert good_rows(run) == [r for r in baseline if dict(r)["host"] != '"mx1"']
    # Strict by default: nothing was added to the known_hosts file.
    assert known.read_text() == "".join(kept)


def test_changed_host_key_is_a_host_key_error_that_says_changed(
    fleet_env: FleetEnv, inv: Path, baseline: list[tuple[object, ...]]
) -> None:
    fleet = fleet_env.fleet
    before = fleet.known_hosts.read_text()
    fleet.regenerate_host_key("deb1")
    try:
        assert fleet.known_hosts.read_text() == before
        run = search(inv, GOOD)
        check = cli("hosts", "--check", "-i", str(inv), "-f", "json", "--host", "deb1")
    finally:
        fleet.write_known_hosts()
    assert run.code == 3, run.stderr
    message = failed(run, "deb1", "host-key")
    assert "changed" in message.lower()
    assert good_rows(run) == [r for r in baseline if dict(r)["host"] != '"deb1"']
    assert check.code == 2
    entry = host_entry(check.json(), "deb1")
    assert entry["error"]["stage"] == "host-key" and entry["reachable"] is True
    # With known_hosts updated the host answers again.
    again = search(inv, ["deb1"])
    assert again.code == 1 and host_entry(again.json(), "deb1")["ok"]


def test_unauthorized_client_key_is_an_auth_error(
    fleet_env: FleetEnv, tmp_path: Path, baseline: list[tuple[object, ...]]
) -> None:
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
                   check=True, capture_output=True)
    inv = write_inventory(tmp_path / "inv.toml", fleet_env.fleet,
                          {"filter1": {"identity_file": str(other)}})
    run = search(inv, GOOD)
    assert run.code == 3, run.stderr
    message = failed(run, "filter1", "auth")
    assert "authentication failed" in message.lower()
    assert good_rows(run) == [r for r in baseline if dict(r)["host"] != '"filter1"']


# --------------------------------------------------------------------------- sudo, permissions


def test_missing_sudo_rule_is_a_sudo_error(fleet_env: FleetEnv, inv: Path,
                                           baseline: list[tuple[object, ...]]) -> None:
    run = search(inv, [*GOOD, "nosudo1"])
    assert run.code == 3, run.stderr
    message = failed(run, "nosudo1", "sudo")
    assert "sudo -n" in message and "NOPASSWD" in message
    assert good_rows(run) == baseline
    assert run.seconds < 10  # sudo -n never waits for a password


def test_unreadable_log_without_sudo_is_reported_and_partial(
    fleet_env: FleetEnv, tmp_path: Path
) -> None:
    # nosudo1's only log is root-only 0600; with sudo = false the user cannot read it. Lines
    # were not read, so the run is partial (exit 3), the host is named on stderr, and the
    # other host's answer stands.
    inv = write_inventory(tmp_path / "inv.toml", fleet_env.fleet, {"nosudo1": {"sudo": False}})
    run = cli("search", "-i", str(inv), "-f", "json", "--host", "nosudo1", "--host", "rhel1",
              "--to", "frank@example.net")
    assert run.code == 3, run.stderr
    assert run.stderr.strip().splitlines() == [
        "collector: nosudo1: read: cannot read /var/log/mail.log "
        "(permission denied; set sudo = true?)",
        "collector: nothing matched in what was read, but not all of it could be: inconclusive",
    ]
    entry = host_entry(run.json(), "nosudo1")
    assert entry["ok"] is True and entry["error"] is None
    assert any("cannot read /var/log/mail.log" in n and "sudo" in n for n in entry["notes"])
    assert host_entry(run.json(), "rhel1")["ok"] is True
    assert "Traceback" not in run.stderr
    verbose = cli("search", "-i", str(inv), "-v", "--host", "nosudo1", "--to", "frank@example.net")
    assert verbose.code == 3
    assert "collector: nosudo1: cannot read /var/log/mail.log" in verbose.stderr
    summary = cli("summary", "-i", str(inv), "-f", "json", "--host", "nosudo1")
    assert summary.code == 3, summary.stderr
    assert any("cannot read" in n for n in host_entry(summary.json(), "nosudo1")["notes"])


# --------------------------------------------------------------------------- timeouts


def test_hanging_command_times_out_and_the_others_stand(
    fleet_env: FleetEnv, tmp_path: Path, baseline: list[tuple[object, ...]]
) -> None:
    # fifo1's /var/log/maillog is a FIFO nobody writes: reading it blocks for ever.
    inv = write_inventory(tmp_path / "inv.toml", fleet_env.fleet,
                          settings={"command_timeout": 2})
    run = search(inv, [*GOOD, "fifo1"])
    assert run.code in (0, 3), run.stderr  # (which one: see the test below)
    assert good_rows(run) == baseline
    assert [r for r in run.json()["results"] if r["host"] == "fifo1"] == []
    assert 2 <= run.seconds < 10, f"took {run.seconds:.1f} s"
    # The timed-out command does not linger on the host: the remote `timeout` guard ends it
    # 5 s past collector's own 2 s deadline (sshd sends a root login's command no signal), so
    # it is gone within 7 s of the run's start, plus 3 s for a loaded machine.
    fleet = fleet_env.fleet
    deadline = time.monotonic() + max(0.0, 2 + 5 + 3 - run.seconds)
    while fleet.namespace_pids("fifo1") != [fleet.listener_pid("fifo1")]:
        assert time.monotonic() < deadline, [
            Path(f"/proc/{p}/cmdline").read_bytes() for p in fleet.namespace_pids("fifo1")]
        time.sleep(0.1)
    check = cli("hosts", "--check", "-i", str(inv), "-f", "json", "--host", "fifo1",
                "--host", "rhel1")
    assert check.code == 3
    assert "timed out after 2 s" in host_entry(check.json(), "fifo1")["error"]["message"]
    assert check.seconds < 10


def test_hanging_search_command_is_a_read_error_naming_the_timeout(
    fleet_env: FleetEnv, tmp_path: Path
) -> None:
    inv = write_inventory(tmp_path / "inv.toml", fleet_env.fleet,
                          settings={"command_timeout": 2})
    run = search(inv, ["rhel1", "fifo1"])
    message = failed(run, "fifo1", "read")
    assert "timed out after 2 s" in message, message
    assert run.code == 3
    assert not any("damaged" in n for n in host_entry(run.json(), "fifo1")["notes"])


def test_every_failure_at_once_costs_no_more_than_the_slowest_timeout(
    fleet_env: FleetEnv, tmp_path: Path, mute_port: int, baseline: list[tuple[object, ...]]
) -> None:
    fleet = fleet_env.fleet
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
                   check=True, capture_output=True)
    inv = write_inventory(
        tmp_path / "inv.toml", fleet,
        {"inner1": {"identity_file": str(other)},
         "mute1": {"address": "127.0.0.1", "port": mute_port}},
        settings={"command_timeout": 2, "connect_timeout": 2},
    )
    names = [*GOOD, "quirk1", "nosudo1", "fifo1", "inner1", "mute1"]
    with stopped(fleet_env, "quirk1"):
        run = search(inv, names)
    assert run.code == 3, run.stderr
    stages = {n: host_entry(run.json(), n)["error"]["stage"]
              for n in ("quirk1", "nosudo1", "inner1", "mute1")}
    assert stages == {"quirk1": "connect", "nosudo1": "sudo", "inner1": "auth",
                      "mute1": "connect"}
    assert good_rows(run) == baseline
    assert len([x for x in run.stderr.splitlines() if x.startswith("collector: ")]) >= 4
    assert run.seconds < 10, f"took {run.seconds:.1f} s"


def test_subprocess_run_reports_failures_the_same_way(fleet_env: FleetEnv, inv: Path) -> None:
    import sys

    with stopped(fleet_env, "quirk1"):
        done = subprocess.run(
            [sys.executable, "-m", "collector", "search", "-i", str(inv), "--host", "rhel1",
             "--host", "quirk1", "--to", "bob@example.net"],
            capture_output=True, text=True, timeout=60, check=False,
            cwd=Path(__file__).resolve().parent.parent,
        )
    assert done.returncode == 3, done.stderr
    assert "3A1F2C0102" in done.stdout
    assert [x for x in done.stderr.splitlines() if x.startswith("collector: quirk1: connect: ")]
    assert "Traceback" not in done.stderr



def test_many_agent_keys_do_not_lock_out_the_identity_file(
    fleet_env: FleetEnv, tmp_path: Path, crowded_agent: Path, baseline: list[tuple[object, ...]]
) -> None:
    # Before: the agent's 7 keys went first and sshd refused the host after 6 of them.
    inv = write_inventory(tmp_path / "inv.toml", fleet_env.fleet,
                          {"deb1": {"identities_only": True}})
    run = search(inv, GOOD)
    assert run.code == 0, run.stderr
    assert good_rows(run) == baseline
    # With identities_only and a key the host does not know, only that key is tried.
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
                   check=True, capture_output=True)
    inv = write_inventory(tmp_path / "inv2.toml", fleet_env.fleet,
                          {"deb1": {"identities_only": True, "identity_file": str(other)}})
    run = search(inv, ["deb1", "rhel1"])
    assert run.code == 3, run.stderr
    message = failed(run, "deb1", "auth")
    assert message.endswith(f"(tried {other})")  # no agent key

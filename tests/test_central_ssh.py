"""Central log hosts over real SSH: one sshd host holds the lab's four hosts' lines.

``loghost`` keeps them in one combined /var/log/mail.log; ``jloghost`` in the files
systemd-journal-remote wrote (/var/log/journal/remote/remote-HOST.journal), read with
``journalctl -D`` on the host. Each answers every lab trace as the per-host fleet does, in
one read per round of the log host (not one per host it carries).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fleet_support import cli
from lab_fleet import (
    EXPECTED,
    SCENARIOS,
    build_central_fleet,
    build_journal_remote_fleet,
    build_lab_fleet,
)
from sshfleet import Fleet, running_fleet, spec_from_tree

pytestmark = [pytest.mark.ssh]

HOSTS = tuple(EXPECTED["hosts"])
JOURNAL_REMOTE = ("/usr/lib/systemd/systemd-journal-remote", "/lib/systemd/systemd-journal-remote")


@dataclass(frozen=True, slots=True)
class Central:
    fleet: Fleet
    per_host: Path
    combined: Path  # inventory: loghost carries the four
    journal: Path  # inventory: jloghost carries the four


def _inventory(fleet: Fleet, path: Path, reader: str, other: str, **keys: object) -> Path:
    carried: dict[str, dict[str, object]] = {
        name: {"aliases": [EXPECTED["hosts"][name]["fqdn"], EXPECTED["hosts"][name]["ip"]]}
        for name in HOSTS
    }
    extra = {reader: {"collects": list(HOSTS), "timezone": "UTC", **keys},
             other: {"logs": ["/var/log/nothing-here.log"]}, **carried}
    path.write_text(fleet.inventory_toml(extra))
    return path


@pytest.fixture(scope="module")
def central(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Central]:
    base = tmp_path_factory.mktemp("central-ssh")
    build_central_fleet(base / "combined")
    tool = next(t for t in JOURNAL_REMOTE if Path(t).is_file())
    build_journal_remote_fleet(base / "journal", tool)
    specs = [spec_from_tree("loghost", base / "combined" / "loghost"),
             spec_from_tree("jloghost", base / "journal" / "loghost")]
    per_host = build_lab_fleet(base / "lab")
    with running_fleet(base / "fleet", specs) as fleet:
        yield Central(
            fleet, per_host,
            _inventory(fleet, base / "combined.toml", "loghost", "jloghost"),
            _inventory(fleet, base / "journal.toml", "jloghost", "loghost",
                       logs=["/var/log/journal/remote/*.journal"]),
        )  # fmt: skip


def _trace(inventory: Path, scenario: dict[str, Any], *extra: str) -> tuple[Any, str]:
    if all(f["fate"] == "rejected" for f in scenario["fates"]):
        args = ["--from", scenario["sender"]]
        for recipient in scenario["recipients"]:
            args += ["--to", recipient]
    else:
        args = ["--", scenario["message_id"]]
    run = cli("trace", "--format", "json", "-i", str(inventory), *extra, *args)
    assert run.code == 0, (scenario["name"], run.code, run.stderr)
    return run.json(), run.stderr


@pytest.mark.parametrize("layout", ["combined", "journal"])
def test_every_lab_trace_through_an_ssh_log_host_equals_the_per_host_trace(
    central: Central, layout: str
) -> None:
    inventory = central.combined if layout == "combined" else central.journal
    reader = "loghost" if layout == "combined" else "jloghost"
    for name, scenario in SCENARIOS.items():
        direct, said_direct = _trace(central.per_host, scenario, "-v")
        through, said = _trace(inventory, scenario, "-v")
        assert through["traces"] == direct["traces"], name
        hosts = {h["name"]: h for h in through["hosts"]}
        assert all(hosts[n]["via"] == reader and hosts[n]["ok"] for n in HOSTS), name
        # the log host is read once per round for all the hosts it carries: no more
        # commands than the four hosts read one by one
        assert _commands(said) <= _commands(said_direct), (name, said, said_direct)


@pytest.mark.parametrize("layout", ["combined", "journal"])
def test_incidents_through_an_ssh_log_host_equal_the_per_host_incidents(
    central: Central, layout: str
) -> None:
    inventory = central.combined if layout == "combined" else central.journal
    args = ["-f", "json", "--since", "2000-01-01", *(a for n in HOSTS for a in ("--host", n))]
    direct = cli("incidents", "-i", str(central.per_host), *args)
    through = cli("incidents", "-i", str(inventory), *args)
    assert direct.code == through.code == 0, (direct.stderr, through.stderr)
    found = through.json()["incidents"]
    assert found == direct.json()["incidents"]
    assert {x["host"] for i in found for x in i["hosts"]} >= {"mx1", "filter1", "out1"}


def _commands(stderr: str) -> int:
    found = re.search(r"(\d+) rounds, (\d+) commands", stderr)
    assert found, stderr
    return int(found[2])


def test_search_with_host_reads_the_log_host_once(central: Central) -> None:
    args = ["--to", "alice@example.test", "-f", "json"]
    direct = cli("search", "-i", str(central.per_host), "--host", "mbox1", *args).json()
    run = cli("search", "-i", str(central.combined), "--host", "mbox1", "--host", "mx1", *args)
    assert run.code == 0, run.stderr
    mine = [r for r in run.json()["results"] if r["host"] == "mbox1"]
    assert mine == direct["results"] and mine
    assert {r["host"] for r in run.json()["results"]} == {"mbox1", "mx1"}
    assert [(h["name"], h["via"]) for h in run.json()["hosts"]] == [
        ("mx1", "loghost"), ("mbox1", "loghost")]


def test_a_log_host_that_refuses_the_login_fails_each_host_it_carries(
    central: Central, tmp_path: Path
) -> None:
    inventory = _inventory(central.fleet, tmp_path / "bad.toml", "loghost", "jloghost",
                           user="nobody-here")
    run = cli("search", "-i", str(inventory), "--to", "alice@example.test", "-f", "json")
    lines = run.stderr.splitlines()
    hosts = {h["name"]: h for h in run.json()["hosts"]}
    assert hosts["loghost"]["error"]["stage"] == "auth", json.dumps(hosts["loghost"])
    for name in HOSTS:
        assert hosts[name]["via"] == "loghost" and hosts[name]["error"]["stage"] == "auth"
        assert any(x.startswith(f"collector: {name}: auth (via loghost): ") for x in lines)
    assert hosts["jloghost"]["ok"]
    assert run.code == 3  # partial: jloghost answered

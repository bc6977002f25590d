"""Shared pieces of the tests that run collector against real sshd hosts (PYTEST_DONT_REWRITE).

Used as a pytest plugin (``pytest_plugins = ["fleet_support"]``) so that every test module
shares one session-scoped fleet: the hosts of ``standard_specs()``, the four hosts of the
Postfix lab's committed output (real logs in postlogd, BSD and RFC 3339 formats) and
``quirk1``, whose log holds real lab lines re-addressed to recipients whose addresses contain
shell and glob metacharacters.

Tests that change a host (stop it, give it a new key) must put it back in a ``finally``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sshfleet import Fleet, HostSpec, running_fleet, spec_from_tree, standard_specs
from typer.testing import CliRunner, Result

from collector.cli.app import app

TESTS = Path(__file__).resolve().parent
LAB_FIXTURES = TESTS / "fixtures" / "lab"
LAB_HOSTS = ("mx1", "filter1", "mbox1", "out1")

#: Hosts that answer every command quickly and readably: the ones a search may ask at once.
#: nosudo1 has no sudo rule, fifo1's log never ends, bastion1 only forwards.
ANSWERING = ("rhel1", "deb1", "logfile1", "journal1", "sudo1", "inner1", *LAB_HOSTS, "quirk1")
#: Hosts whose files a local-transport inventory can read (journal1's journal is no file).
FILE_HOSTS = tuple(h for h in ANSWERING if h != "journal1")

# The template of quirk1's log: a real, complete queue group of the lab's mx1 (scenario
# "single": one recipient, relayed to filter1).
_QUIRK_SCENARIO = "single"


@dataclass(frozen=True, slots=True)
class FleetEnv:
    """The running fleet and what the tests need to know about it."""

    fleet: Fleet
    canary_dir: Path  # world-writable, shared by every host: an injected command would write here
    quirk_addresses: tuple[str, ...]  # recipients in quirk1's log, one queue ID each
    quirk_ids: tuple[str, ...]

    def canaries(self) -> list[str]:
        """Files an injected command created anywhere it could (shared dir, hosts' /root)."""
        found = [str(p) for p in self.canary_dir.iterdir()]
        for name in self.fleet.names:
            if not self.fleet.spec(name).jump_only:
                found += [str(p) for p in self.fleet.host_path(name, "/root").glob("CANARY*")]
        return found


def quirk_addresses(canary_dir: Path) -> tuple[str, ...]:
    """Legitimate RFC 5321 recipients full of characters a shell or a glob would act on."""
    return (
        "o'brien@example.test",
        f'"we;ird$(touch {canary_dir}/in-address)"@example.test',
        '"tick`touch /root/CANARY-tick`;x"@example.test',
        "-dash@example.test",
        '"st*r?q[x"@example.test',
    )


def _quirk_log(addresses: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    """quirk1's log: the template group once per address, each with its own queue ID."""
    expected = json.loads((LAB_FIXTURES / "expected.json").read_text())
    (scenario,) = [s for s in expected["scenarios"] if s["name"] == _QUIRK_SCENARIO]
    (recipient,) = scenario["recipients"]
    source = (LAB_FIXTURES / "mx1" / "var" / "log" / "postfix-mx1.log").read_text()
    found = re.search(r" ([0-9A-F]+): message-id=" + re.escape(scenario["message_id"]), source)
    assert found, "the lab's mx1 log lacks the template scenario"
    template_id = found[1]
    template = [line for line in source.splitlines() if f" {template_id}: " in line]
    assert any(f"to=<{recipient}>" in x for x in template), template
    lines: list[str] = []
    ids: list[str] = []
    for n, address in enumerate(addresses):
        qid = f"{template_id[:-2]}{0xA0 + n:02X}"
        assert qid not in source
        ids.append(qid)
        for line in template:
            line = line.replace(template_id, qid).replace(" mx1 ", " quirk1 ", 1)
            line = line.replace(f"to=<{recipient}>", f"to=<{address}>")
            line = line.replace(scenario["message_id"],
                                scenario["message_id"].replace("<single.", f"<quirk{n}."))
            lines.append(line)
    return "\n".join(lines) + "\n", tuple(ids)


def lab_spec(name: str, lab: Path, **kwargs: Any) -> HostSpec:
    """A host whose filesystem is the lab output ``lab/<name>``, logs with the lab's mtimes."""
    mtimes_file = json.loads((lab / "mtimes.json").read_text())
    mtimes = {
        "/" + rel.split("/", 1)[1]: float(when)
        for rel, when in mtimes_file.items()
        if rel.split("/", 1)[0] == name
    }
    return spec_from_tree(name, lab / name, mtimes=mtimes, **kwargs)


def search_specs(canary_dir: Path) -> tuple[list[HostSpec], tuple[str, ...], tuple[str, ...]]:
    addresses = quirk_addresses(canary_dir)
    log, ids = _quirk_log(addresses)
    quirk = HostSpec(
        name="quirk1",
        files={
            # No maillog_file: Postfix logs through syslog, to the RHEL default path.
            "/etc/postfix/main.cf": "myhostname = quirk1.example.test\n"
                                    "mydomain = example.test\n"
                                    "inet_interfaces = loopback-only\n"
                                    "compatibility_level = 3.7\n",
            "/var/log/maillog": log,
        },
        mtimes={"/var/log/maillog": lab_spec("mx1", LAB_FIXTURES).mtimes[
            "/var/log/postfix-mx1.log"]},
    )
    specs = [*standard_specs(), *(lab_spec(n, LAB_FIXTURES) for n in LAB_HOSTS), quirk]
    return specs, addresses, ids


@pytest.fixture(scope="session")
def fleet_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetEnv]:
    canary_dir = Path(tempfile.mkdtemp(prefix="collector-canary-", dir="/tmp"))
    os.chmod(canary_dir, 0o1777)
    try:
        specs, addresses, ids = search_specs(canary_dir)
        with running_fleet(tmp_path_factory.mktemp("sshfleet"), specs) as fleet:
            yield FleetEnv(fleet, canary_dir, addresses, ids)
    finally:
        shutil.rmtree(canary_dir, ignore_errors=True)


# --------------------------------------------------------------------------- inventories


def inventory_text(
    fleet: Fleet,
    extra: Mapping[str, Mapping[str, object]] = {},
    *,
    settings: Mapping[str, object] = {},
    groups: bool = True,
) -> str:
    """The fleet's inventory; answering hosts are in group ``ok``; ``settings`` go on top."""
    keys: dict[str, dict[str, object]] = {}
    if groups:
        for name in ANSWERING:
            keys[name] = {"groups": ["ok"]}
    for name, values in extra.items():
        keys.setdefault(name, {}).update(values)
    text = fleet.inventory_toml(keys)
    for key in settings:  # a setting given here replaces the fleet's own (known_hosts)
        text = re.sub(rf"(?m)\A((?:(?!\[).*\n)*?){re.escape(key)} = .*\n", r"\1", text)
    top = "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
    tables = "\n[groups.ok]\n" if groups else ""
    return top + text + tables


def write_inventory(path: Path, fleet: Fleet, extra: Mapping[str, Mapping[str, object]] = {},
                    **kwargs: Any) -> Path:
    path.write_text(inventory_text(fleet, extra, **kwargs))
    return path


def local_inventory(path: Path, fleet: Fleet, names: Sequence[str]) -> Path:
    """An inventory that reads the same hosts' files directly (``transport = "local"``)."""
    parts = []
    for name in names:
        root = fleet.host_path(name, "/etc/postfix").parent.parent
        parts.append(f'[[hosts]]\nname = "{name}"\ntransport = "local"\nroot = "{root}"\n')
    path.write_text("\n".join(parts))
    return path


# --------------------------------------------------------------------------- running the CLI


@dataclass(frozen=True, slots=True)
class Run:
    code: int
    stdout: str
    stderr: str
    seconds: float
    result: Result

    def json(self) -> Any:
        return json.loads(self.stdout)


def cli(*args: str) -> Run:
    """``collector ARGS`` in-process; exceptions other than SystemExit propagate."""
    began = time.monotonic()
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    seconds = time.monotonic() - began
    return Run(result.exit_code, result.stdout, result.stderr, seconds, result)


def row_key(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """A search row as a comparable tuple (every column)."""
    return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in row.items()))


def host_entry(payload: Mapping[str, Any], name: str) -> dict[str, Any]:
    found = [h for h in payload["hosts"] if h["name"] == name]
    assert len(found) == 1, f"{name} not exactly once in {[h['name'] for h in payload['hosts']]}"
    entry: dict[str, Any] = found[0]
    return entry

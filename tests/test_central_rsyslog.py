"""A real central syslog host: the lab's Postfix instances forwarded their logs over TCP to a
real rsyslog receiver (tests/lab, ``run --central``; committed as tests/fixtures/lab-central).

The same run wrote each host's own log too, so "through the log host" and "per host" answer
for identical traffic. Every lab scenario's trace through the receiver's files must equal the
per-host trace, in each layout the receiver wrote: the combined file (traditional and RFC 3339
stamps), one file per sending host (dynaFile on %HOSTNAME%), and the journal files
systemd-journal-remote writes of what the log host received (read with ``journalctl -D``).

Equal up to the precision of the stamps: a traditional syslog stamp has whole seconds, while
the receiver's RFC 3339 file and the journal keep microseconds that the hosts' own BSD and
postlogd files do not. Times are compared to the second, and a link's measured hand-off delay
(evidence ``time+1.0s``) only for being there; every host, queue ID, link, status and outcome
must be the same (events of one second may come in either order).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from fleet_support import cli
from lab_fleet import build_lab_fleet, copy_lab_host

from tests.lab.postfix_lab import write_remote_journals

LAB_CENTRAL = Path(__file__).parent / "fixtures" / "lab-central"
EXPECTED: dict[str, Any] = json.loads((LAB_CENTRAL / "expected.json").read_text("utf-8"))
MTIMES: dict[str, float] = json.loads((LAB_CENTRAL / "mtimes.json").read_text("utf-8"))
SCENARIOS = {s["name"]: s for s in EXPECTED["scenarios"]}
HOSTS = tuple(EXPECTED["hosts"])

#: layout -> the log host's ``logs`` globs (what an admin writes for that receiver layout).
LAYOUTS = {
    "combined": ["/var/log/mail.log"],
    "combined-rfc3339": ["/var/log/mail-iso.log"],
    "per-host-files": ["/var/log/remote/*/mail.log"],
    "journal-remote": ["/var/log/journal/remote/*.journal"],
}


@pytest.fixture(scope="module")
def per_host(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_lab_fleet(tmp_path_factory.mktemp("per-host"), lab=LAB_CENTRAL)


@pytest.fixture(scope="module")
def loghost_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("central")
    root = copy_lab_host(dest, "loghost", LAB_CENTRAL, MTIMES)
    journals = write_remote_journals(root)
    assert set(journals) == set(HOSTS)
    return root


def central_inventory(dest: Path, root: Path, logs: list[str]) -> Path:
    text = ['[defaults]', 'timezone = "UTC"', '', '[[hosts]]', 'name = "loghost"',
            'transport = "local"', f"root = {json.dumps(str(root))}",
            f"collects = {json.dumps(list(HOSTS))}", f"logs = {json.dumps(logs)}"]
    for name in HOSTS:
        info = EXPECTED["hosts"][name]
        text += ["", "[[hosts]]", f'name = "{name}"',
                 f'aliases = ["{info["fqdn"]}", "{info["ip"]}"]']
    inventory = dest / "inventory.toml"
    inventory.write_text("\n".join(text) + "\n", encoding="utf-8")
    return inventory


@pytest.fixture(scope="module", params=list(LAYOUTS))
def central(request: pytest.FixtureRequest, loghost_root: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Path:
    return central_inventory(tmp_path_factory.mktemp(request.param), loghost_root,
                             LAYOUTS[request.param])


def trace_args(scenario: dict[str, Any]) -> list[str]:
    if all(f["fate"] == "rejected" for f in scenario["fates"]):
        args = ["--from", scenario["sender"]]
        for recipient in scenario["recipients"]:
            args += ["--to", recipient]
        return args
    return ["--", scenario["message_id"]]


_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.\d+(\+00:00)$")
_DELAY = re.compile(r"^time[+-]\d+\.\ds$")


def to_the_second(value: Any) -> Any:
    """``value`` with every timestamp cut to whole seconds and each measured delay unsaid."""
    if isinstance(value, dict):
        return {k: to_the_second(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_the_second(v) for v in value]
    if isinstance(value, str):
        if _DELAY.match(value):
            return "time(delay)"
        return _STAMP.sub(r"\1\2", value)
    return value


def same(items: list[Any]) -> list[str]:
    """Items to the second, in a canonical order: with whole-second stamps, two events of the
    same second may sort either way."""
    return sorted(json.dumps(to_the_second(item), sort_keys=True) for item in items)


def answer(inventory: Path, *args: str) -> tuple[int, Any]:
    run = cli(args[0], "-i", str(inventory), *args[1:])
    assert run.code in (0, 1), (args, run.code, run.stderr)
    return run.code, run.json()


def test_the_fixture_holds_every_host_in_every_layout(loghost_root: Path) -> None:
    combined = (loghost_root / "var/log/mail.log").read_text("utf-8").splitlines()
    assert {line.split()[3] for line in combined} == set(HOSTS)
    for name in HOSTS:
        own = (LAB_CENTRAL / name / EXPECTED["hosts"][name]["log"]["path"].lstrip("/"))
        per_file = (loghost_root / f"var/log/remote/{name}/mail.log").read_text("utf-8")
        assert len(per_file.splitlines()) == len(own.read_text("utf-8").splitlines())


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_trace_through_the_rsyslog_receiver_equals_the_per_host_trace(
    per_host: Path, central: Path, name: str
) -> None:
    args = ["trace", "--format", "json", *trace_args(SCENARIOS[name])]
    code_direct, direct = answer(per_host, *args)
    code_through, through = answer(central, *args)
    assert code_direct == code_through == 0, name
    assert direct["traces"], name
    assert same(through["traces"]) == same(direct["traces"])
    vias = {h["name"]: h.get("via") for h in through["hosts"]}
    assert {vias[h] for h in HOSTS if h in vias} == {"loghost"}
    assert all(h["ok"] for h in through["hosts"])


def test_search_and_summary_through_the_receiver_equal_the_per_host_answers(
    per_host: Path, central: Path
) -> None:
    recipients = sorted({r for s in SCENARIOS.values() for r in s["recipients"]})
    args = ["search", "--format", "json"]
    for recipient in recipients:
        args += ["--to", recipient]
    _, direct = answer(per_host, *args)
    _, through = answer(central, *args)
    assert direct["results"]
    assert same(through["results"]) == same(direct["results"])
    _, direct_summary = answer(per_host, "summary", "--format", "json")
    _, through_summary = answer(central, "summary", "--format", "json")
    counts = {h["name"]: h["summary"] for h in through_summary["hosts"]}
    assert {h["name"]: h["summary"] for h in direct_summary["hosts"]} == {
        n: counts[n] for n in HOSTS
    }

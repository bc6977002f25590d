"""Live end to end: real Postfix relay chain -> real sshd hosts -> ``collector trace``.

The lab (tests/lab/postfix_lab.py) sends its scenarios through mx1 -> filter1 (content filter,
reinjection) -> mbox1 / out1 and writes each host's main.cf and log. Every host root is then
served by its own sshd, and ``collector trace --format json`` must reproduce, for every
scenario, what ``expected.json`` says was sent: each recipient's fate, where it ended, the
hosts the message visited, and the delivery status notifications. Nothing is hard-coded: the
comparison is built from ``expected.json`` alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fleet_support import LAB_FIXTURES, cli, lab_spec
from lab.postfix_lab import run_lab, stop_lab
from sshfleet import Fleet, running_fleet

pytestmark = [pytest.mark.lab, pytest.mark.ssh]

#: Scenario names; the live run must have exactly these (checked below), so none is left out.
SCENARIOS = [s["name"] for s in json.loads((LAB_FIXTURES / "expected.json").read_text())
             ["scenarios"]]

#: What a recipient's ``outcome`` must be for each fate in expected.json.
OUTCOME_OF_FATE = {
    "delivered": "delivered",
    "bounced": "bounced",
    "rejected": "rejected",
    "deferred": "queued",
    "expired": "expired",
    "forwarded": "delivered",
    "discarded": "discarded",
}
STATUS_OF_FATE = {"delivered": "sent", "bounced": "bounced", "rejected": "rejected",
                  "deferred": "deferred", "expired": "expired", "forwarded": "sent"}


@dataclass(frozen=True, slots=True)
class Lab:
    mode: str  # quick (live run) or full (the committed output of a full run)
    out: Path  # OUT/<host>/..., OUT/expected.json, OUT/mtimes.json
    expected: dict[str, Any]
    fleet: Fleet
    inventory: Path
    traces: dict[str, list[dict[str, Any]]]  # scenario name -> traces its query returned
    seconds: dict[str, float]


@pytest.fixture(scope="module", params=["live-quick", "committed-full"])
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[Lab]:
    """The live quick run, and the committed full run (expiries, delay notices, double bounce)."""
    base = tmp_path_factory.mktemp("e2e")
    try:
        if request.param == "live-quick":
            out = run_lab(base / "out", quick=True).out
        else:
            out = LAB_FIXTURES
        expected = json.loads((out / "expected.json").read_text())
        specs = [lab_spec(name, out) for name in expected["hosts"]]
        with running_fleet(base / "fleet", specs) as fleet:
            aliases = {name: {"aliases": [host["fqdn"], host["ip"]]}
                       for name, host in expected["hosts"].items()}
            inventory = base / "inventory.toml"
            inventory.write_text(fleet.inventory_toml(aliases))
            traces: dict[str, list[dict[str, Any]]] = {}
            seconds: dict[str, float] = {}
            for scenario in expected["scenarios"]:
                run = cli("trace", "--format", "json", "-i", str(inventory),
                          *trace_query(scenario))
                assert run.code == 0, (scenario["name"], run.code, run.stderr)
                payload = run.json()
                assert all(h["ok"] for h in payload["hosts"]), payload["hosts"]
                traces[scenario["name"]] = payload["traces"]
                seconds[scenario["name"]] = run.seconds
            yield Lab(request.param.split("-")[1], out, expected, fleet, inventory, traces,
                      seconds)
    finally:
        if request.param == "live-quick":
            stop_lab()  # run_lab stops the chain itself; this also covers an interrupted run


def trace_query(scenario: Mapping[str, Any]) -> list[str]:
    """The message-id; a message refused before it had a queue file never logged one, so
    those are looked up by their envelope."""
    if all(f["fate"] == "rejected" for f in scenario["fates"]):
        args = ["--from", scenario["sender"]]
        for recipient in scenario["recipients"]:
            args += ["--to", recipient]
        return args
    return ["--", scenario["message_id"]]


def scenario_of(lab: Lab, name: str) -> dict[str, Any]:
    (found,) = [s for s in lab.expected["scenarios"] if s["name"] == name]
    return found


def the_trace(lab: Lab, scenario: Mapping[str, Any]) -> dict[str, Any]:
    """The one trace of this scenario's message."""
    traces = lab.traces[scenario["name"]]
    if all(f["fate"] == "rejected" for f in scenario["fates"]):
        wanted = {f["recipient"] for f in scenario["fates"]}
        traces = [t for t in traces if t["message_id"] is None
                  and {r["address"] for r in t["recipients"]} == wanted]
    else:
        traces = [t for t in traces if t["message_id"] == scenario["message_id"]]
    assert len(traces) == 1, (scenario["name"], [t["message_id"] for t in lab.traces[
        scenario["name"]]])
    return traces[0]


def collapse(hosts: list[str]) -> list[str]:
    """Hosts in order, a host repeated by reinjection or a local forward counted once."""
    out: list[str] = []
    for host in hosts:
        if not out or out[-1] != host:
            out.append(host)
    return out


def qualified(lab: Lab, scenario: Mapping[str, Any], address: str) -> str:
    """An address as Postfix logs it: a bare local part gets the submitting host's name."""
    if "@" in address:
        return address
    return f"{address}@{lab.expected['hosts'][scenario['submitted']['host']]['fqdn']}"


def recipients_for(lab: Lab, scenario: Mapping[str, Any], trace: Mapping[str, Any],
                   recipient: str) -> list[dict[str, Any]]:
    names = {recipient, qualified(lab, scenario, recipient)}
    return [r for r in trace["recipients"]
            if r["address"] in names or r["orig_address"] in names]


def flat_notifications(trace: Mapping[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for note in trace["notifications"]:
        out.append(note)
        out.extend(flat_notifications(note))
    return out


def refused_by_next_hop(fate: Mapping[str, Any]) -> bool:
    """A bounce logged at one host for a refusal by a later host of the path."""
    return fate["fate"] == "bounced" and fate["path"][-1] != fate["at"]


# --------------------------------------------------------------------------- tests


def test_lab_ran_every_scenario_and_traced_it_quickly(lab: Lab) -> None:
    assert lab.expected["lab"]["mode"] == lab.mode
    assert [s["name"] for s in lab.expected["scenarios"]] == SCENARIOS
    assert set(lab.traces) == set(SCENARIOS)
    # Each trace is a few SSH round trips per host, not a crawl.
    assert max(lab.seconds.values()) < 20, lab.seconds


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_recipient_ends_as_its_fate_says(lab: Lab, name: str) -> None:
    scenario = scenario_of(lab, name)
    trace = the_trace(lab, scenario)
    matched: list[int] = []
    for fate in scenario["fates"]:
        found = recipients_for(lab, scenario, trace, fate["recipient"])
        assert found, (name, fate["recipient"], [r["address"] for r in trace["recipients"]])
        for r in found:
            matched.append(id(r))
            what = (name, fate["recipient"], fate["fate"], r)
            assert r["outcome"] == OUTCOME_OF_FATE[fate["fate"]], what
            if fate["fate"] in STATUS_OF_FATE:
                assert r["status"] == STATUS_OF_FATE[fate["fate"]], what
            assert r["host"] == fate["at"], what
            if fate["fate"] == "forwarded":
                # Delivered by the new queue file the alias expansion made on the same host.
                assert r["orig_address"] in {fate["recipient"],
                                             qualified(lab, scenario, fate["recipient"])}, what
                last = r["path"][-1]
                hop = next(h for h in trace["hops"] if (h["host"], h["queue_id"]) ==
                           (last["host"], last["queue_id"]))
                assert hop["via"] == "forward", (what, hop)
    # No recipient that nobody sent to.
    extra = [r for r in trace["recipients"] if id(r) not in matched]
    assert extra == [], (name, extra)


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_recipient_path_visits_the_hosts_in_order(lab: Lab, name: str) -> None:
    scenario = scenario_of(lab, name)
    trace = the_trace(lab, scenario)
    for fate in scenario["fates"]:
        for r in recipients_for(lab, scenario, trace, fate["recipient"]):
            hosts = collapse([p["host"] for p in r["path"]])
            assert hosts == fate["path"], (name, fate["recipient"], hosts, fate["path"])


@pytest.mark.parametrize("name", SCENARIOS)
def test_hops_are_linked_hand_offs(lab: Lab, name: str) -> None:
    scenario = scenario_of(lab, name)
    trace = the_trace(lab, scenario)
    hops = trace["hops"]
    assert hops[0]["parent"] is None
    assert hops[0]["host"] == scenario["submitted"]["host"]
    known = {(h["host"], h["queue_id"]) for h in hops}
    for hop in hops[1:]:
        assert hop["parent"] is not None, (name, hop)
        assert (hop["parent"]["host"], hop["parent"]["queue_id"]) in known, (name, hop)
    for hop in hops:
        if hop["queue_id"] != "NOQUEUE" and hop["message_id"] is not None:
            assert hop["message_id"] == scenario["message_id"], (name, hop)
    # A content-filter round trip on filter1 shows as a reinjection hop.
    passes_filter = any(f["path"][:2] == ["mx1", "filter1"] and
                        f["fate"] not in ("rejected",) and not refused_by_next_hop(f) and
                        f["path"][-1] != "filter1" for f in scenario["fates"])
    if passes_filter:
        assert any(h["via"] == "reinjection" and h["host"] == "filter1" for h in hops), name


@pytest.mark.parametrize("name", SCENARIOS)
def test_notifications_are_traced_to_their_own_fate(lab: Lab, name: str) -> None:
    scenario = scenario_of(lab, name)
    trace = the_trace(lab, scenario)
    notes = flat_notifications(trace)
    expected = scenario["notifications"]
    assert len(notes) == len(expected), (name, [n["hops"][0]["host"] for n in notes], expected)
    if any(f["fate"] == "bounced" for f in scenario["fates"]):
        assert any(n["kind"] == "non-delivery" for n in expected)
        assert notes, f"{name}: a bounce without a delivery status notification trace"
    remaining = list(notes)
    for want in expected:
        fits = [n for n in remaining if n["hops"][0]["host"] == want["generated_at"]
                and any(r["address"] == want["to"] for r in n["recipients"])]
        assert fits, (name, want, [(n["hops"][0]["host"], [r["address"] for r in
                                                            n["recipients"]]) for n in notes])
        note = fits[0]
        remaining.remove(note)
        # The null sender <>; a notice to the postmaster comes from double-bounce@ (so that a
        # failure to deliver it is dropped, not bounced again).
        origin = lab.expected["hosts"][want["generated_at"]]["fqdn"]
        sender = f"double-bounce@{origin}" if "double bounce" in want["kind"] else ""
        assert note["sender"] == sender, (name, want["kind"], note["sender"])
        assert note["hops"][0]["via"] == "notification"
        (r,) = [r for r in note["recipients"] if r["address"] == want["to"]]
        assert r["outcome"] == OUTCOME_OF_FATE[want["fate"]], (name, want, r)
        assert r["host"] == want["at"], (name, want, r)
        assert collapse([p["host"] for p in r["path"]]) == want["path"].split(","), (want, r)


def test_envelope_trace_joins_the_refusal_of_the_next_hop(lab: Lab) -> None:
    """The refusing host is found when its reject line is fetched (by sender and recipient)."""
    cases = [(s, f) for s in lab.expected["scenarios"] for f in s["fates"]
             if refused_by_next_hop(f)]
    assert cases
    for scenario, fate in cases:
        run = cli("trace", "--format", "json", "-i", str(lab.inventory),
                  "--from", scenario["sender"], "--to", fate["recipient"])
        assert run.code == 0, run.stderr
        (trace,) = [t for t in run.json()["traces"] if t["message_id"] == scenario["message_id"]]
        (r,) = recipients_for(lab, scenario, trace, fate["recipient"])
        assert (r["outcome"], r["host"]) == ("bounced", fate["at"])
        assert collapse([p["host"] for p in r["path"]]) == fate["path"], (scenario["name"], r)


def test_every_view_of_a_trace_renders_live_data(lab: Lab) -> None:
    scenario = next(s for s in lab.expected["scenarios"]
                    if max(len(f["path"]) for f in s["fates"]) == 3
                    and all(f["fate"] == "delivered" for f in s["fates"]))
    path = scenario["fates"][0]["path"]
    for fmt in ("text", "table", "csv", "ndjson", "mermaid", "dot"):
        run = cli("trace", "--format", fmt, "-i", str(lab.inventory), scenario["message_id"])
        assert run.code == 0, (fmt, run.stderr)
        assert run.stdout.strip(), fmt
        # Row views name the first and last host; graph and tree views every host.
        for host in (path if fmt in ("text", "mermaid", "dot", "ndjson") else [path[0]]):
            assert host in run.stdout, (fmt, host)

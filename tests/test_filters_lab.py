"""Content filters from a real Postfix: what collector answers for the lab's filters set.

``tests/fixtures/lab/filters`` is the committed output of ``postfix_lab.py run --set filters``:
mx1 hands every transaction to a before-queue proxy (``smtpd_proxy_filter``), logs every
Subject (``header_checks`` ``/^Subject:/ INFO``) and refuses unknown users (so a VRFY of one is
refused); filter1's content filter answers ``250 2.5.0 OK (<id>)`` instead of ``queued as`` and
re-injects with XFORWARD NAME/ADDR only, so the re-injection logs ``client=localhost[127.0.0.1],
orig_client=...`` without ``orig_queue_id=``. The expected values come from ``expected.json``
(what was sent); the lines themselves are read from the fixtures, never written here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from lab_fleet import build_lab_fleet
from typer.testing import CliRunner

from collector.cli.app import ExitCode, app

FILTERS = Path(__file__).parent / "fixtures" / "lab" / "filters"
EXPECTED: dict[str, Any] = json.loads((FILTERS / "expected.json").read_text(encoding="utf-8"))
SCENARIOS: dict[str, dict[str, Any]] = {s["name"]: s for s in EXPECTED["scenarios"]}


def log_text(name: str) -> str:
    path = str(EXPECTED["hosts"][name]["log"]["path"]).lstrip("/")
    return (FILTERS / name / path).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_lab_fleet(tmp_path_factory.mktemp("filters"), lab=FILTERS)


def run(inventory: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, [args[0], "-i", str(inventory), *args[1:]])
    return result.exit_code, result.stdout


def traces(inventory: Path, *args: str) -> list[dict[str, Any]]:
    code, out = run(inventory, "trace", *args, "-f", "json")
    assert code == ExitCode.FOUND, out
    found: list[dict[str, Any]] = json.loads(out)["traces"]
    return found


def test_the_fixtures_hold_the_line_kinds() -> None:
    mx1, filter1 = log_text("mx1"), log_text("filter1")
    assert "proxy-reject: END-OF-MESSAGE: 554 5.7.1 " in mx1
    assert "NOQUEUE: reject: VRFY from " in mx1
    assert ": info: header Subject: " in mx1
    assert ": warning: header Subject: " in filter1
    assert "relay=127.0.0.1[127.0.0.1]:10024" in filter1 and "status=sent (250 2.5.0 OK (" in filter1
    assert "client=localhost[127.0.0.1], orig_client=" in filter1
    assert "orig_queue_id=" not in filter1


def test_the_reinjection_is_linked_inferred_and_the_filter_hop_is_no_delivery(
    inventory: Path,
) -> None:
    scn = SCENARIOS["filtered_inbound"]
    (trace,) = traces(inventory, "--message-id", scn["message_id"])
    hosts = [(h["host"], h["via"], h["strength"]) for h in trace["hops"]]
    assert hosts == [
        ("mx1", "entry", None),
        ("filter1", "smtp", "strong"),
        ("filter1", "reinjection", "inferred"),
        ("mbox1", "smtp", "strong"),
    ]
    reinjected = trace["hops"][2]
    assert reinjected["client"] == "localhost[127.0.0.1]"
    assert reinjected["parent"] == {"host": "filter1", "queue_id": trace["hops"][1]["queue_id"]}
    for fact in ("same-host", "client=localhost[127.0.0.1]", "message-id", "sender",
                 "recipients", "relay=127.0.0.1[127.0.0.1]:10024"):
        assert fact in reinjected["evidence"]
    (rcpt,) = trace["recipients"]
    assert (rcpt["address"], rcpt["outcome"], rcpt["host"]) == (
        scn["recipients"][0], "delivered", "mbox1")
    assert [p["host"] for p in rcpt["path"]] == ["mx1", "filter1", "filter1", "mbox1"]
    assert trace["notes"] == []
    assert trace["subject"] == scn["subject"]


def test_subject_selects_messages_and_trace_follows_the_filter(inventory: Path) -> None:
    scn = SCENARIOS["filtered_split"]
    # filter1 logs this Subject too (WARN); mx1 (INFO) is where the message starts
    (trace,) = traces(inventory, "--subject", "urgent: BUDGET")
    assert trace["message_id"] == scn["message_id"]
    assert trace["subject"] == scn["subject"]
    assert sorted((r["address"], r["outcome"]) for r in trace["recipients"]) == [
        (a, "delivered") for a in sorted(scn["recipients"])
    ]
    code, out = run(inventory, "search", "--subject", "urgent: budget", "-f", "json")
    assert code == ExitCode.FOUND
    rows = json.loads(out)["results"]
    assert {r["message_id"] for r in rows} == {scn["message_id"]}
    code, out = run(inventory, "search", "--subject", "no such subject", "-f", "json")
    assert code == ExitCode.NO_MATCH and json.loads(out)["results"] == []


def test_a_hostile_subject_is_a_fixed_string(inventory: Path) -> None:
    scn = SCENARIOS["hostile_subject"]
    # shell, grep and regex syntax: found only as the text it is
    (trace,) = traces(inventory, "--subject", "$(id) `uname` 'Q3' \"final\" ; rm -rf ~ | -e .*")
    assert trace["message_id"] == scn["message_id"] and trace["subject"] == scn["subject"]
    for text in (".*", "-e .* [x"):
        got = traces(inventory, "--subject", text)
        assert [t["message_id"] for t in got] == [scn["message_id"]]
    code, _ = run(inventory, "search", "--subject", "Invoice .* final")
    assert code == ExitCode.NO_MATCH


def test_subject_shows_in_the_trace_text(inventory: Path) -> None:
    code, out = run(inventory, "trace", "--subject", "Quarterly report", "-f", "text")
    assert code == ExitCode.FOUND
    assert "subject Quarterly report\n" in out
    assert "via reinjection (inferred)  from localhost[127.0.0.1]" in out


def test_proxy_reject_and_vrfy_reject_are_rows_and_counted(inventory: Path) -> None:
    proxy, vrfy = SCENARIOS["proxy_reject"], SCENARIOS["vrfy_unknown"]
    code, out = run(inventory, "search", "--status", "rejected", "-f", "json")
    assert code == ExitCode.FOUND
    rows = {r["to"]: r for r in json.loads(out)["results"]}
    assert rows[proxy["recipients"][0]]["from"] == proxy["sender"]
    assert rows[proxy["recipients"][0]]["response"].startswith("554 5.7.1 Rejected by lab proxy")
    got = rows[vrfy["recipients"][0]]
    assert got["from"] is None and got["dsn"] == "5.1.1" and got["host"] == "mx1"
    code, out = run(inventory, "search", "--to", vrfy["recipients"][0], "-f", "json")
    assert code == ExitCode.FOUND and len(json.loads(out)["results"]) == 1
    code, out = run(inventory, "summary", "-f", "json")
    assert code == ExitCode.FOUND
    mx1 = next(h for h in json.loads(out)["hosts"] if h["name"] == "mx1")
    assert mx1["summary"]["rejected"] == 2

"""Hostile input from a real Postfix: what collector must answer for the lab's hostile set.

``tests/fixtures/lab/hostile`` is the committed output of ``postfix_lab.py run --set hostile``:
the same relay chain as the standard fixtures, sent three sessions a hostile SMTP client can
open. Postfix logged them as below (the lines are read from the fixtures, never written here):

- ``injected_reject``: mallory@evil.example relays to the quoted local part
  ``"x; from=<ceo@corp.example> to=<cfo@corp.example>"@evil.example``. mx1's NOQUEUE reject
  shows the forged group twice: unquoted in the reply text (``454 4.7.1 <x; from=<ceo...>
  to=<cfo...>@evil.example>``) and quoted inside the real trailer's ``to=<...>``, after the
  real ``from=<mallory@evil.example>``. The last ``from=<...> to=<...>`` group that ignores
  quoting is the forged one.
- ``forged_sender``: the same quoted text as the MAIL FROM of a message that is delivered; every
  qmgr ``from=<...>`` line on the way carries the forged fields inside the quotes.
- ``bidi_address``: an SMTPUTF8 sender and recipient whose local parts hold U+202E
  (RIGHT-TO-LEFT OVERRIDE); Postfix (smtputf8_enable = yes) logs the raw UTF-8 bytes, through
  postlogd and through rsyslog alike.

The expected values come from ``expected.json`` (what was sent), the fixtures' lines prove what
Postfix logged. Rows are checked through the command line (``search -f json``), the contract.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from lab_fleet import build_lab_fleet
from typer.testing import CliRunner

from collector.cli.app import ExitCode, app

HOSTILE = Path(__file__).parent / "fixtures" / "lab" / "hostile"
EXPECTED: dict[str, Any] = json.loads((HOSTILE / "expected.json").read_text(encoding="utf-8"))
SCENARIOS: dict[str, dict[str, Any]] = {s["name"]: s for s in EXPECTED["scenarios"]}
RLO = "\u202e"

INJECTED = SCENARIOS["injected_reject"]
FORGED = SCENARIOS["forged_sender"]
BIDI = SCENARIOS["bidi_address"]
# The forged addresses a naive trailer parse would report.
CEO, CFO = "ceo@corp.example", "cfo@corp.example"


def log_text(name: str) -> str:
    path = str(EXPECTED["hosts"][name]["log"]["path"]).lstrip("/")
    return (HOSTILE / name / path).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hostile run's four hosts (local transport) and an inventory naming them."""
    return build_lab_fleet(tmp_path_factory.mktemp("hostile"), lab=HOSTILE)


def search(inventory: Path, *args: str) -> tuple[int, list[dict[str, Any]], str]:
    """Exit code, rows and raw stdout of ``search -f json`` on the hostile fleet."""
    runner = CliRunner(env={"COLUMNS": "100", "COLLECTOR_INVENTORY": ""})
    result = runner.invoke(app, ["search", "-i", str(inventory), "-f", "json", *args],
                           catch_exceptions=False)
    assert result.exit_code in (ExitCode.FOUND, ExitCode.NO_MATCH), result.stderr
    doc = json.loads(result.stdout)
    assert all(h["ok"] for h in doc["hosts"]), doc["hosts"]
    return result.exit_code, doc["results"], result.stdout


# --------------------------------------------------------------------------- the fixtures


def test_the_fixtures_come_from_the_hostile_set() -> None:
    assert EXPECTED["lab"]["scenario_set"] == "hostile"
    assert set(SCENARIOS) == {"injected_reject", "forged_sender", "bidi_address"}
    assert INJECTED["sender"] == "mallory@evil.example"
    (rcpt,) = INJECTED["recipients"]
    assert rcpt == f'"x; from=<{CEO}> to=<{CFO}>"@evil.example'
    assert FORGED["sender"] == rcpt
    assert BIDI["smtputf8"] is True
    assert RLO in BIDI["sender"] and all(RLO in r for r in BIDI["recipients"])
    # the submitter's view: the reject was refused at RCPT, the other two were accepted
    assert INJECTED["submitted"]["submitter_exit_code"] == 24
    assert FORGED["submitted"]["submitter_exit_code"] == 0
    assert BIDI["submitted"]["submitter_exit_code"] == 0


def test_real_reject_line_carries_the_forged_group_inside_the_quotes() -> None:
    (rcpt,) = INJECTED["recipients"]
    rejects = [line for line in log_text("mx1").splitlines() if "NOQUEUE: reject: RCPT" in line]
    assert len(rejects) == 1
    line = rejects[0]
    trailer = f"; from=<{INJECTED['sender']}> to=<{rcpt}> proto=ESMTP helo=<"
    assert trailer in line
    # Quoting ignored, the last from=<...> to=<...> group names the forged pair.
    naive = re.findall(r"from=<([^<>]*)> to=<([^<>]*)>", line)
    assert naive[-1] == (CEO, CFO)
    # The reply text holds the recipient unquoted (Postfix's internal form), forged group and all.
    assert f"454 4.7.1 <x; from=<{CEO}> to=<{CFO}>@evil.example>: Relay access denied" in line


def test_real_qmgr_lines_carry_the_forged_sender_quoted() -> None:
    for host in ("mx1", "filter1", "mbox1"):
        lines = [line for line in log_text(host).splitlines()
                 if f"from=<{FORGED['sender']}>, size=" in line and "/qmgr[" in line]
        # filter1 queues the message twice: before the content filter and after reinjection
        assert len(lines) == (2 if host == "filter1" else 1), host


def test_real_lines_hold_u202e_raw() -> None:
    (rcpt,) = BIDI["recipients"]
    for host in ("mx1", "filter1", "mbox1"):
        text = log_text(host)
        assert f"from=<{BIDI['sender']}>, size=" in text, host
        assert f"to=<{rcpt}>, relay=" in text, host
        raw = (HOSTILE / host / str(EXPECTED["hosts"][host]["log"]["path"]).lstrip("/"))
        assert b"\xe2\x80\xae" in raw.read_bytes(), host
    assert f"to=<{rcpt}>, relay=virtual, " in log_text("mbox1")


# --------------------------------------------------------------------------- injected reject


def test_real_sender_finds_the_injected_reject(inventory: Path) -> None:
    (rcpt,) = INJECTED["recipients"]
    code, rows, _ = search(inventory, "--from", INJECTED["sender"])
    assert code == ExitCode.FOUND
    rejected = [r for r in rows if r["status"] == "rejected"]
    assert len(rejected) == 1, rows
    row = rejected[0]
    assert row["host"] == "mx1"
    assert row["queue_id"] is None
    assert row["from"] == INJECTED["sender"]
    assert row["to"] == rcpt
    assert row["client"] == f"ext-client.example.org[{INJECTED['submitted']['client_ip']}]"


def test_real_recipient_finds_the_injected_reject(inventory: Path) -> None:
    (rcpt,) = INJECTED["recipients"]
    code, rows, _ = search(inventory, "--to", rcpt, "--status", "rejected")
    assert code == ExitCode.FOUND
    assert [(r["host"], r["from"], r["to"]) for r in rows] == [
        ("mx1", INJECTED["sender"], rcpt)]


@pytest.mark.parametrize("selector", [("--from", CEO), ("--to", CFO)])
def test_forged_addresses_find_nothing(inventory: Path, selector: tuple[str, str]) -> None:
    code, rows, _ = search(inventory, *selector)
    assert (code, rows) == (ExitCode.NO_MATCH, [])


def test_no_row_names_a_forged_address(inventory: Path) -> None:
    _, rows, _ = search(inventory, "--since", "2000-01-01")
    assert rows
    named = {r["from"] for r in rows} | {r["to"] for r in rows} | {r["orig_to"] for r in rows}
    assert not named & {CEO, CFO}


# --------------------------------------------------------------------------- forged MAIL FROM


def test_forged_mail_from_is_attributed_to_its_real_quoted_sender(inventory: Path) -> None:
    code, rows, _ = search(inventory, "--from", FORGED["sender"])
    assert code == ExitCode.FOUND
    mine = [r for r in rows if r["message_id"] == FORGED["message_id"]]
    # entry, content filter, reinjection, mailbox: one row per hop, all delivered to alice
    assert [r["host"] for r in mine] == ["mx1", "filter1", "filter1", "mbox1"]
    assert {r["from"] for r in mine} == {FORGED["sender"]}
    assert {r["to"] for r in mine} == set(FORGED["recipients"])
    assert {r["status"] for r in mine} == {"sent"}
    assert all(r["message_id"] == FORGED["message_id"] for r in rows)


def test_forged_mail_from_is_found_by_its_recipient(inventory: Path) -> None:
    (rcpt,) = FORGED["recipients"]
    _, rows, _ = search(inventory, "--to", rcpt, "--message-id", FORGED["message_id"])
    assert rows and {r["from"] for r in rows} == {FORGED["sender"]}


# --------------------------------------------------------------------------- bidi address


def test_bidi_sender_is_found_and_round_trips(inventory: Path) -> None:
    code, rows, _ = search(inventory, "--from", BIDI["sender"])
    assert code == ExitCode.FOUND
    assert [r["host"] for r in rows] == ["mx1", "filter1", "filter1", "mbox1"]
    assert {r["from"] for r in rows} == {BIDI["sender"]}
    assert {r["to"] for r in rows} == set(BIDI["recipients"])
    assert {r["message_id"] for r in rows} == {BIDI["message_id"]}
    assert {r["status"] for r in rows} == {"sent"}


def test_bidi_recipient_is_found_and_round_trips(inventory: Path) -> None:
    (rcpt,) = BIDI["recipients"]
    code, rows, _ = search(inventory, "--to", rcpt)
    assert code == ExitCode.FOUND
    assert [r["host"] for r in rows] == ["mx1", "filter1", "filter1", "mbox1"]
    assert {r["to"] for r in rows} == {rcpt}
    assert {r["from"] for r in rows} == {BIDI["sender"]}
    assert rows[-1]["relay"] == "virtual"


@pytest.mark.parametrize("selector", ["--from", "--to"])
def test_json_escapes_the_bidi_control_and_decodes_to_the_exact_address(
        inventory: Path, selector: str) -> None:
    address = BIDI["sender"] if selector == "--from" else BIDI["recipients"][0]
    _, rows, stdout = search(inventory, selector, address)
    assert rows
    # JSON stays exact but shows no raw bidi control (issue 8): U+202E is written as \u202e.
    assert RLO not in stdout
    assert "\\u202e" in stdout.lower()
    key = "from" if selector == "--from" else "to"
    assert {r[key] for r in rows} == {address}


@pytest.mark.parametrize("address", ["gnp.exe@evil.example", "bob@example.test"])
def test_the_address_without_the_control_is_another_address(inventory: Path,
                                                             address: str) -> None:
    selector = "--from" if "evil" in address else "--to"
    _, rows, _ = search(inventory, selector, address)
    assert all(r["message_id"] != BIDI["message_id"] for r in rows)


def test_every_hostile_line_is_read_and_understood(inventory: Path) -> None:
    """No line of the hostile run is unknown or bad: the rows above are not built on skips."""
    runner = CliRunner(env={"COLUMNS": "100", "COLLECTOR_INVENTORY": ""})
    result = runner.invoke(app, ["search", "-i", str(inventory), "-f", "json",
                                 "--since", "2000-01-01"], catch_exceptions=False)
    doc = json.loads(result.stdout)
    for host in doc["hosts"]:
        stats = host["stats"]
        assert stats["lines"] == len(log_text(host["name"]).splitlines()), host["name"]
        assert (stats["unknown"], stats["bad"]) == (0, 0), host

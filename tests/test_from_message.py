"""trace --from-message: start where a forwarded mail or a bounce says the message was.

The messages are built in the exact form Postfix writes (its Received header, bounce(8)'s
multipart/report) for messages of the demo fleet's real logs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from support import DEMO, run

from collector.cli.app import ExitCode
from collector.trace.message import read_message

MESSAGES = Path(__file__).parent / "fixtures" / "messages"
INV = str(DEMO / "inventory.toml")


def test_a_bounce_names_the_hops_of_the_message_it_returns() -> None:
    clues = read_message((MESSAGES / "bounce-unknown-user.eml").read_bytes())
    assert [(c.host, c.queue_id, c.source) for c in clues.clues] == [
        ("mx1.example.test", "F139E168212", "received"),
        ("filter1.example.test", "F2186168222", "received"),
        ("filter1.example.test", "F3A0B168231", "received"),
        ("filter1.example.test", "F3A0B168231", "dsn"),
    ]
    assert clues.message_id == "<unknown_user.20261129173200@lab.example.test>"
    assert clues.recipients == ("nosuchuser@example.test",)


def test_a_bounce_traces_as_its_message_id_does() -> None:
    by_id = run("trace", "-i", INV, "<unknown_user.20261129173200@lab.example.test>")
    bounce = MESSAGES / "bounce-unknown-user.eml"
    result = run("trace", "-i", INV, "--from-message", bounce, "-v")
    assert result.exit_code == ExitCode.FOUND, result.stderr
    assert result.stdout == by_id.stdout
    assert "collector: starting at mx1 F139E168212 (from the message's received header)" in (
        result.stderr.splitlines()
    )


def test_a_forwarded_message_starts_where_it_entered_the_fleet() -> None:
    forwarded = MESSAGES / "forwarded-multi-split.eml"
    result = run("trace", "-i", INV, "--from-message", forwarded, "-f", "json", "-v")
    assert result.exit_code == ExitCode.FOUND, result.stderr
    assert "collector: starting at mx1 A9E31168161 (from the message's received header)" in (
        result.stderr.splitlines()
    )
    by_id = run("trace", "-i", INV, "<multi_split.20261129173200@lab.example.test>", "-f", "json")
    # the same traces (the hosts' line counts differ: a queue ID is a narrower first search)
    assert json.loads(result.stdout)["traces"] == json.loads(by_id.stdout)["traces"]


def test_standard_input_is_read_with_a_dash() -> None:
    from typer.testing import CliRunner

    from collector.cli.app import app

    data = (MESSAGES / "forwarded-multi-split.eml").read_bytes()
    result = CliRunner(env={"COLLECTOR_INVENTORY": ""}).invoke(
        app, ["trace", "-i", INV, "--from-message", "-", "-f", "csv"], input=data
    )
    assert result.exit_code == ExitCode.FOUND, result.stderr
    assert "bob@example.test" in result.stdout


def test_a_message_that_names_no_fleet_host_is_a_usage_error(tmp_path: Path) -> None:
    other = tmp_path / "other.eml"
    other.write_text("Received: from a (a [192.0.2.1]) by mail.elsewhere.example (Postfix) "
                     "with ESMTP id 4F2A81C0D3; Tue, 15 Jan 2026 10:00:00 +0000\n"
                     "Subject: x\n\nbody\n")
    result = run("trace", "-i", INV, "--from-message", other)
    assert result.exit_code == ExitCode.ERROR
    assert result.stderr == (
        f"collector: --from-message: {other} names no Postfix host of the inventory "
        "(hosts it names: mail.elsewhere.example)\n"
    )
    missing = run("trace", "-i", INV, "--from-message", tmp_path / "nothere.eml")
    assert missing.exit_code == ExitCode.ERROR
    assert missing.stderr.startswith("collector: --from-message: cannot read ")


def test_a_hostile_message_is_read_in_bounded_time(tmp_path: Path) -> None:
    # 5000 Received headers of 100 kB each, a by-clause that never closes, junk MIME.
    junk = "Received: by " + "a" * 100_000 + " (Postfix" + " x" * 50_000 + "\n"
    hostile = tmp_path / "hostile.eml"
    hostile.write_text(junk * 50 + 'Content-Type: multipart/report; boundary="b"\n\n--b\n'
                       "Content-Type: message/delivery-status\n\nReporting-MTA: dns; mx1\n"
                       "X-Postfix-Queue-ID: ;rm -rf /\n\n--b--\n")
    started = time.monotonic()
    result = run("trace", "-i", INV, "--from-message", hostile)
    assert time.monotonic() - started < 10  # a hang guard, not a speed target
    assert result.exit_code == ExitCode.ERROR
    assert len(result.stderr.splitlines()) == 1

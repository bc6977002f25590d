"""``collector incidents``: reply templates, problems grouped fleet-wide, the CLI on the lab's
real deferrals, bounces, expiries and refusals (the demo fleet), checked against the raw lines.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from support import DEMO, DEMO_HOSTS, copy_demo, run

from collector.cli.app import ExitCode
from collector.incidents.group import Direction, Problem, group_problems, incidents
from collector.incidents.template import MAX_REPLY, reply_template
from collector.inventory.load import load_inventory
from collector.models import Attempt, QueueGroup, Recipient, Reject, Status
from collector.trace.correlate import build_host_index

T = datetime(2026, 11, 29, 17, 0, tzinfo=UTC)
SINCE = "2026-11-29T17:00"

# --------------------------------------------------------------------------- templates


def test_a_template_replaces_what_varies_and_keeps_the_codes() -> None:
    a = reply_template("host mx.a.example[192.0.2.7] said: 550 5.1.1 <bob@a.example>: "
                       "Recipient address rejected: User unknown (in reply to RCPT TO command)")
    b = reply_template("host mx9.b.example[198.51.100.3] said: 550 5.1.1 <eve@b.example>: "
                       "Recipient address rejected: User unknown (in reply to RCPT TO command)")
    assert a == b == ("host HOST[IP] said: 550 5.1.1 <ADDR>: Recipient address rejected: "
                      "User unknown (in reply to RCPT TO command)")
    assert reply_template("connect to 127.0.0.9[127.0.0.9]:2599: Connection refused") == (
        "connect to HOST[IP]:N: Connection refused")
    assert reply_template("421-4.7.0 Try again in 300 seconds (session 1a2b3c4d5e6f)") == (
        "421-4.7.0 Try again in N seconds (session ID)")
    assert reply_template("250 2.0.0 Ok: queued as 4F3A21B0C9") == "250 2.0.0 Ok: queued as ID"
    assert reply_template("Name service error for name=x.example type=MX") == (
        "Name service error for name=HOST type=MX")
    # the same problem of two servers or two days is one template
    gmail = ("host gmail-smtp-in.l.google.com[142.250.1.27] said: 550-5.1.1 The account does "
             "not exist. 550 5.1.1 https://support.google.com/mail/?p=NoSuchUser "
             "ab12-20020a.{} - gsmtp (in reply to RCPT TO command)")
    assert reply_template(gmail.format(456)) == reply_template(gmail.format(789))
    assert "550-5.1.1" in reply_template(gmail.format(1)) and "550 5.1.1" in reply_template(
        gmail.format(1))
    assert reply_template("Your IP 5.9.12.34 is listed") == "Your IP IP is listed"
    assert reply_template("from 2001:db8::1") == reply_template("from 2a01:4f8::7") == "from IP"
    assert reply_template("[AM4P.outlook.com 2024-01-02T00:00:00.000Z]") == (
        reply_template("[AM4P.outlook.com 2024-03-09T11:12:13.456Z]"))
    assert reply_template("554 5.7.1 <x@y>: Relay access denied") == (
        "554 5.7.1 <ADDR>: Relay access denied")
    # words stay words, spaces are one
    assert reply_template("Mailbox   full\tfor  now") == "Mailbox full for now"


def test_a_hostile_reply_makes_a_bounded_template() -> None:
    for hostile in ("a" * 100_000, "<" + "a@" * 50_000, "x[" * 50_000, "1." * 60_000,
                    "@" * 100_000):
        out = reply_template(hostile)
        assert len(out) <= MAX_REPLY


# --------------------------------------------------------------------------- grouping


def _group(host: str, qid: str, msgid: str | None, *attempts: Attempt,
           rcpt: str = "u@far.example", client: str | None = None,
           rejects: tuple[Reject, ...] = ()) -> QueueGroup:
    return QueueGroup(host=host, instance="", queue_id=qid, first_time=T, last_time=T,
                      message_id=msgid, recipients=(Recipient(rcpt, None, attempts),) if
                      attempts else (), client=client, rejects=rejects)


def _deferred(minutes: int, relay: str = "none", program: str = "smtp") -> Attempt:
    return Attempt(T + timedelta(minutes=minutes), program, Status.DEFERRED, relay=relay,
                   dsn="4.4.1", response="connect to mx.far.example[192.0.2.1]:25: "
                                         "Connection timed out")


def _index():  # type: ignore[no-untyped-def]
    return build_host_index(load_inventory(DEMO / "inventory.toml").hosts)


def test_a_message_seen_on_two_hosts_counts_once() -> None:
    index = _index()
    problems = [
        *group_problems(_group("mx1", "A1", "<m1@x>", _deferred(1), _deferred(5)), index),
        *group_problems(_group("out1", "B1", "<m1@x>", _deferred(2)), index),
        *group_problems(_group("out1", "B2", "<m2@x>", _deferred(3)), index),
    ]
    [one] = incidents(DEMO_HOSTS, problems)
    assert (one.kind, one.direction, one.peer) == (Status.DEFERRED, Direction.OUTBOUND,
                                                    "@far.example")
    assert (one.messages, one.recipients, one.events) == (2, 2, 4)
    assert [(h.host, h.events) for h in one.hosts] == [("mx1", 2), ("out1", 2)]
    assert one.samples == ("mx1:A1", "out1:B2", "out1:B1")  # the latest first


def test_directions_and_peers() -> None:
    index = _index()

    def where(attempt: Attempt, host: str = "mx1") -> tuple[str, str]:
        [p] = group_problems(_group(host, "Q", None, attempt), index)
        return p.direction, p.peer

    assert where(_deferred(1, "filter1.example.test[127.0.0.22]:2525")) == ("internal", "filter1")
    assert where(_deferred(1, "mx.far.example[192.0.2.1]:25")) == ("outbound", "@far.example")
    [p] = group_problems(_group("mx1", "Q", None, _deferred(1, "MX.far.example[192.0.2.1]:25")),
                         index)
    assert p.relay == "mx.far.example"  # the MX, named apart: one domain's MXs are one problem
    assert where(_deferred(1, "127.0.0.1[127.0.0.1]:10024")) == ("local", "127.0.0.1")
    assert where(_deferred(1, "mbox1.example.test[private/dovecot-lmtp]", "lmtp"), "mbox1") == (
        "local", "mbox1.example.test")
    assert where(_deferred(1, "local", "local")) == ("local", "local")
    assert where(_deferred(1)) == ("outbound", "@far.example")


def test_a_fleet_hosts_refused_delivery_is_counted_once() -> None:
    """filter1 refused mx1's message at cleanup: mx1 logged the bounce; the refusal on filter1
    (its client is mx1) is the same problem."""
    index = _index()
    reject = Reject(T, "filter1", "cleanup", "C1", "END-OF-MESSAGE", None, "a@x", "b@y",
                    "5.7.1 Message content rejected")
    refused = _group("filter1", "C1", "<m@x>", client="mx1.example.test[127.0.0.21]",
                     rejects=(reject,))
    [p] = group_problems(refused, index)
    assert p.sent_by == "mx1"
    assert incidents(DEMO_HOSTS, [p]) == []  # mx1 was read: its bounce says it
    # ...but when mx1 was not read (not selected, or down), the refusal is all there is
    [kept] = incidents(DEMO_HOSTS, [p], answered=["filter1"])
    assert (kept.kind, kept.peer, kept.messages) == (Status.REJECTED, "@y", 1)
    # a content filter on loopback refusing what this host's own smtp handed it
    own = _group("mx1", "C3", "<o@x>", client="localhost[127.0.0.1]", rejects=(reject,))
    [loop] = group_problems(own, index)
    assert loop.sent_by == "mx1" and incidents(DEMO_HOSTS, [loop]) == []
    from_outside = _group("mx1", "C2", "<n@x>", client="ext.example[192.0.2.9]",
                          rejects=(reject,))
    [p] = group_problems(from_outside, index)
    assert (p.kind, p.direction, p.peer, p.sent_by) == (
        Status.REJECTED, Direction.INBOUND, "@y", None)


def test_expired_is_said_with_the_reason_it_never_left() -> None:
    index = _index()
    expired = Attempt(T + timedelta(days=5), "qmgr", Status.EXPIRED, response="returned")
    [d, e] = group_problems(_group("out1", "E", "<e@x>", _deferred(1), expired), index)
    assert e.kind == Status.EXPIRED and e.template == d.template and e.peer == "@far.example"


def test_compare_marks_new_grew_same_and_fell() -> None:
    def p(kind: Status, msg: str, peer: str = "@a") -> Problem:
        return Problem(kind, "mx1", T, "Q", msg, "u@a", Direction.OUTBOUND, peer, None, "t", "t")

    now = [p(Status.DEFERRED, "1"), p(Status.DEFERRED, "2"), p(Status.BOUNCED, "3"),
           p(Status.EXPIRED, "4"), p(Status.DEFERRED, "5", "@b")]
    then = [p(Status.DEFERRED, "9"), p(Status.BOUNCED, "8"), p(Status.EXPIRED, "7"),
            p(Status.EXPIRED, "6"), p(Status.REJECTED, "0")]
    marks = {(i.kind, i.peer): (i.change, i.baseline_messages) for i in incidents((), now, then)}
    assert marks == {
        ("deferred", "@a"): ("grew", 1),
        ("bounced", "@a"): ("same", 1),
        ("expired", "@a"): ("fell", 2),
        ("deferred", "@b"): ("new", 0),
    }


# --------------------------------------------------------------------------- the CLI, real lines


_PROBLEM = re.compile(r"status=(deferred|bounced|expired)|(?:^|\s|-)reject: ")
_FROM_FLEET = re.compile(r"reject: \S+ from (mx1|filter1|mbox1|out1)\.example\.test\[|"
                         r"from (mx1|filter1|mbox1|out1)\.example\.test\[127\.0\.0\.2\d\];")


def _raw_problems() -> dict[str, int]:
    """The problem lines of the demo logs, counted by a grep of their own (not the parser)."""
    counts = {"deferred": 0, "bounced": 0, "expired": 0, "rejected": 0}
    for log in sorted(DEMO.glob("fleet/*/var/log/*")):
        for line in log.read_text().splitlines():
            m = _PROBLEM.search(line)
            if m is None:
                continue
            if m.group(1):
                counts[m.group(1)] += 1
            elif not _FROM_FLEET.search(line):
                counts["rejected"] += 1
    return counts


def test_incidents_of_the_lab_account_for_every_problem_line() -> None:
    result = run("incidents", "-i", DEMO / "inventory.toml", "--since", SINCE, "-f", "json")
    assert result.exit_code == ExitCode.FOUND, result.stderr
    doc = json.loads(result.stdout)
    events: dict[str, int] = {}
    for i in doc["incidents"]:
        if i["kind"] != "expired":
            events[i["kind"]] = events.get(i["kind"], 0) + i["events"]
        else:  # qmgr logs one line per message; each recipient still deferred expires
            events["expired"] = events.get("expired", 0) + i["messages"]
    raw = _raw_problems()
    assert all(raw.values())
    assert events == raw
    assert [h["name"] for h in doc["hosts"]] == list(DEMO_HOSTS)
    assert doc["since"].startswith("2026-11-29T17:00:00")
    assert doc["compare"] is None and doc["verdict"] == "found"
    # the lab's unknown-user bounce (filter1 -> mbox1, refused at RCPT by mbox1) is one incident
    bounced = [i for i in doc["incidents"] if i["kind"] == "bounced" and i["peer"] == "mbox1"]
    assert len(bounced) == 1 and bounced[0]["direction"] == "internal"
    assert bounced[0]["dsn"] == "5.1.1" and "<ADDR>" in bounced[0]["reply_template"]
    for sample in bounced[0]["samples"]:  # each sample is a query trace understands
        traced = run("trace", "-i", DEMO / "inventory.toml", sample, "-f", "json")
        assert traced.exit_code == ExitCode.FOUND, traced.stderr


def test_the_table_fits_100_columns_and_names_what_to_trace() -> None:
    result = run("incidents", "-i", DEMO / "inventory.toml", "--since", SINCE)
    assert result.exit_code == ExitCode.FOUND
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["msgs", "rcpts", "status"]
    assert max(len(line) for line in lines) <= 100
    assert any(line.strip().startswith("trace out1:") for line in lines)
    assert "connect to HOST[IP]:N: Connection refused" in result.stdout


def test_compare_reads_the_earlier_window() -> None:
    result = run("incidents", "-i", DEMO / "inventory.toml", "--since", "2026-11-29T17:33:45",
                 "--until", "2026-11-29T17:34:05", "--compare", "20s", "-f", "json")
    assert result.exit_code == ExitCode.FOUND, result.stderr
    doc = json.loads(result.stdout)
    # [since, until) 20 s earlier: a line on the boundary belongs to the later window only
    assert doc["compare"] == {"since": "2026-11-29T17:33:25+00:00",
                              "until": "2026-11-29T17:33:44.999999+00:00"}
    change = {(i["kind"], i["peer"]): i["change"] for i in doc["incidents"]}
    # the out1 deferrals retried in both windows; the messages expired in the later one only
    assert change == {("deferred", "@example.net"): "same", ("expired", "@example.net"): "new"}
    # a compared window before the oldest line: said by host, and a mark it could hide is
    # "unknown", never "new"
    early = run("incidents", "-i", DEMO / "inventory.toml", "--since", "2026-11-29T17:33:30",
                "--until", "2026-11-29T17:34:30", "--compare", "1m", "-f", "json")
    assert "collector: out1: compared window: coverage: " in early.stderr
    marks = {(i["kind"], i["peer"]): i["change"] for i in json.loads(early.stdout)["incidents"]}
    assert marks[("expired", "@example.net")] == "unknown"


def test_windows_that_cannot_be_are_usage_errors() -> None:
    inv = DEMO / "inventory.toml"
    backwards = run("incidents", "-i", inv, "--until", "2026-11-29T18:00")  # --since: 2h ago
    assert backwards.exit_code == ExitCode.ERROR and "the window is empty" in backwards.stderr
    overlap = run("incidents", "-i", inv, "--since", "2026-11-29T17:00", "--until",
                  "2026-11-29T19:00", "--compare", "1h")
    assert overlap.exit_code == ExitCode.ERROR and "would overlap" in overlap.stderr
    assert run("search", "-i", inv, "--since", "2026-11-29T18:00", "--until",
               "2026-11-29T17:00").exit_code == ExitCode.ERROR


def test_ndjson_and_csv_carry_the_same_incidents() -> None:
    args = ("incidents", "-i", DEMO / "inventory.toml", "--since", SINCE)
    doc = json.loads(run(*args, "-f", "json").stdout)
    nd = [json.loads(line) for line in run(*args, "-f", "ndjson").stdout.splitlines()]
    assert nd == doc["incidents"]
    rows = list(csv.DictReader(io.StringIO(run(*args, "-f", "csv").stdout)))
    assert [(r["kind"], r["peer"], int(r["messages"])) for r in rows] == [
        (i["kind"], i["peer"], i["messages"]) for i in doc["incidents"]]


def test_nothing_wrong_in_a_covered_window_is_exit_1(tmp_path: Path) -> None:
    result = run("incidents", "-i", DEMO / "inventory.toml", "--since", "2026-11-29T17:32:47",
                 "--until", "2026-11-29T17:32:53")
    assert result.exit_code == ExitCode.NO_MATCH, result.stderr
    assert result.stdout == "no deferrals, bounces, expiries or refusals in the window\n"


def test_a_failed_host_is_named_and_the_others_stand(tmp_path: Path) -> None:
    inventory = copy_demo(tmp_path)
    inventory.write_text(inventory.read_text().replace('root = "fleet/out1"',
                                                       'root = "fleet/nowhere"'))
    result = run("incidents", "-i", inventory, "--since", SINCE, "-f", "json")
    assert result.exit_code == ExitCode.PARTIAL
    assert "collector: out1: " in result.stderr
    # nothing said to be absent that was not seen
    everyone_down = inventory.read_text().replace('root = "fleet/', 'root = "fleet/no-')
    inventory.write_text(everyone_down)
    down = run("incidents", "-i", inventory, "--since", SINCE)
    assert down.exit_code == ExitCode.ERROR
    assert down.stdout == "no deferrals, bounces, expiries or refusals in what could be read\n"
    doc = json.loads(result.stdout)
    assert {h for i in doc["incidents"] for h in (x["host"] for x in i["hosts"])} == {
        "mx1", "filter1"}
    assert [h["ok"] for h in doc["hosts"]] == [True, True, True, False]


def test_a_hostile_reply_reaches_the_terminal_escaped(tmp_path: Path) -> None:
    inventory = copy_demo(tmp_path)
    log = tmp_path / "demo/fleet/out1/var/log/postfix-out1.log"
    lines = log.read_text().splitlines(keepends=True)
    evil = next(line for line in lines if "status=deferred" in line).replace(
        "Connection refused", "Connection \x1b[2J\x1b]0;owned\x07refused\u202e")
    log.write_text("".join(lines) + evil)
    result = run("incidents", "-i", inventory, "--since", SINCE)
    assert "\x1b" not in result.stdout and "\u202e" not in result.stdout
    assert "\x07" not in result.stdout


def test_limit_shows_the_largest_and_says_how_many_more() -> None:
    args = ("incidents", "-i", DEMO / "inventory.toml", "--since", SINCE)
    every = json.loads(run(*args, "-f", "json").stdout)["incidents"]
    table = run(*args, "--limit", "2").stdout.splitlines()
    rest = every[2:]
    assert table[-1] == (f"... and {len(rest)} more incidents, smaller ones "
                         f"({sum(i['events'] for i in rest)} lines); --limit 0 shows every one")
    assert sum(1 for line in table if line[:4].strip().isdigit()) == 2
    assert json.loads(run(*args, "-f", "json", "--limit", "2").stdout)["incidents"] == every[:2]
    assert "more incidents" not in run(*args, "--limit", "0").stdout


# --------------------------------------------------------------------------- found by a red-team pass

OUT1 = "demo/fleet/out1/var/log/postfix-out1.log"
P = "Nov 29 17:40:{:02d} out1 postfix-out1/{}: "


def _bounced(qid: str, second: int, msgid: str, rcpt: str, dsn: str = "5.1.1") -> list[str]:
    return [
        P.format(second, "cleanup[9]") + f"{qid}: message-id={msgid}",
        P.format(second, "qmgr[9]") + f"{qid}: from=<a@example.test>, size=9, nrcpt=1 "
                                      "(queue active)",
        P.format(second, "smtp[9]") + f"{qid}: to=<{rcpt}>, relay=mx.far.example[192.0.2.9]:25,"
        f" delay=1, delays=0/0/0/1, dsn={dsn}, status=bounced (host mx.far.example[192.0.2.9] "
        "said: 550 5.1.1 no such user (in reply to RCPT TO command))",
        P.format(second, "qmgr[9]") + f"{qid}: removed",
    ]


def _with_lines(tmp_path: Path, lines: list[str]) -> Path:
    inventory = copy_demo(tmp_path)
    log = tmp_path / OUT1
    log.write_text(log.read_text() + "".join(line + "\n" for line in lines))
    return inventory


def test_a_dsn_that_is_not_one_never_reaches_the_terminal(tmp_path: Path) -> None:
    inv = _with_lines(tmp_path, _bounced("AAAA000001", 1, "<x@y>", "e@far.example",
                                         dsn="\x1b]0;owned\x07\x1b[2J5.0.0"))
    result = run("incidents", "-i", inv, "--since", SINCE)
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    doc = json.loads(run("incidents", "-i", inv, "--since", SINCE, "-f", "json").stdout)
    [far] = [i for i in doc["incidents"] if i["peer"] == "@far.example"]
    assert far["dsn"] == "5.1.1"  # the reply's code, not the junk


def test_messages_without_a_message_id_are_each_their_own(tmp_path: Path) -> None:
    lines = [line for n in range(3) for line in
             _bounced(f"BBBB00000{n}", n, "<>", f"u{n}@far.example")]
    doc = json.loads(run("incidents", "-i", _with_lines(tmp_path, lines), "--since", SINCE,
                         "-f", "json").stdout)
    [far] = [i for i in doc["incidents"] if i["peer"] == "@far.example"]
    assert (far["messages"], far["recipients"], far["events"]) == (3, 3, 3)
    assert far["relays"] == ["mx.far.example"]


def test_a_refusal_of_a_host_not_read_is_counted(tmp_path: Path) -> None:
    """mbox1 refused filter1's unknown recipients; read alone, mbox1's refusals are the
    problem (filter1's bounces, which would say it, were not read)."""
    result = run("incidents", "-i", DEMO / "inventory.toml", "--since", SINCE, "--host",
                 "mbox1", "-f", "json")
    assert result.exit_code == ExitCode.FOUND, result.stderr
    [refused] = json.loads(result.stdout)["incidents"]
    assert (refused["kind"], refused["peer"], refused["messages"]) == ("rejected",
                                                                       "@example.test", 2)


def test_a_compared_window_it_could_not_read_is_said_as_such(tmp_path: Path) -> None:
    inventory = copy_demo(tmp_path)
    log = tmp_path / OUT1
    rotated = log.with_name(log.name + ".1.gz")
    rotated.write_bytes(b"\x1f\x8b\x08\x00broken")  # a damaged older rotation
    os.utime(rotated, (T.timestamp() + 29 * 60, T.timestamp() + 29 * 60))
    alone = run("incidents", "-i", inventory, "--since", "2026-11-29T17:33:45", "--until",
                "2026-11-29T17:34:05", "-f", "json")
    compared = run("incidents", "-i", inventory, "--since", "2026-11-29T17:33:45", "--until",
                   "2026-11-29T17:34:05", "--compare", "20m", "-f", "json")
    assert alone.exit_code == ExitCode.FOUND, alone.stderr
    assert compared.exit_code == ExitCode.PARTIAL, compared.stderr
    assert "collector: out1: compared window: read: " in compared.stderr
    assert "collector: out1: read: " not in compared.stderr
    doc = json.loads(compared.stdout)
    assert doc["verdict"] == "found"
    assert {i["change"] for i in doc["incidents"] if any(
        h["host"] == "out1" for h in i["hosts"])} == {"unknown"}


def test_a_refusal_without_a_recipient_is_not_one_incident_per_client(tmp_path: Path) -> None:
    lines = [f"Nov 29 17:40:0{n} out1 postfix-out1/smtpd[9]: NOQUEUE: reject: CONNECT from "
             f"unknown[203.0.113.{n}]: 554 5.7.1 <unknown[203.0.113.{n}]>: Client host "
             "rejected: Access denied; proto=SMTP" for n in range(4)]
    doc = json.loads(run("incidents", "-i", _with_lines(tmp_path, lines), "--since", SINCE,
                         "-f", "json").stdout)
    [connect] = [i for i in doc["incidents"] if i["peer"] == "-"]
    assert (connect["messages"], connect["events"]) == (4, 4)


def test_recovered_counts_only_what_got_through_by_the_windows_end(tmp_path: Path) -> None:
    q = "CCCC000001"
    lines = [
        P.format(1, "cleanup[9]") + f"{q}: message-id=<r@x>",
        P.format(1, "qmgr[9]") + f"{q}: from=<a@example.test>, size=9, nrcpt=1 (queue active)",
        P.format(2, "smtp[9]") + f"{q}: to=<r@far.example>, relay=none, delay=1, delays=0/0/0/1,"
        " dsn=4.4.1, status=deferred (connect to mx.far.example[192.0.2.9]:25: Connection "
        "timed out)",
        P.format(30, "smtp[9]") + f"{q}: to=<r@far.example>, relay=mx.far.example[192.0.2.9]:25,"
        " delay=29, delays=28/0/0/1, dsn=2.0.0, status=sent (250 2.0.0 Ok)",
        P.format(30, "qmgr[9]") + f"{q}: removed",
    ]
    inv = _with_lines(tmp_path, lines)

    def recovered(until: str) -> int:
        doc = json.loads(run("incidents", "-i", inv, "--since", "2026-11-29T17:34",
                             "--until", until, "-f", "json").stdout)
        [far] = [i for i in doc["incidents"] if i["peer"] == "@far.example"]
        return int(far["recovered"])

    assert recovered("2026-11-29T17:40:10") == 0
    assert recovered("2026-11-29T17:41") == 1


def test_the_table_fits_60_columns() -> None:
    result = run("incidents", "-i", DEMO / "inventory.toml", "--since", SINCE, "--until",
                 "2026-11-29T17:40", "--compare", "1h", env={"COLUMNS": "60"})
    assert result.stdout and max(len(line) for line in result.stdout.splitlines()) <= 60

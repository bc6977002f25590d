"""trace follows a message whose many recipients a fleet host refused: in one pass, not one each."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from collector.inventory.load import load_inventory
from collector.models import Query
from collector.trace.follow import trace_fleet
from collector.transport import open_session

NOW = datetime(2026, 1, 16, tzinfo=UTC)
COUNT = 300


def write(root: Path, lines: list[str]) -> None:
    (root / "var" / "log").mkdir(parents=True)
    (root / "var" / "log" / "maillog").write_text("\n".join(lines) + "\n")


def test_hundreds_of_refused_recipients_cost_one_search_of_the_refusing_host(
    tmp_path: Path,
) -> None:
    rcpts = [f"user{n:03d}@dest.example" for n in range(COUNT)]
    out = [
        "Jan 15 10:00:00 out1 postfix/pickup[10]: AAA111: uid=1000 from=<news@corp.example>",
        "Jan 15 10:00:00 out1 postfix/cleanup[11]: AAA111: message-id=<news-1@corp.example>",
        f"Jan 15 10:00:00 out1 postfix/qmgr[12]: AAA111: from=<news@corp.example>, size=900, "
        f"nrcpt={COUNT} (queue active)",
    ]
    mx = []
    for n, rcpt in enumerate(rcpts):
        second = f"10:00:{1 + n // 60:02d}"
        out.append(
            f"Jan 15 {second} out1 postfix/smtp[13]: AAA111: to=<{rcpt}>, relay=mx2.dest.example"
            f"[127.0.0.31]:25, delay=1, delays=0/0/0/1, dsn=5.1.1, status=bounced (host "
            f"mx2.dest.example[127.0.0.31] said: 550 5.1.1 <{rcpt}>: Recipient address "
            "rejected: User unknown (in reply to RCPT TO command))"
        )
        mx.append(
            f"Jan 15 {second} mx2 postfix/smtpd[20]: NOQUEUE: reject: RCPT from out1.corp."
            f"example[127.0.0.30]: 550 5.1.1 <{rcpt}>: Recipient address rejected: User "
            f"unknown; from=<news@corp.example> to=<{rcpt}> proto=ESMTP helo=<out1.corp.example>"
        )
    out.append("Jan 15 10:00:09 out1 postfix/qmgr[12]: AAA111: removed")
    write(tmp_path / "out1", out)
    write(tmp_path / "mx2", mx)
    (tmp_path / "inventory.toml").write_text(
        '[defaults]\ntransport = "local"\ntimezone = "UTC"\n'
        '[[hosts]]\nname = "out1"\nroot = "out1"\naliases = ["127.0.0.30"]\n'
        '[[hosts]]\nname = "mx2"\nroot = "mx2"\naliases = ["mx2.dest.example", "127.0.0.31"]\n'
    )
    inv = load_inventory(tmp_path / "inventory.toml")
    sessions = []

    def opener(host):  # type: ignore[no-untyped-def]
        session = open_session(host, inv.settings)
        sessions.append(session)
        return session

    run = trace_fleet(inv.hosts, inv.hosts[:1], Query(terms=("<news-1@corp.example>",)),
                      open_session=opener, zone_of=lambda h: UTC, now=NOW)
    (trace,) = run.traces
    outcomes = {o.address: o.outcome for o in trace.recipients}
    assert len(outcomes) == COUNT and set(outcomes.values()) == {"bounced"}
    (mx2,) = [r for r in run.results if r.host == "mx2"]
    assert mx2.value is not None
    assert len(mx2.value.log.rejects) == COUNT
    # one pass-1 command for all 300 recipients on mx2 (plus discovery), not 300
    assert mx2.value.commands <= 5, mx2.value.commands

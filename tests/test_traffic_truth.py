"""search and trace on generated traffic (slow deliveries, retries, rotations, repeated
rejects) return every row that the generator's truth and a grep of the same files say is there.

Pass 2's windows are made small so that they are used on these few MB, and so that slow
deliveries fall in the gaps between them: the case where a row once vanished.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from traffic import HOST, generate, grep_rows, write_rotated

from collector.logs import commands
from collector.logs.select import select_rows
from collector.models import Host, Query, TransportKind
from collector.search.host import search_host
from collector.trace.follow import trace_fleet
from collector.transport.local import LocalSession

NOW = datetime(2026, 1, 20, tzinfo=UTC)


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("traffic") / HOST
    lines, truth = generate()
    write_rotated(root, lines)
    host = Host(HOST, transport=TransportKind.LOCAL, root=str(root), timezone="UTC")
    return host, root, truth


def senders(truth) -> list[str]:  # type: ignore[no-untyped-def]
    names = sorted({s for s, _ in truth.messages.values()})
    return ["rare@example.org", *names[:6]]


@pytest.mark.parametrize("window", [(400, 900), (64 * 1024, 192 * 1024)], ids=["small", "real"])
def test_every_row_of_a_sender_is_found(traffic, window, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    host, root, truth = traffic
    monkeypatch.setattr(commands, "WINDOW_BEFORE", window[0])
    monkeypatch.setattr(commands, "WINDOW_AFTER", window[1])
    monkeypatch.setattr(commands, "WINDOW_MAX_SHARE", 0.9)  # use windows even when many
    monkeypatch.setattr(commands, "WINDOW_COST_BYTES", 0)  # and however small the file
    for sender in senders(truth):
        expected = truth.rows_from(sender)
        assert expected == grep_rows(root, sender)  # the truth is what grep proves
        query = Query(senders=(sender,))
        result = search_host(LocalSession(host), query, UTC, NOW)
        got = sorted(((r.queue_id, r.recipient or "", str(r.status))
                      for r in select_rows([result.log], query)),
                     key=lambda r: (r[0] or "", r[1], r[2]))
        assert got == expected, sender


def test_trace_finds_every_recipient_of_a_slow_message(traffic) -> None:  # type: ignore[no-untyped-def]
    host, _root, truth = traffic
    slow = [q for q, (_s, rcpts) in truth.messages.items() if len(rcpts) > 1][:5]
    for qid in slow:
        run = trace_fleet([host], [host], Query(terms=(qid,)), open_session=LocalSession,
                          zone_of=lambda h: UTC, now=NOW)
        (trace,) = run.traces
        assert {o.address: o.status for o in trace.recipients} == truth.messages[qid][1]

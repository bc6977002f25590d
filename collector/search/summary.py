"""``collector summary`` on one host: counts of messages, recipients by status, rejects."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, tzinfo

from collector.inventory.origins import Reading
from collector.logs.select import tally_count
from collector.models import Query, Reject, Unread
from collector.search.host import ByteCounter, HostSearch, HostSearcher, SearchContext
from collector.transport.base import Session


@dataclass(frozen=True, slots=True)
class HostSummary:
    search: HostSearch
    counts: dict[str, int]

    @property
    def unread(self) -> tuple[Unread, ...]:
        return self.search.unread


def summarize_host(
    session: Session,
    query: Query,
    zone: tzinfo,
    now: datetime,
    *,
    on_bytes: ByteCounter | None = None,
) -> HostSummary:
    """Counts of one host's messages, recipients by status and rejects, in one streaming pass
    that keeps no line: only the counts of messages not finished yet."""
    return summarize_reader(session, query, zone, now, on_bytes=on_bytes)[0][1]


def summarize_reader(
    session: Session,
    query: Query,
    zone: tzinfo,
    now: datetime,
    *,
    on_bytes: ByteCounter | None = None,
    reading: Reading | None = None,
) -> list[tuple[str, HostSummary]]:
    """:func:`summarize_host` on a host that may be a log host: counts per origin host, from
    one streaming pass over the log host's logs."""
    counts: dict[str, dict[str, int]] = {}

    def count_reject(r: Reject) -> bool:
        if (query.since is None or r.time >= query.since) and (
            query.until is None or r.time <= query.until
        ):
            mine = counts.setdefault(r.host, {})
            mine["rejected"] = mine.get("rejected", 0) + 1
        return False  # counted, not kept

    resolver = reading.resolver() if reading is not None else None
    searcher = HostSearcher(session, SearchContext(zone, now, on_bytes), origins=resolver)
    searcher.only = reading.only if reading is not None else None
    searcher.count(
        query,
        keep_reject=count_reject,
        on_count=lambda c: tally_count(c, counts.setdefault(c.host, {}), query),
    )
    searcher.check_unchanged()  # counted from files logrotate moved meanwhile: partial
    return [
        (r.host, HostSummary(dataclasses.replace(r, notes=searcher.notes(),
                                                 unread=searcher.unread()),
                             counts.get(r.host, {})))
        for r in searcher.results()
    ]

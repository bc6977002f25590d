"""``collector summary`` on one host: counts of messages, recipients by status, rejects."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, tzinfo

from collector.logs.select import tally
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
    """Counts of one host's messages, recipients by status and rejects, in one streaming pass."""
    counts: dict[str, int] = {}

    def count_reject(r: Reject) -> bool:
        if (query.since is None or r.time >= query.since) and (
            query.until is None or r.time <= query.until
        ):
            counts["rejected"] = counts.get("rejected", 0) + 1
        return False  # counted, not kept

    searcher = HostSearcher(session, SearchContext(zone, now, on_bytes))
    result = searcher.scan(
        query,
        keep=lambda g: False,
        keep_reject=count_reject,
        on_group=lambda g: tally(g, counts, query),
    )
    if searcher.check_unchanged():  # counted from files logrotate moved meanwhile: partial
        result = dataclasses.replace(result, notes=searcher.notes(), unread=searcher.unread())
    return HostSummary(result, counts)

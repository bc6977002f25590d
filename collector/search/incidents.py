"""``collector incidents`` on one host: the problems of a window (and of the window compared).

A search for the problem statuses (``status=deferred``, ``bounced``, ``expired`` and
refusals) with every line of the queue IDs it finds, made into :class:`Problem` s on the host's
worker: what comes back is the problems and the host's stats, not its lines.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo

from collector.incidents.group import KINDS, Problem, log_problems
from collector.inventory.origins import Reading
from collector.models import Coverage, Host, HostLog, Query, Unread
from collector.search.host import ByteCounter, HostSearch, search_reader
from collector.trace.correlate import build_host_index
from collector.transport.base import Session


@dataclass(frozen=True, slots=True)
class HostIncidents:
    """One host's problems in the window asked, and in the comparison window (``--compare``)."""

    search: HostSearch  # its log reduced to the stats
    problems: tuple[Problem, ...]
    baseline: tuple[Problem, ...] | None = None
    baseline_coverage: Coverage | None = None
    baseline_unread: tuple[Unread, ...] = ()

    @property
    def unread(self) -> tuple[Unread, ...]:
        """The sources not read to their end in the window asked (the compared window's
        are ``baseline_unread``: they make the marks, not the answer, partial)."""
        return self.search.unread

    @property
    def baseline_complete(self) -> bool:
        """The compared window was read whole and the logs hold all of it."""
        return not self.baseline_unread and (
            self.baseline_coverage is None or self.baseline_coverage.complete)


def problem_query(since: datetime | None, until: datetime | None) -> Query:
    """The search that finds every problem of a window."""
    return Query(statuses=tuple(k.value for k in KINDS), since=since, until=until)


def incidents_reader(
    session: Session,
    fleet: Sequence[Host],
    query: Query,
    baseline: Query | None,
    zone: tzinfo,
    now: datetime,
    *,
    on_bytes: ByteCounter | None = None,
    reading: Reading | None = None,
) -> list[tuple[str, HostIncidents]]:
    """The problems of ``query``'s window on one host (or on each host a log host carries),
    and those of ``baseline``'s window when given."""
    index = build_host_index(fleet)

    def problems(q: Query) -> dict[str, tuple[HostSearch, tuple[Problem, ...]]]:
        found = search_reader(session, q, zone, now, on_bytes=on_bytes, reading=reading)
        return {
            r.host: (
                dataclasses.replace(r, log=HostLog(r.log.host, (), (), r.log.stats)),
                tuple(log_problems(r.log, index, q.since, q.until)),
            )
            for r in found
        }

    now_found = problems(query)
    then_found = problems(baseline) if baseline is not None else {}
    out = []
    for host, (search, mine) in now_found.items():
        then = then_found.get(host)
        out.append((host, HostIncidents(
            search, mine,
            baseline=then[1] if then is not None else (() if baseline is not None else None),
            baseline_coverage=then[0].coverage if then is not None else None,
            baseline_unread=then[0].unread if then is not None else (),
        )))
    return out

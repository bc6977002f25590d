"""Which part of the time window asked a host's logs let an answer see (pure).

"Nothing matched" is only an answer when every line that could match was read. This module
turns what a host's sources are (their names, mtimes, first and last lines) and what could not
be read into a :class:`~collector.models.Coverage`: the range seen and the holes in it.

Each rotation stem (``maillog``, ``maillog.1``, ``maillog.2.gz``, ...) is one log over time,
oldest file first. A file covers its first line to its last: a compressed rotation's last line
is its mtime (gzip keeps it); the live file of a host being read covers up to the moment it was
read to its end (everything written by then was read), a copy's up to when it was fetched.
Holes:

* ``before-logs``: the window starts before the oldest line of any of the host's logs;
* ``after-logs``: a copy (a fetched case, a directory of logs) ends before ``until`` does;
* ``missing-rotation``: a number missing in the ``.N`` sequence (``.1`` and ``.3``, no ``.2``);
* ``gap``: two neighbouring files of one log rotated more than 1.5 rotation periods apart
  (the period: the shortest time between two rotations, by mtime) with over an hour of
  silence between their lines: what a missing dated rotation looks like;
* ``unread``: a source that could not be read to its end (permission, damage, vanished).

Only the parts inside the window count. A host's answer is complete when none is left.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from ..models import (
    Compression,
    Coverage,
    Hole,
    LogSource,
    Query,
    SourceKind,
    SourceSpan,
    SourceState,
    Uncovered,
    Unread,
)
from .discovery import rotation_stem

#: A silence between two files of one log shorter than this is never a hole.
MIN_GAP = timedelta(hours=1)

_NUMBER = re.compile(r"\.(\d{1,4})(?:\.(?:gz|bz2|xz|zst))?$")

__all__ = ["MIN_GAP", "Edges", "from_dict", "ledger", "recorded", "to_dict"]

#: A source's first and last line times, as read on the host (None: not read or no line).
Edges = Mapping[str, tuple[datetime | None, datetime | None]]


def _number(path: str) -> int | None:
    """The rotation number of a file of its stem: 0 for the live file, None for a dated one."""
    stem = rotation_stem(path)
    if stem == path:
        return 0
    m = _NUMBER.search(path[len(stem) :]) if path.startswith(stem) else None
    return int(m.group(1)) if m and m.start() == 0 else None


def _mtime(src: LogSource) -> datetime | None:
    return datetime.fromtimestamp(src.mtime).astimezone() if src.mtime is not None else None


def _span(
    src: LogSource,
    state: SourceState,
    edges: Edges,
    live_until: datetime | None,
    why: str | None,
) -> SourceSpan:
    first, last = edges.get(src.path, (None, None))
    if live_until is not None:
        last = live_until
    elif last is None:
        last = _mtime(src)
    return SourceSpan(src.path, first, last, state, why)


def ledger(
    sources: Sequence[LogSource],
    chosen: Sequence[str],
    unread: Mapping[str, Unread],
    edges: Edges,
    *,
    since: datetime | None,
    until: datetime | None,
    now: datetime,
    read_until: datetime | None,
) -> Coverage:
    """The coverage of one host's answer.

    ``sources``: every source discovery found, each log oldest file first; ``chosen``: the
    paths read; ``edges``: first/last line times of the sources read; ``read_until``: the end
    of a live log (when it was read to its end, or when a copy was fetched), None for a
    directory of logs (its live file ends at its last line). ``now`` ends an open window.
    """
    picked = set(chosen)
    stems: dict[str, list[LogSource]] = {}
    journals: list[LogSource] = []
    for src in sources:
        if src.kind is SourceKind.JOURNAL:
            journals.append(src)
        else:
            stems.setdefault(rotation_stem(src.path), []).append(src)
    spans: list[SourceSpan] = []
    holes: list[Uncovered] = []
    earliest: list[datetime] = []
    for files in stems.values():
        numbers = [_number(f.path) for f in files]
        if None not in numbers:  # .N names say the order, whatever the mtimes say
            files = [f for _, f in sorted(zip(numbers, files, strict=True),
                                          key=lambda p: -(p[0] or 0))]
        stem_spans: list[SourceSpan] = []
        for i, src in enumerate(files):
            state = (
                SourceState.UNREAD if src.path in unread
                else SourceState.READ if src.path in picked
                else SourceState.SKIPPED
            )
            live = (
                i == len(files) - 1
                and src.compression is Compression.NONE
                and _number(src.path) == 0
            )
            why = str(unread[src.path]) if src.path in unread else (
                "outside the time window" if state is SourceState.SKIPPED else None
            )
            stem_spans.append(_span(src, state, edges, read_until if live else None, why))
        spans.extend(stem_spans)
        holes.extend(_stem_holes(files, stem_spans))
        for s, src in zip(stem_spans, files, strict=True):
            if s.first is not None:
                earliest.append(s.first)
            elif s.state is SourceState.SKIPPED and (m := _mtime(src)) is not None:
                earliest.append(m)  # its lines end there: the log reaches back before it
        if not earliest and files and (m := _mtime(files[0])) is not None:
            earliest.append(m)  # nothing logged yet: the log exists since (at least) then
    for src in journals:
        first, _ = edges.get(src.path, (None, None))
        state = SourceState.UNREAD if src.path in unread else SourceState.READ
        spans.append(SourceSpan(src.path, first, read_until, state,
                                str(unread[src.path]) if src.path in unread else None))
        if first is not None:
            earliest.append(first)
        if state is SourceState.UNREAD:
            holes.append(Uncovered(first, read_until, Hole.UNREAD, src.path))
    start = min(earliest) if earliest else None
    lasts = [s.last for s in spans if s.last is not None]
    end = max(lasts) if lasts else None
    if since is not None and (start is None or start > since):
        holes.append(Uncovered(since, start, Hole.BEFORE_LOGS))
    window_end = min(until, now) if until is not None else now
    # A copy ends where it was made (or at its last line): a hole only before an --until asked
    # for (a window open at its end asks the copy for all it holds).
    if until is not None and end is not None and end < window_end:
        holes.append(Uncovered(end, window_end, Hole.AFTER_LOGS))
    inside = [h for h in (_clip(h, since, window_end) for h in holes) if h is not None]
    inside.sort(key=lambda h: (h.start or datetime.min.replace(tzinfo=now.tzinfo), h.why))
    return Coverage(since, until, start, end, tuple(spans), tuple(inside))


def _stem_holes(files: Sequence[LogSource], spans: Sequence[SourceSpan]) -> list[Uncovered]:
    """The holes between and inside the files of one log (oldest first).

    A rotated file's mtime is when it was rotated: the shortest time between two rotations is
    the log's period (a missing file only makes one longer). Two neighbours more than 1.5
    periods apart with a silence of over :data:`MIN_GAP` between their lines are a gap.
    """
    holes: list[Uncovered] = []
    rotated = [f.mtime for f, s in zip(files[:-1], spans[:-1], strict=True) if f.mtime is not None]
    if files and _number(files[-1].path) != 0 and files[-1].mtime is not None:
        rotated.append(files[-1].mtime)  # no live file: the newest is a rotation too
    steps = [b - a for a, b in zip(rotated, rotated[1:], strict=False) if b > a]
    period = min(steps) if steps else None
    for i, (src, span) in enumerate(zip(files, spans, strict=True)):
        if span.state is SourceState.UNREAD:
            before = spans[i - 1].last if i else None
            holes.append(Uncovered(span.first or before, span.last, Hole.UNREAD, src.path))
        if i == 0:
            continue
        older, newer = spans[i - 1], span
        n_old, n_new = _number(files[i - 1].path), _number(src.path)
        if n_old is not None and n_new is not None and n_old - n_new > 1:
            missing = (f"{rotation_stem(src.path)}.{n_new + 1}" if n_old - n_new == 2
                       else f"{rotation_stem(src.path)}.{n_new + 1}-{n_old - 1}")
            holes.append(Uncovered(older.last, newer.first, Hole.MISSING_ROTATION, missing))
            continue
        began = files[i - 1].mtime
        # the live file starts when the newest rotation was made: its first line ends the step
        ended = src.mtime if i < len(files) - 1 or _number(src.path) != 0 else (
            newer.first.timestamp() if newer.first is not None else None)
        if (
            period is not None and began is not None and ended is not None
            and ended - began > 1.5 * period
            and older.last is not None and newer.first is not None
            and newer.first - older.last > MIN_GAP
        ):
            holes.append(Uncovered(older.last, newer.first, Hole.GAP,
                                   f"between {files[i - 1].path} and {src.path}"))
    return holes


def _clip(hole: Uncovered, since: datetime | None, end: datetime) -> Uncovered | None:
    """The part of a hole inside [since, end]; None when nothing is left."""
    start = hole.start if hole.start is not None else since
    if since is not None and (start is None or start < since):
        start = since
    stop = hole.end if hole.end is not None and hole.end < end else end
    if start is not None and start >= stop:
        return None
    return Uncovered(start, stop, hole.why, hole.path)


def recorded(
    coverage: Coverage, *, since: datetime | None, until: datetime | None, now: datetime
) -> Coverage:
    """A copy's coverage, from the one its fetch recorded: the copy holds what the fetch saw
    of its own window (no more, however many lines it kept), with the fetch's holes."""
    start, end = coverage.first, coverage.last
    if coverage.since is not None and (start is None or coverage.since > start):
        start = coverage.since
    if coverage.until is not None and (end is None or coverage.until < end):
        end = coverage.until
    holes = [h for h in coverage.uncovered if h.why not in (Hole.BEFORE_LOGS, Hole.AFTER_LOGS)]
    if since is not None and (start is None or start > since):
        holes.append(Uncovered(since, start, Hole.BEFORE_LOGS))
    window_end = min(until, now) if until is not None else now
    if until is not None and end is not None and end < window_end:
        holes.append(Uncovered(end, window_end, Hole.AFTER_LOGS))
    inside = [h for h in (_clip(h, since, window_end) for h in holes) if h is not None]
    return Coverage(since, until, start, end, coverage.sources, tuple(inside))


def _iso(when: datetime | None) -> str | None:
    """ISO 8601 with the offset, to the second (microseconds when the log had them)."""
    if when is None:
        return None
    return when.isoformat(timespec="microseconds" if when.microsecond else "seconds")


def to_dict(coverage: Coverage) -> dict[str, Any]:
    """The JSON object ``hosts[].coverage`` (and a fetched copy's manifest) holds."""
    return {
        "complete": coverage.complete,
        "window": {"since": _iso(coverage.since), "until": _iso(coverage.until)},
        "first": _iso(coverage.first),
        "last": _iso(coverage.last),
        "sources": [
            {"path": s.path, "first": _iso(s.first), "last": _iso(s.last), "state": s.state.value,
             "why": s.why}
            for s in coverage.sources
        ],
        "uncovered": [
            {"from": _iso(u.start), "to": _iso(u.end), "why": u.why.value, "path": u.path}
            for u in coverage.uncovered
        ],
    }


def _when(value: object) -> datetime | None:
    if value is None:
        return None
    when = datetime.fromisoformat(str(value))
    if when.tzinfo is None:
        raise ValueError("a time without its offset")
    return when


def _text(value: object) -> str | None:
    return None if value is None else str(value)[:4096]


def from_dict(data: object) -> Coverage | None:
    """A coverage read back from a manifest (a file in a case: anything may be in it); None
    for anything that is not one."""
    try:
        assert isinstance(data, dict)
        window = data["window"]
        assert isinstance(window, dict)
        sources = tuple(
            SourceSpan(str(s["path"]), _when(s["first"]), _when(s["last"]),
                       SourceState(s["state"]), _text(s.get("why")))
            for s in data["sources"][:10_000]
        )
        holes = tuple(
            Uncovered(_when(u["from"]), _when(u["to"]), Hole(u["why"]), _text(u.get("path")))
            for u in data["uncovered"][:10_000]
        )
        return Coverage(_when(window["since"]), _when(window["until"]), _when(data["first"]),
                        _when(data["last"]), sources, holes)
    except (AssertionError, KeyError, TypeError, ValueError, AttributeError):
        return None


#: The selectors a fetched case was made with: an offline search can answer only inside them.
_SELECTORS = ("senders", "recipients", "message_ids", "queue_ids", "statuses", "clients",
              "subjects", "terms")


def selectors_dict(query: Query) -> dict[str, list[str]]:
    """The selectors of a fetch, as its manifest records them (the time window is in the
    coverage)."""
    return {k: list(getattr(query, k)) for k in _SELECTORS if getattr(query, k)}


def selectors_from(data: object) -> dict[str, frozenset[str]] | None:
    """A manifest's ``selected``; None for a whole copy (``--all``). Anything that is not
    selectors is an unknown selector, which :func:`within` never covers."""
    if data is None:
        return None
    if not isinstance(data, dict):
        return {"?": frozenset()}
    out: dict[str, frozenset[str]] = {}
    for key, values in data.items():
        if key not in _SELECTORS or not isinstance(values, list):
            return {"?": frozenset()}
        out[key] = frozenset(str(v).casefold() for v in values[:10_000])
    return out


def within(selected: Mapping[str, frozenset[str]], query: Query) -> bool:
    """Whether every message ``query`` matches was selected by the fetch (so is in the case):
    each of the fetch's selectors is also the query's, with values among the fetch's."""
    for key, values in selected.items():
        if key not in _SELECTORS:
            return False
        asked = {str(v).casefold() for v in getattr(query, key)}
        if not asked or not asked <= values:
            return False
    return True


def not_fetched(
    coverage: Coverage, selected: Mapping[str, frozenset[str]], *, now: datetime
) -> Coverage:
    """A query a filtered case cannot answer: the whole window is not seen."""
    shown = "; ".join(f"{k} {', '.join(sorted(v))}" for k, v in sorted(selected.items()))
    window_end = min(coverage.until, now) if coverage.until is not None else now
    hole = Uncovered(coverage.since, window_end, Hole.NOT_FETCHED, shown[:300] or "?")
    return Coverage(coverage.since, coverage.until, coverage.first, coverage.last,
                    coverage.sources, (hole,))

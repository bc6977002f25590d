"""Output: tables (tabulate), JSON, NDJSON and CSV. Each function writes to the stream it is given.

Only ``models`` and the pure field readers of ``logs.fields`` are imported: rendering takes
values and never reaches back into the pipeline.

Tables are for a person: every cell is shown through ``safe.printable`` (control and bidi
characters escaped) before it is fitted. JSON, NDJSON and CSV are data: they carry the values
exactly as logged (JSON writes a few invisible characters as ``\\uXXXX``, see ``safe``); CSV
is not meant for a terminal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from collector.logs.fields import parse_endpoint
from collector.models import Coverage, HostError, LogSource, ParseStats, Row
from collector.render.safe import CsvWriter, printable, write_ndjson
from collector.render.safe import write_json as write_json  # the CLI's JSON writer, said once
from collector.render.text import clip, fit_widths

#: Columns of one search result, in order; also the CSV header and the JSON keys.
ROW_FIELDS = (
    "time",
    "host",
    "queue_id",
    "from",
    "to",
    "orig_to",
    "status",
    "dsn",
    "relay",
    "delay",
    "message_id",
    "response",
    "client",
)


@dataclass(frozen=True, slots=True)
class HostReport:
    """What the output says about one host, whether it answered or not."""

    name: str
    error: HostError | None = None
    sources: tuple[LogSource, ...] = ()
    notes: tuple[str, ...] = ()
    stats: ParseStats | None = None
    summary: Mapping[str, int] = field(default_factory=dict)
    via: str | None = None  # the log host its lines were read on (``collects``)
    coverage: Coverage | None = None  # what of the window its logs let the answer see

    @property
    def ok(self) -> bool:
        return self.error is None


def _tabulate(table: list[list[Any]], headers: list[str], *, numparse: bool = False) -> str:
    """tabulate, imported on first use: JSON, NDJSON and CSV runs never load it (~15 ms)."""
    from tabulate import tabulate

    return tabulate(table, headers=headers, tablefmt="simple", disable_numparse=not numparse)


def iso(when: datetime | None) -> str | None:
    """ISO 8601 with the offset, to the second (microseconds when the log had them)."""
    if when is None:
        return None
    return when.isoformat(timespec="microseconds" if when.microsecond else "seconds")


def row_dict(row: Row) -> dict[str, Any]:
    return {
        "time": iso(row.time),
        "host": row.host,
        "queue_id": row.queue_id,
        "from": row.sender,
        "to": row.recipient,
        "orig_to": row.orig_recipient,
        "status": row.status,
        "dsn": row.dsn,
        "relay": row.relay,
        "delay": row.delay,
        "message_id": row.message_id,
        "response": row.response,
        "client": row.client,
    }


def source_dict(source: LogSource) -> dict[str, Any]:
    return {
        "path": source.path,
        "kind": source.kind,
        "origin": source.origin,
        "compression": source.compression.value or None,
        "size": source.size,
        "mtime": iso(datetime.fromtimestamp(source.mtime).astimezone())
        if source.mtime is not None
        else None,
        "instance": source.instance,
        "readable": source.readable,
    }


def stats_dict(stats: ParseStats | None) -> dict[str, Any] | None:
    if stats is None:
        return None
    return {
        "lines": stats.lines,
        "parsed": stats.parsed,
        "unknown": stats.unknown,
        "bad": stats.bad,
        "blank": stats.blank,
        "unknown_samples": list(stats.unknown_samples),
    }


def host_dict(report: HostReport) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": report.name,
        "ok": report.ok,
        "error": None,
        "sources": [source_dict(s) for s in report.sources],
        "notes": list(report.notes),
        "stats": stats_dict(report.stats),
    }
    if report.error is not None:
        out["error"] = {"stage": report.error.stage.value, "message": report.error.message}
    if report.via is not None:  # only for a host read on its log host (``collects``)
        out["via"] = report.via
    out["coverage"] = coverage_dict(report.coverage)
    return out


def coverage_dict(coverage: Coverage | None) -> dict[str, Any] | None:
    """``hosts[].coverage``: the window asked, the range read, each source's, the holes."""
    from collector.logs.coverage import to_dict

    return None if coverage is None else to_dict(coverage)


def render_rows_json(
    rows: Sequence[Row], hosts: Sequence[HostReport], out: IO[str], verdict: str | None = None
) -> None:
    payload: dict[str, Any] = {
        "results": [row_dict(r) for r in rows], "hosts": [host_dict(h) for h in hosts]
    }
    if verdict is not None:
        payload["verdict"] = verdict
    write_json(payload, out)


def render_rows_ndjson(rows: Sequence[Row], out: IO[str]) -> None:
    write_ndjson((row_dict(row) for row in rows), out)


def render_rows_csv(rows: Sequence[Row], out: IO[str]) -> None:
    """The values exactly as logged (CSV is data for a program, not text for a terminal)."""
    writer = CsvWriter(out)
    writer.writerow(ROW_FIELDS)
    for row in rows:
        d = row_dict(row)
        writer.writerow(["" if d[k] is None else d[k] for k in ROW_FIELDS])


def _cell(text: str | None, width: int) -> str:
    return clip(text, width) if text else "-"


def short_time(when: datetime) -> str:
    return when.strftime("%m-%d %H:%M:%S")


def _fmt_delay(delay: float | None) -> str:
    if delay is None:
        return "-"
    return f"{delay:g}"


def _relay_name(relay: str | None) -> str | None:
    """``mx.example.net[198.51.100.7]:25`` -> ``mx.example.net`` (the IP when unnamed)."""
    return parse_endpoint(relay).label if relay else relay


def render_rows_table(rows: Sequence[Row], out: IO[str], *, width: int = 100) -> None:
    """A table that fits ``width`` columns: the widest texts are clipped with '…' first.

    The relay shows its name only; full values are in ``--format json|csv``. Cells are
    escaped (``safe.printable``) before widths are measured and cells clipped.
    """
    if not rows:
        return
    headers = ["time", "host", "queue_id", "from", "to", "status", "relay", "response"]
    same_day = len({r.time.date() for r in rows}) == 1
    cells = [
        [
            r.time.strftime("%H:%M:%S") if same_day else short_time(r.time),
            printable(r.host),
            printable(r.queue_id or "-"),
            printable((r.sender if r.sender != "" else "<>") or "-"),
            printable(r.recipient or "-"),
            printable(r.status),
            printable(_relay_name(r.relay) or "-"),
            printable(r.response or "-"),
        ]
        for r in rows
    ]
    # tabulate makes a column at least as wide as its header plus 2.
    natural = [max(len(h) + 2, *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    minimum = [max(m, len(h) + 2) for m, h in zip((8, 4, 8, 10, 14, 6, 7, 10), headers)]
    # Shrink the reply first, then the relay, the sender and, last, the recipient; host and
    # queue ID are never clipped (they are what a reader looks up next).
    widths = fit_widths(natural, minimum, (7, 6, 3, 4), width)
    table = [[_cell(c, widths[i]) for i, c in enumerate(row)] for row in cells]
    out.write(_tabulate(table, headers))
    out.write("\n")


def render_summary_table(hosts: Sequence[HostReport], out: IO[str]) -> None:
    """Per-host counts: messages, recipients by final status, rejects, lines read."""
    statuses = ("sent", "deferred", "bounced", "expired", "discarded")
    # Short headers keep the table within 100 columns; JSON has the full names.
    headers = ["host", "lines", "msgs", "sent", "defer", "bounce", "expire", "discard", "reject",
               "unparsed"]
    table: list[list[Any]] = []
    failed: list[str] = []
    for h in hosts:
        if h.error is not None:
            # Below the table, so that a long reason does not widen a column.
            failed.append(printable(f"{h.name}  error: {h.error.where}: {h.error.message}"))
            continue
        s = h.summary
        table.append(
            [
                printable(h.name),
                h.stats.lines if h.stats else 0,
                s.get("messages", 0),
                *[s.get(k, 0) for k in statuses],
                s.get("rejected", 0),
                h.stats.unknown if h.stats else 0,
            ]
        )
    out.write(_tabulate(table, headers, numparse=True))
    out.write("\n")
    for line in failed:
        out.write(line + "\n")


def render_hosts_table(rows: Sequence[Sequence[Any]], headers: Sequence[str], out: IO[str]) -> None:
    """``hosts`` and ``hosts --check``: every cell shown through ``printable`` (a cell its
    producer escaped and cut is an ``Escaped`` and stays as it is)."""
    # (str() of an Escaped would be a plain str again: only non-text cells are converted)
    table = [[printable(c if isinstance(c, str) else str(c)) for c in row] for row in rows]
    out.write(_tabulate(table, list(headers)))
    out.write("\n")

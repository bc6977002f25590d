"""Command-line option types, and the values they build: a ``Query``, a time."""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import Annotated

import typer

from collector.errors import UsageError
from collector.models import STATUSES, Query


class Format(enum.StrEnum):
    TABLE = "table"
    JSON = "json"
    NDJSON = "ndjson"
    CSV = "csv"


InventoryOpt = Annotated[
    Path | None,
    typer.Option(
        "--inventory",
        "-i",
        metavar="PATH",
        help="Inventory file (default: ./inventory.toml, then $COLLECTOR_INVENTORY).",
        show_default=False,
    ),
]
def _inventory_names(ctx: typer.Context, groups: bool) -> list[str]:
    """Host (or group) names of the inventory the command line names, for shell completion.

    Completion must never fail loudly: an inventory that cannot be read completes nothing.
    """
    from collector.errors import CollectorError
    from collector.inventory.load import find_inventory, load_inventory

    explicit = ctx.params.get("inventory")
    try:
        inv = load_inventory(find_inventory(str(explicit) if explicit else None, os.environ,
                                            Path.cwd()))
    except (CollectorError, OSError):
        return []
    if groups:
        return list(inv.groups)
    return [name for h in inv.hosts for name in (h.name, *h.aliases)]


def complete_host(ctx: typer.Context, incomplete: str) -> list[str]:
    return [n for n in _inventory_names(ctx, groups=False) if n.startswith(incomplete)]


def complete_group(ctx: typer.Context, incomplete: str) -> list[str]:
    return [n for n in _inventory_names(ctx, groups=True) if n.startswith(incomplete)]


HostOpt = Annotated[
    list[str] | None,
    typer.Option("--host", metavar="NAME", help="Only this host (repeatable).", show_default=False,
                 autocompletion=complete_host),
]
GroupOpt = Annotated[
    list[str] | None,
    typer.Option("--group", metavar="NAME", help="Only hosts of this group (repeatable).",
                 show_default=False, autocompletion=complete_group),
]
WorkersOpt = Annotated[
    int | None, typer.Option("--workers", metavar="N", help="Hosts queried at once (default 16).", min=1)
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")]
VerboseOpt = Annotated[
    bool, typer.Option("--verbose", "-v", help="Report sources and unparsed lines on stderr.")
]
FromOpt = Annotated[
    list[str] | None, typer.Option("--from", metavar="ADDRESS", help="Envelope sender (repeatable).", show_default=False)
]
ToOpt = Annotated[
    list[str] | None,
    typer.Option("--to", metavar="ADDRESS", help="Recipient, also matches orig_to (repeatable).", show_default=False),
]
MsgIdOpt = Annotated[
    list[str] | None, typer.Option("--message-id", metavar="MESSAGE-ID", help="Message-ID header.", show_default=False)
]
QidOpt = Annotated[
    list[str] | None, typer.Option("--queue-id", metavar="QUEUE-ID", help="Postfix queue ID.", show_default=False)
]
StatusOpt = Annotated[
    list[str] | None,
    typer.Option("--status", metavar="STATUS", help=f"Final status: {', '.join(STATUSES)}.", show_default=False),
]
ClientOpt = Annotated[
    list[str] | None,
    typer.Option("--client", metavar="NAME|IP", help="Connecting client, name or IP.", show_default=False),
]
SubjectOpt = Annotated[
    list[str] | None,
    typer.Option("--subject", metavar="TEXT",
                 help="Text in the Subject (a fixed string, any case), where header_checks "
                 "log it (INFO/WARN on /^Subject:/).", show_default=False),
]
SinceOpt = Annotated[
    str | None,
    typer.Option("--since", metavar="WHEN", help="From: ISO date/time, 2h / 3d ago, today, yesterday."),
]
UntilOpt = Annotated[str | None, typer.Option("--until", metavar="WHEN", help="Until: same forms as --since.")]
FormatOpt = Annotated[Format, typer.Option("--format", "-f", metavar="table|json|ndjson|csv", help="Output format.")]
OfflineOpt = Annotated[
    Path | None,
    typer.Option(
        "--offline",
        metavar="DIR",
        help="Search a directory written by 'collector fetch' instead of the inventory's hosts.",
        show_default=False,
    ),
]


_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(text: str, now: datetime) -> datetime:
    """Read a --since/--until value: ISO date/time, ``2h``/``3d`` ago, ``today``, ``yesterday``.

    A value without an offset is local time of ``now``'s zone.
    """
    value = text.strip().lower()
    zone: tzinfo | None = now.tzinfo
    if value in ("now",):
        return now
    if value in ("today", "yesterday"):
        day = now.date() - timedelta(days=1 if value == "yesterday" else 0)
        return datetime.combine(day, time(0), tzinfo=zone)
    rel = _RELATIVE.match(value)
    if rel:
        try:
            return now - timedelta(**{_UNITS[rel.group(2)]: int(rel.group(1))})
        except OverflowError:
            raise UsageError(f"time {text!r} is too far in the past") from None
    try:
        if len(value) == 10:
            parsed = datetime.combine(date.fromisoformat(value), time(0))
        else:
            parsed = datetime.fromisoformat(text.strip().replace(" ", "T", 1))
    except ValueError:
        raise UsageError(
            f"cannot read time {text!r}: use an ISO date/time (2026-01-15, 2026-01-15T10:30), "
            "a span ago (30m, 2h, 3d, 1w), 'today' or 'yesterday'"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    return parsed


def parse_span(text: str, option: str) -> float:
    """A span in seconds: ``90`` or ``90s``, ``10m``, ``2h``, ``1d``, ``1w``."""
    value = text.strip().lower()
    if value.isdigit():
        value += "s"
    rel = _RELATIVE.match(value)
    if rel is None or int(rel.group(1)) <= 0:
        raise UsageError(f"cannot read span {text!r}: use seconds or 90s, 10m, 2h, 1d",
                         option=option)
    return timedelta(**{_UNITS[rel.group(2)]: int(rel.group(1))}).total_seconds()


def build_query(
    senders: Sequence[str] | None,
    recipients: Sequence[str] | None,
    message_ids: Sequence[str] | None,
    queue_ids: Sequence[str] | None,
    statuses: Sequence[str] | None,
    clients: Sequence[str] | None,
    since: str | None,
    until: str | None,
    *,
    subjects: Sequence[str] | None = None,
) -> Query:
    now = datetime.now().astimezone()
    for s in statuses or ():
        if s not in STATUSES:
            raise UsageError(f"unknown status {s!r}; choose from {', '.join(STATUSES)}", option="--status")
    for name, values in (("--from", senders), ("--to", recipients), ("--client", clients),
                         ("--message-id", message_ids), ("--queue-id", queue_ids),
                         ("--subject", subjects)):
        for v in values or ():
            if not v.strip() or "\n" in v or "\0" in v:
                raise UsageError(f"empty or multi-line value {v!r}", option=name)
    q = Query(
        senders=tuple(senders or ()),
        recipients=tuple(recipients or ()),
        message_ids=tuple(message_ids or ()),
        queue_ids=tuple(queue_ids or ()),
        statuses=tuple(statuses or ()),
        clients=tuple(clients or ()),
        subjects=tuple(subjects or ()),
        since=parse_when(since, now) if since else None,
        until=parse_when(until, now) if until else None,
    )
    if q.since is not None and q.until is not None and q.since > q.until:
        raise UsageError(
            f"--since ({q.since:%Y-%m-%d %H:%M:%S%z}) is after --until "
            f"({q.until:%Y-%m-%d %H:%M:%S%z}): the window is empty", option="--until")
    return q



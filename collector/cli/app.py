"""The command line: options in, the orchestrators called, output rendered, exit code chosen.

stdout carries data; stderr carries diagnostics (see ``cli.report``: one line per problem).
What the screen is (``cli.terminal``) is decided once per command. No regexes, SSH or
formatting here: those live in their stages.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from collector import __version__
from collector.cli.options import (
    ClientOpt,
    DebugOpt,
    Format,
    FormatOpt,
    FromOpt,
    GroupOpt,
    HostOpt,
    InventoryOpt,
    MsgIdOpt,
    OfflineOpt,
    QidOpt,
    SinceOpt,
    StatusOpt,
    SubjectOpt,
    ToOpt,
    UntilOpt,
    VerboseOpt,
    WorkersOpt,
    build_query,
    parse_span,
)
from collector.cli.report import (
    ExitCode,
    err,
    errors,
    finish,
    report_problems,
    unread_of,
    verdict,
)
from collector.cli.run import passphrase, run_fleet, run_readings
from collector.cli.terminal import Terminal
from collector.errors import UsageError
from collector.inventory.load import find_inventory, host_zone, load_inventory, select_hosts
from collector.models import (
    Hole,
    Host,
    HostResult,
    Inventory,
    Proof,
    Query,
    QueueGroup,
    Row,
    Trace,
    TransportKind,
)
from collector.render.rows import (
    HostReport,
    render_rows_csv,
    render_rows_json,
    render_rows_ndjson,
    render_rows_table,
    render_summary_table,
    write_json,
)
from collector.render.safe import Escaped, printable
from collector.transport import open_session

if TYPE_CHECKING:
    from collector.search.host import HostSearch
    from collector.search.summary import HostSummary
    from collector.trace.follow import TraceRun
    from collector.trace.live import LiveTracer

__all__ = ["ExitCode", "app", "main"]

app = typer.Typer(
    no_args_is_help=True,
    help="Search and trace mail across a fleet of Postfix servers.",
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


def main() -> None:
    """Console entry point."""
    try:
        app()
    except BrokenPipeError:
        # `collector search ... | head`: stop quietly, and keep Python from complaining
        # about the closed stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(ExitCode.FOUND)


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    """Search and trace mail across a fleet of Postfix servers."""
    if version:
        typer.echo(f"collector {__version__}")
        raise typer.Exit(ExitCode.FOUND)
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(ExitCode.ERROR)


# --------------------------------------------------------------------------- plumbing


def _all_local(inv: Inventory, host: Sequence[str] | None, group: Sequence[str] | None) -> bool:
    """Whether every host a command reads (itself, or the log host it is read on) is a
    local directory: then its greps run on this machine's CPUs too."""
    names = {h.via or h.name for h in select_hosts(inv, host or [], group or [])}
    return all(h.transport is TransportKind.LOCAL for h in inv.hosts if h.name in names)


def _inventory(path: Path | None, offline: Path | None = None) -> Inventory:
    if offline is not None:
        from collector.inventory.offline import offline_inventory

        return offline_inventory(offline)
    found = find_inventory(str(path) if path else None, os.environ, Path.cwd())
    return load_inventory(found)


def _fetch_failures(offline: Path | None) -> list[HostResult[Any]]:
    """With --offline: the hosts the fetch could not copy (their lines are not in the case)."""
    if offline is None:
        return []
    from collector.inventory.offline import failed_at_fetch

    return [HostResult(e.host, error=e) for e in failed_at_fetch(offline)]


def _destination(dest: Path) -> None:
    """fetch --dest: a directory, created if need be; anything else is a usage error."""
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"{dest} exists and is not a directory", option="--dest")
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {dest}: {exc.strerror}", option="--dest") from None


def _search_reports(results: Sequence[HostResult[HostSearch]]) -> list[HostReport]:
    return [
        HostReport(r.host, error=r.error, via=r.error.via if r.error else None)
        if r.value is None
        else HostReport(r.host, sources=r.value.sources, notes=r.value.notes,
                        stats=r.value.log.stats, via=r.value.via, coverage=r.value.coverage)
        for r in results
    ]


def _summary_reports(results: Sequence[HostResult[HostSummary]]) -> list[HostReport]:
    return [
        HostReport(r.host, error=r.error, via=r.error.via if r.error else None)
        if r.value is None
        else HostReport(r.host, sources=r.value.search.sources, notes=r.value.search.notes,
                        stats=r.value.search.log.stats, summary=r.value.counts,
                        via=r.value.search.via, coverage=r.value.search.coverage)
        for r in results
    ]


def _verbose_report(reports: Sequence[HostReport]) -> None:
    """``-v``: each host's sources, notes, line counts and samples of lines not understood.

    Paths, notes and samples are a server's text: ``err`` shows them escaped; a sample is cut
    to 150 characters of what is shown (so a cut never opens an escape).
    """
    for h in reports:
        if h.error is not None:
            continue
        for s in h.sources:
            how = f"{s.origin}, {s.compression.value}" if s.compression.value else s.origin
            err(f"{h.name}: source {s.path} ({how})")
        for n in h.notes:
            err(f"{h.name}: {n}")
        if h.stats is not None:
            err(
                f"{h.name}: {h.stats.lines} lines read, {h.stats.parsed} parsed, "
                f"{h.stats.unknown} not understood, {h.stats.bad} bad"
            )
            for sample in h.stats.unknown_samples:
                shown = printable(f"{h.name}:   not understood: ") + printable(sample)[:150]
                err(Escaped(shown))


def _caught(debug: bool) -> dict[str, BaseException] | None:
    """Under --debug, keep each failed host's exception to show the command that failed."""
    return {} if debug else None


# --------------------------------------------------------------------------- commands


@app.command()
def search(
    from_: FromOpt = None,
    to: ToOpt = None,
    message_id: MsgIdOpt = None,
    queue_id: QidOpt = None,
    status: StatusOpt = None,
    client: ClientOpt = None,
    subject: SubjectOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    host: HostOpt = None,
    group: GroupOpt = None,
    inventory: InventoryOpt = None,
    offline: OfflineOpt = None,
    fmt: FormatOpt = Format.TABLE,
    workers: WorkersOpt = None,
    verbose: VerboseOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Find messages on every host: one row per (host, queue ID, recipient).

    Selectors combine with AND; a repeated selector is an OR of its values.
    Exit code 0: rows found, 1: none, 2: usage/config error or no host answered,
    3: partial (some hosts failed).
    """
    from collector.logs.commands import pass1_needles
    from collector.logs.select import merge_rows
    from collector.search.host import search_reader, with_rows

    with errors(debug):
        query = build_query(from_, to, message_id, queue_id, status, client, since, until,
                            subjects=subject)
        inv = _inventory(inventory, offline)
        term, now, caught = Terminal.detect(), datetime.now().astimezone(), _caught(debug)
        results = run_readings(
            inv,
            select_hosts(inv, host or [], group or []),
            lambda s, n, rd: [
                (r.host, with_rows(r, query))
                for r in search_reader(s, query, host_zone(s.host), now, on_bytes=n, reading=rd,
                                       drop_deliveries=True)
            ],
            everything=not host and not group,
            workers=workers,
            progress=term.progress and fmt is Format.TABLE,
            # CPU-bound: no fixed string (every line is parsed), or hosts whose greps run on
            # this machine too; remote hosts wait on the network, in threads.
            processes=pass1_needles(query) is None or _all_local(inv, host, group),
            exceptions=caught,
        ) + _fetch_failures(offline)
        rows = merge_rows([(r.host, r.value.rows or ()) for r in results if r.value is not None])
        reports = _search_reports(results)
        _render_rows(fmt, rows, reports, term, verdict(results, bool(rows)))
        if verbose:
            _verbose_report(reports)
        finish(results, bool(rows), caught)


def _render_rows(fmt: Format, rows: Sequence[Row], reports: Sequence[HostReport],
                 term: Terminal, verdict: Proof | None = None) -> None:
    out = sys.stdout
    if fmt is Format.JSON:
        render_rows_json(rows, reports, out, verdict.value if verdict is not None else None)
    elif fmt is Format.NDJSON:
        render_rows_ndjson(rows, out)
    elif fmt is Format.CSV:
        render_rows_csv(rows, out)
    else:
        render_rows_table(rows, out, width=term.width)
    out.flush()


@app.command()
def summary(
    since: SinceOpt = None,
    until: UntilOpt = None,
    host: HostOpt = None,
    group: GroupOpt = None,
    inventory: InventoryOpt = None,
    offline: OfflineOpt = None,
    fmt: FormatOpt = Format.TABLE,
    workers: WorkersOpt = None,
    verbose: VerboseOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Per-host counts: log sources, lines, messages, recipients by final status, rejects."""
    from collector.render.summary import (
        render_summary_csv,
        render_summary_json,
        render_summary_ndjson,
    )
    from collector.search.summary import summarize_reader

    with errors(debug):
        query = build_query(None, None, None, None, None, None, since, until)
        inv = _inventory(inventory, offline)
        term, now, caught = Terminal.detect(), datetime.now().astimezone(), _caught(debug)
        results = run_readings(
            inv,
            select_hosts(inv, host or [], group or []),
            lambda s, n, rd: summarize_reader(s, query, host_zone(s.host), now, on_bytes=n,
                                              reading=rd),
            everything=not host and not group,
            workers=workers,
            progress=term.progress and fmt is Format.TABLE,
            processes=True,
            exceptions=caught,
        ) + _fetch_failures(offline)
        reports = _summary_reports(results)
        render = {
            Format.TABLE: render_summary_table,
            Format.JSON: render_summary_json,
            Format.NDJSON: render_summary_ndjson,
            Format.CSV: render_summary_csv,
        }[fmt]
        render(reports, sys.stdout)
        sys.stdout.flush()
        if verbose:
            _verbose_report(reports)
        finish(results, True, caught)


@app.command()
def incidents(
    since: SinceOpt = "2h",
    until: UntilOpt = None,
    compare: Annotated[
        str | None,
        typer.Option("--compare", metavar="SPAN",
                     help="Also read the same window SPAN earlier (1d: this time yesterday) "
                          "and mark each incident new, grew, same or fell."),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option("--limit", metavar="N", min=0,
                     help="Only the N largest incidents (0: all). Default: 25 in a table, "
                          "all in JSON, NDJSON and CSV."),
    ] = None,
    host: HostOpt = None,
    group: GroupOpt = None,
    inventory: InventoryOpt = None,
    offline: OfflineOpt = None,
    fmt: FormatOpt = Format.TABLE,
    workers: WorkersOpt = None,
    verbose: VerboseOpt = False,
    debug: DebugOpt = False,
) -> None:
    """What is going wrong across the fleet: deferrals, bounces, expiries and refusals, grouped
    by direction, next hop or recipient domain, DSN code and reply template; a message seen on
    several hosts counts once.

    Exit code 0: incidents found, 1: none (and every host's logs cover the window),
    2: usage/config error or no host answered, 3: partial (some hosts or sources failed).
    """
    from collector.incidents.group import incidents as group_incidents
    from collector.render.incidents import (
        render_incidents_csv,
        render_incidents_json,
        render_incidents_ndjson,
        render_incidents_table,
    )
    from collector.search.incidents import HostIncidents, incidents_reader, problem_query

    with errors(debug):
        window = build_query(None, None, None, None, None, None, since, until)
        query = problem_query(window.since, window.until)
        term, now, caught = Terminal.detect(), datetime.now().astimezone(), _caught(debug)
        baseline = None
        if compare is not None:
            shift = timedelta(seconds=parse_span(compare, "--compare"))
            end = query.until if query.until is not None else now
            assert query.since is not None  # --since has a default
            if end - query.since > shift:
                raise UsageError(
                    f"the window ({end - query.since}) is longer than --compare {compare}: "
                    "the two windows would overlap", option="--compare")
            # [since, until) earlier: a line on the boundary belongs to the later window
            baseline = problem_query(query.since - shift, end - shift - timedelta(microseconds=1))
        inv = _inventory(inventory, offline)
        fleet = inv.hosts
        results = run_readings(
            inv,
            select_hosts(inv, host or [], group or []),
            lambda s, n, rd: incidents_reader(s, fleet, query, baseline, host_zone(s.host),
                                              now, on_bytes=n, reading=rd),
            everything=not host and not group,
            workers=workers,
            progress=term.progress and fmt is Format.TABLE,
            processes=_all_local(inv, host, group),
            exceptions=caught,
        ) + _fetch_failures(offline)
        answered: list[HostIncidents] = [r.value for r in results if r.value is not None]
        found = group_incidents(
            [r.host for r in results],
            (p for a in answered for p in a.problems),
            None if baseline is None else (p for a in answered for p in a.baseline or ()),
            answered=[r.host for r in results if r.value is not None],
            baseline_partial=[r.host for r in results
                              if r.value is None or not r.value.baseline_complete],
        )
        reports = _search_reports([
            dataclasses.replace(r, value=r.value.search if r.value is not None else None)
            for r in results
        ])
        every = found
        proof = verdict(results, bool(found))
        if limit and fmt is not Format.TABLE:
            found = found[:limit]
        if fmt is Format.JSON:
            render_incidents_json(
                found, reports, sys.stdout, window=(query.since, query.until),
                compared=None if baseline is None else (baseline.since, baseline.until),
                verdict=proof.value)
        elif fmt is Format.NDJSON:
            render_incidents_ndjson(found, sys.stdout)
        elif fmt is Format.CSV:
            render_incidents_csv(found, sys.stdout)
        else:
            render_incidents_table(
                found, sys.stdout, width=term.width, compared=baseline is not None,
                proven=proof is not Proof.INCONCLUSIVE,
                limit=TABLE_INCIDENTS if limit is None else limit)
        sys.stdout.flush()
        if verbose:
            _verbose_report(reports)
        for a in answered:
            for unread in a.baseline_unread:
                err(f"{a.search.host}: compared window: read: {unread}")
            cov = a.baseline_coverage
            for hole in cov.uncovered if cov is not None else ():
                if hole.why is not Hole.UNREAD:
                    err(f"{a.search.host}: compared window: coverage: {hole}")
        if any(a.baseline_unread for a in answered):
            # the marks may be wrong: partial, though the window's answer stands
            report_problems(results, caught)
            raise typer.Exit(ExitCode.PARTIAL)
        finish(results, bool(every), caught)


#: Incidents a table shows unless ``--limit`` says otherwise (the largest first).
TABLE_INCIDENTS = 25


@app.command()
def hosts(
    inventory: InventoryOpt = None,
    host: HostOpt = None,
    group: GroupOpt = None,
    check: Annotated[
        bool, typer.Option("--check", help="Connect to each host and report what it offers.")
    ] = False,
    sudoers: Annotated[
        bool,
        typer.Option(
            "--sudoers",
            help="Connect to each host and print the sudoers lines its login user needs to "
            "read the logs it cannot read itself (for sudo = true).",
        ),
    ] = False,
    fmt: FormatOpt = Format.TABLE,
    workers: WorkersOpt = None,
    debug: DebugOpt = False,
) -> None:
    """List the inventory's hosts; with --check, connect and discover each one."""
    from collector.render.hosts import list_rows

    with errors(debug):
        if check and sudoers:
            raise UsageError("give --check or --sudoers, not both")
        if sudoers and fmt not in (Format.TABLE, Format.JSON, Format.NDJSON):
            raise UsageError("--sudoers prints text (the default), json or ndjson",
                             option="--format")
        inv = _inventory(inventory)
        selected = select_hosts(inv, host or [], group or [])
        if sudoers:
            _print_sudoers(inv, selected, fmt, workers, debug)
        if not check:
            _render_hosts(fmt, *list_rows(selected))
            raise typer.Exit(ExitCode.FOUND)
        from collector.inventory.origins import plan_readings
        from collector.search.hostcheck import carried_rows, check_host, check_rows

        caught = _caught(debug)
        readings = {r.host.name: r for r in plan_readings(inv.hosts, selected, everything=True)}
        results = run_fleet(
            inv,
            [r.host for r in readings.values()],
            lambda s, _n: check_host(s, readings[s.host.name]),
            workers=workers,
            progress=Terminal.detect().progress and fmt is Format.TABLE,
            exceptions=caught,
        )
        headers, rows, payload = check_rows(results)
        more_rows, more = carried_rows(results, [h for h in selected if h.via is not None])
        _render_hosts(fmt, headers, rows + more_rows, payload + more)
        for r in results:
            if r.value is not None and r.value.clock_note:
                err(f"{r.host}: clock: {r.value.clock_note}")
        finish(results, True, caught)


def _print_sudoers(
    inv: Inventory, selected: Sequence[Host], fmt: Format, workers: int | None, debug: bool
) -> None:
    from collector.render.summary import write_ndjson
    from collector.search.sudoers import sudoers_for_host, sudoers_payload, sudoers_text

    caught = _caught(debug)
    results = run_fleet(inv, selected, lambda s, _n: sudoers_for_host(s), workers=workers,
                        progress=False, exceptions=caught)
    if fmt is Format.JSON:
        write_json({"hosts": sudoers_payload(results)}, sys.stdout)
    elif fmt is Format.NDJSON:
        write_ndjson(sudoers_payload(results), sys.stdout)
    else:
        lines = sudoers_text(results)
        sys.stdout.write("".join(line + "\n" for line in lines))
    sys.stdout.flush()
    finish(results, True, caught)


def _render_hosts(
    fmt: Format, headers: Sequence[str], rows: Sequence[Sequence[Any]],
    payload: Sequence[dict[str, Any]],
) -> None:
    from collector.render.rows import render_hosts_table
    from collector.render.summary import render_hosts_csv, write_ndjson

    if fmt is Format.JSON:
        write_json({"hosts": list(payload)}, sys.stdout)
    elif fmt is Format.NDJSON:
        write_ndjson(payload, sys.stdout)
    elif fmt is Format.CSV:
        render_hosts_csv(payload, sys.stdout)
    else:
        render_hosts_table(rows, headers, sys.stdout)
    sys.stdout.flush()


@app.command()
def fetch(
    dest: Annotated[
        Path, typer.Option("--dest", metavar="DIR", help="Directory to write DEST/<host>/... into.")
    ],
    all_: Annotated[
        bool, typer.Option("--all", help="Copy whole log files instead of matching slices.")
    ] = False,
    from_: FromOpt = None,
    to: ToOpt = None,
    message_id: MsgIdOpt = None,
    queue_id: QidOpt = None,
    status: StatusOpt = None,
    client: ClientOpt = None,
    subject: SubjectOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    host: HostOpt = None,
    group: GroupOpt = None,
    inventory: InventoryOpt = None,
    workers: WorkersOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Copy the matching lines (or whole logs with --all) of each host under DEST for offline work.

    Re-examine the copy with `collector search --offline DEST ...`.
    """
    from collector.search.fetch import fetch_host, write_fleet_manifest

    with errors(debug):
        query = build_query(from_, to, message_id, queue_id, status, client, since, until,
                            subjects=subject)
        if not all_ and query.empty and query.since is None and query.until is None:
            raise UsageError("give a selector (--to, --from, ...), a time window, or --all")
        inv = _inventory(inventory)
        _destination(dest)
        now, caught = datetime.now().astimezone(), _caught(debug)
        # a host read on a log host is fetched there: the case holds what the log host holds
        readers = {h.via or h.name for h in select_hosts(inv, host or [], group or [])}
        results = run_fleet(
            inv,
            [h for h in inv.hosts if h.name in readers],
            lambda s, n: fetch_host(s, query, dest, host_zone(s.host), now, whole=all_, on_bytes=n),
            workers=workers,
            progress=Terminal.detect().progress,
            exceptions=caught,
        )
        write_fleet_manifest(dest, inv, results, now)
        for r in results:
            if r.value is not None:
                typer.echo(
                    f"{r.host}: {len(r.value.files)} files, {r.value.lines} lines, "
                    f"{r.value.bytes} bytes -> {dest / r.host}"
                )
        finish(results, any(r.value and r.value.lines for r in results), caught)


class TraceFormat(enum.StrEnum):
    TEXT = "text"
    TABLE = "table"
    JSON = "json"
    NDJSON = "ndjson"
    CSV = "csv"
    DOT = "dot"
    MERMAID = "mermaid"
    HTML = "html"


def _trace_query(
    text: str | None, selectors: Query, inv: Inventory
) -> tuple[Query, str | None]:
    """The query of a trace: the selectors, and the positional QUERY as its search term.

    QUERY is a message-id, HOST:QUEUEID, a bare queue ID, or an address; HOST:QUEUEID also
    names the host to start on.
    """
    if text is None:
        return selectors, None
    value = text.strip()
    if not value or "\n" in value:
        raise UsageError("empty or multi-line QUERY")
    host, sep, rest = value.partition(":")
    if sep and host in {h.name for h in inv.hosts} and rest:
        return dataclasses.replace(selectors, terms=(rest,)), host
    return dataclasses.replace(selectors, terms=(value,)), None


def _trace_start(
    text: str | None,
    message: Path | None,
    selectors: Query,
    inv: Inventory,
    skew: timedelta,
    verbose: bool,
) -> tuple[Query, str | None]:
    """What trace looks for, and the host to start on: QUERY, or --from-message's clues."""
    if message is not None:
        if text is not None:
            raise UsageError("give a QUERY or --from-message, not both")
        query, host, said = _message_start(message, selectors, inv, skew)
        if verbose:
            err(said)
        return query, host
    query, only = _trace_query(text, selectors, inv)
    if query.empty and query.since is None:
        raise UsageError("give a QUERY or a selector (--to, --from, --message-id, ...)")
    return query, only


def _message_start(
    path: Path, selectors: Query, inv: Inventory, skew: timedelta
) -> tuple[Query, str, str]:
    """trace --from-message: the query and the host to start on, and what said so.

    The oldest hop the message names on a host of the inventory is where it entered the
    fleet; the trace follows it from there.
    """
    from collector.trace.correlate import build_host_index
    from collector.trace.message import MAX_BYTES, read_message

    try:
        if str(path) == "-":
            data = sys.stdin.buffer.read(MAX_BYTES)
        else:
            with open(path, "rb") as f:
                data = f.read(MAX_BYTES)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}", option="--from-message") from None
    clues = read_message(data)
    index = build_host_index(list(inv.hosts))
    for clue in clues.clues:
        host = index.resolve(clue.host) or index.resolve(clue.host.split(".", 1)[0])
        if host is None:
            continue
        since = selectors.since
        if since is None and clue.time is not None:
            since = clue.time - skew
        query = dataclasses.replace(selectors, terms=(clue.queue_id,), since=since)
        said = f"{clue.source} header" if clue.source == "received" else "delivery report"
        return query, host, f"starting at {host} {clue.queue_id} (from the message's {said})"
    named = ", ".join(sorted({c.host for c in clues.clues})) or "none"
    raise UsageError(
        f"{path} names no Postfix host of the inventory (hosts it names: {named})",
        option="--from-message",
    )


@app.command()
def trace(
    query_text: Annotated[
        str | None,
        typer.Argument(
            metavar="[QUERY]",
            help="A message-id, a queue ID (HOST:QUEUEID or bare) or an address.",
            show_default=False,
        ),
    ] = None,
    from_: FromOpt = None,
    to: ToOpt = None,
    message_id: MsgIdOpt = None,
    queue_id: QidOpt = None,
    status: StatusOpt = None,
    client: ClientOpt = None,
    subject: SubjectOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    host: HostOpt = None,
    group: GroupOpt = None,
    inventory: InventoryOpt = None,
    offline: OfflineOpt = None,
    fmt: Annotated[
        TraceFormat | None,
        typer.Option("--format", "-f", help="text (default on a terminal and in pipes), table, "
                     "json, ndjson, csv, dot, mermaid, html (one self-contained page).",
                     show_default=False),
    ] = None,
    max_skew: Annotated[
        float, typer.Option("--max-skew", help="Clock skew tolerated between hosts, seconds.")
    ] = 300.0,
    depth: Annotated[int, typer.Option("--depth", help="Most hops followed.", min=1)] = 12,
    from_message: Annotated[
        Path | None,
        typer.Option("--from-message", metavar="FILE|-", show_default=False,
                     help="Start where this message (a forwarded mail or a bounce) says it was: "
                     "its Postfix Received headers or its delivery report."),
    ] = None,
    workers: WorkersOpt = None,
    verbose: VerboseOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Follow messages across the fleet: every hop, and the fate of every recipient."""
    from collector.trace.follow import trace_fleet

    with errors(debug):
        inv = _inventory(inventory, offline)
        selectors = build_query(from_, to, message_id, queue_id, status, client, since, until,
                            subjects=subject)
        query, only_host = _trace_start(query_text, from_message, selectors, inv,
                                        timedelta(seconds=max_skew), verbose)
        start = select_hosts(inv, (host or []) + ([only_host] if only_host else []), group or [])
        run = trace_fleet(
            inv.hosts,
            start,
            query,
            open_session=lambda h: open_session(h, inv.settings, passphrase_provider=passphrase),
            zone_of=host_zone,
            now=datetime.now().astimezone(),
            max_skew=timedelta(seconds=max_skew),
            depth=depth,
            workers=workers or inv.settings.workers,
        )
        _render_traces(fmt or TraceFormat.TEXT, run, Terminal.detect(), query)
        for note in run.notes:
            err(note)
        _skew_notes(run.traces)
        if verbose:
            err(f"{run.rounds} rounds, {run.round_trips} commands over SSH/local sessions")
        finish([*run.results, *_fetch_failures(offline)], bool(run.traces))


def _skew_notes(traces: Sequence[Trace]) -> None:
    """One stderr line per pair of hosts whose clocks the hand-offs show apart."""
    from collector.trace.skew import NOTABLE, clock_skews

    for skew in clock_skews(traces):
        if abs(skew.seconds) >= NOTABLE:
            err(f"clocks: {skew}")


def _trace_reports(run: TraceRun) -> list[HostReport]:
    return [
        HostReport(r.host, error=r.error, stats=r.value.log.stats if r.value else None,
                   via=r.value.via if r.value else r.error.via if r.error else None,
                   coverage=r.value.coverage if r.value else None)
        for r in run.results
    ]


def _render_traces(fmt: TraceFormat, run: TraceRun, term: Terminal, query: Query) -> None:
    from collector.render import trace as render

    out = sys.stdout
    traces = run.traces
    if fmt is TraceFormat.JSON:
        render.render_traces_json(traces, _trace_reports(run), out,
                                  verdict(run.results, bool(traces)).value)
    elif fmt is TraceFormat.HTML:
        from collector.render.html import describe_query, render_traces_html

        render_traces_html(traces, _trace_reports(run), out, query=describe_query(query),
                           verdict=verdict(run.results, bool(traces)).value,
                           generated=datetime.now().astimezone(), version=__version__)
    elif fmt is TraceFormat.NDJSON:
        render.render_traces_ndjson(traces, out)
    elif fmt is TraceFormat.CSV:
        render.render_traces_csv(traces, out)
    elif fmt is TraceFormat.TABLE:
        render.render_traces_table(traces, out, width=term.width)
    elif fmt is TraceFormat.DOT:
        render.render_traces_dot(traces, out)
    elif fmt is TraceFormat.MERMAID:
        render.render_traces_mermaid(traces, out)
    else:
        render.render_traces_text(traces, out, width=term.width, color=term.color)
    out.flush()


class LiveFormat(enum.StrEnum):
    TEXT = "text"
    NDJSON = "ndjson"


MaxSkewOpt = Annotated[
    float, typer.Option("--max-skew", help="Clock skew tolerated between hosts, seconds.")
]
MaxOpenOpt = Annotated[
    str, typer.Option("--max-open", metavar="SPAN", help="A message still open after this much "
                      "log time is shown as queued and forgotten: seconds, 90s, 10m, 2h, 1d.")
]


def _live_tracer(inv: Inventory, max_open: str, max_skew: float,
                 show: Callable[[Trace], bool] | None = None, early: bool = False) -> LiveTracer:
    from collector.trace.live import LiveSettings, LiveTracer

    settings = LiveSettings(max_open=timedelta(seconds=parse_span(max_open, "--max-open")),
                            max_skew=timedelta(seconds=max_skew), early=early)
    if show is None:
        return LiveTracer(inv.hosts, settings=settings)
    return LiveTracer(inv.hosts, show=show, settings=settings)


def _opener(inv: Inventory) -> Callable[[Host], Any]:
    return lambda h: open_session(h, inv.settings, passphrase_provider=passphrase)


@app.command()
def follow(
    from_: FromOpt = None,
    to: ToOpt = None,
    message_id: MsgIdOpt = None,
    queue_id: QidOpt = None,
    status: StatusOpt = None,
    client: ClientOpt = None,
    subject: SubjectOpt = None,
    host: HostOpt = None,
    group: GroupOpt = None,
    inventory: InventoryOpt = None,
    fmt: Annotated[
        LiveFormat, typer.Option("--format", "-f", help="text (one line per recipient) or "
                                 "ndjson (one trace object per message).")
    ] = LiveFormat.TEXT,
    max_open: MaxOpenOpt = "24h",
    max_skew: MaxSkewOpt = 300.0,
    debug: DebugOpt = False,
) -> None:
    """Stream every host's new log lines and print each recipient's fate as it is known."""
    import threading

    from collector.render.trace import render_live_ndjson, render_live_rows
    from collector.trace.follow import trace_matches
    from collector.trace.live import Fates
    from collector.trace.stream import follow_fleet

    with errors(debug):
        inv = _inventory(inventory)
        query = build_query(from_, to, message_id, queue_id, status, client, None, None,
                            subjects=subject)
        selected = select_hosts(inv, host or [], group or [])
        predicate = trace_matches(query)

        def matches(trace: Trace) -> bool:
            return query.empty or any(predicate(g) for g in _trace_groups(trace))

        # text: each recipient's line as soon as its fate is final; ndjson: whole messages
        text = fmt is LiveFormat.TEXT
        tracer = _live_tracer(inv, max_open, max_skew, show=matches, early=text)

        def show(trace: Trace) -> bool:
            render_live_ndjson(trace, sys.stdout)
            sys.stdout.flush()
            return False

        def show_fates(fates: Fates) -> bool:
            render_live_rows(fates.trace, fates.rows, fates.complete, sys.stdout)
            sys.stdout.flush()
            return False

        try:
            follow_fleet(inv.hosts, selected, tracer, open_session=_opener(inv),
                         zone_of=host_zone, on_trace=show, on_problem=err,
                         stop=threading.Event(), everything=not host and not group,
                         on_fates=show_fates if text else None)
        except KeyboardInterrupt:
            pass  # Ctrl-C is how a follow ends
    raise typer.Exit(ExitCode.FOUND)


def _trace_groups(trace: Trace) -> Iterator[QueueGroup]:
    for hop in trace.hops:
        yield hop.group
    for child in trace.notifications:
        yield from _trace_groups(child)


#: ``wait``'s exit code when its ``--timeout`` ran out (as ``timeout(1)``).
EXIT_TIMEOUT = 124


@app.command()
def wait(
    query_text: Annotated[
        str,
        typer.Argument(metavar="QUERY", help="A message-id, a queue ID (HOST:QUEUEID or bare) "
                       "or an address.", show_default=False),
    ],
    from_: FromOpt = None,
    to: ToOpt = None,
    since: SinceOpt = None,
    host: HostOpt = None,
    group: GroupOpt = None,
    inventory: InventoryOpt = None,
    timeout: Annotated[
        str, typer.Option("--timeout", metavar="SPAN", help="Give up after: seconds, 90s, 10m, "
                          "2h (exit 124).")
    ] = "10m",
    fmt: Annotated[
        TraceFormat | None,
        typer.Option("--format", "-f", help="How the trace is printed at the end: text, table, "
                     "json, ndjson, csv, dot, mermaid, html.", show_default=False),
    ] = None,
    max_open: MaxOpenOpt = "24h",
    max_skew: MaxSkewOpt = 300.0,
    debug: DebugOpt = False,
) -> None:
    """Wait until every recipient of a message has a final outcome (exit 0: all delivered
    or relayed out; 1: any bounced, rejected, expired or discarded; 124: timed out)."""
    import threading

    from collector.trace.follow import TraceRun
    from collector.trace.stream import wait_fleet

    with errors(debug):
        inv = _inventory(inventory)
        selectors = build_query(from_, to, None, None, None, None, since, None)
        seconds = parse_span(timeout, "--timeout")
        query, only_host = _trace_query(query_text, selectors, inv)
        selected = select_hosts(inv, (host or []) + ([only_host] if only_host else []),
                                group or [])
        tracer = _live_tracer(inv, max_open, max_skew)
        stop = threading.Event()
        try:
            result = wait_fleet(inv.hosts, selected, query, tracer, open_session=_opener(inv),
                                zone_of=host_zone, on_problem=err, stop=stop,
                                everything=not host and not group and not only_host,
                                timeout=seconds)
        except KeyboardInterrupt:
            err("interrupted")
            raise typer.Exit(130) from None
        past = result.past
        run = TraceRun(result.traces, past.results if past else (), past.rounds if past else 0,
                       past.round_trips if past else 0, past.notes if past else ())
        _render_traces(fmt or TraceFormat.TEXT, run, Terminal.detect(), query)
        if not result.done:
            if result.traces:
                err(f"timed out after {timeout}: not every recipient has a final outcome yet")
            else:
                err(f"timed out after {timeout}: no matching message seen")
            down = {e.host for e in result.down}  # said while following
            unseen = sorted(down | {r.host for r in run.results
                                    if not r.ok or unread_of(r.value)})
            if unseen:
                # Not a plain timeout: what these hosts logged meanwhile was not seen.
                report_problems([r for r in run.results if r.host not in down])
                err(f"partial: {', '.join(unseen)} could not be read while waiting")
                raise typer.Exit(ExitCode.PARTIAL)
            raise typer.Exit(EXIT_TIMEOUT)
        report_problems(run.results)
    raise typer.Exit(ExitCode.NO_MATCH if result.failed else ExitCode.FOUND)


@app.command()
def demo() -> None:
    """Run collector on the built-in sample fleet: real logs of a 4-host Postfix relay chain.

    Shows a search, a per-host summary and a multi-hop trace, each with the command that
    produced it (add -i collector/demo/inventory.toml to run them yourself).
    """
    import json
    from importlib.resources import files

    base = files("collector") / "demo"
    inventory = Path(str(base / "inventory.toml"))
    facts = json.loads((base / "demo.json").read_text(encoding="utf-8"))
    typer.echo(
        "collector demo: the built-in sample fleet, real logs of a Postfix "
        f"{facts['postfix_version']} relay chain\n(mx1 -> filter1 with content-filter "
        "reinjection -> mbox1 / out1; four log formats).\n"
    )
    steps: list[tuple[str, Callable[[], None]]] = [
        (
            f"collector search --to {facts['search_to']}",
            lambda: search(to=[facts["search_to"]], inventory=inventory),
        ),
        ("collector summary", lambda: summary(inventory=inventory)),
        (
            f"collector trace '{facts['trace']}'",
            lambda: trace(query_text=facts["trace"], inventory=inventory),
        ),
    ]
    worst = ExitCode.FOUND
    for title, step in steps:
        typer.echo(f"$ {title}")
        sys.stdout.flush()
        try:
            step()
        except typer.Exit as done:
            code = done.exit_code
            if code not in (ExitCode.FOUND, ExitCode.NO_MATCH):
                worst = ExitCode(code) if code in {int(c) for c in ExitCode} else ExitCode.ERROR
        typer.echo("")
    raise typer.Exit(worst)

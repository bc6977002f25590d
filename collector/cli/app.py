"""The command line: options in, pipeline called, output rendered, exit code chosen.

stdout carries data; stderr carries diagnostics (one line per failed host). Colour and
progress only on a terminal. No regexes, SSH or formatting here: those live in their stages.
"""

from __future__ import annotations

import enum
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

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
    ToOpt,
    UntilOpt,
    VerboseOpt,
    WorkersOpt,
    build_query,
)
from collector.errors import CollectorError, UsageError
from collector.inventory.load import find_inventory, host_zone, load_inventory, select_hosts
from collector.logs.commands import pass1_needles
from collector.logs.select import select_rows
from collector.models import Host, HostResult, Inventory, Query
from collector.render.rows import (
    HostReport,
    host_dict,
    render_rows_csv,
    render_rows_json,
    render_rows_ndjson,
    render_rows_table,
    render_summary_table,
    write_json,
)
from collector.search.fleet import run_on_hosts
from collector.search.host import ByteCounter, HostSearch, search_host
from collector.search.summary import summarize_host
from collector.transport import open_session
from collector.transport.base import Session

T = TypeVar("T")


class ExitCode(enum.IntEnum):
    """The process exit codes (a contract: scripts rely on them)."""

    FOUND = 0
    NO_MATCH = 1
    ERROR = 2  # usage or configuration error, or no host answered
    PARTIAL = 3  # some hosts failed; the others' results were printed


app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
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


def _err(message: str) -> None:
    typer.echo(f"collector: {message}", err=True)


@contextmanager
def _errors(debug: bool) -> Iterator[None]:
    """Turn errors into one line on stderr and exit code 2 (tracebacks only with --debug)."""
    try:
        yield
    except typer.Exit:
        raise
    except CollectorError as exc:
        if debug:
            raise
        _err(str(exc))
        raise typer.Exit(ExitCode.ERROR) from None
    except KeyboardInterrupt:
        _err("interrupted")
        raise typer.Exit(130) from None


def _inventory(path: Path | None, offline: Path | None = None) -> Inventory:
    if offline is not None:
        from collector.inventory.offline import offline_inventory

        return offline_inventory(offline)
    found = find_inventory(str(path) if path else None, os.environ, Path.cwd())
    return load_inventory(found)


def _passphrase(path: str) -> str | None:
    if not sys.stdin.isatty():
        return None
    import getpass

    try:
        return getpass.getpass(f"Passphrase for {path}: ")
    except (EOFError, KeyboardInterrupt):
        return None


def _run_fleet(
    inventory: Inventory,
    hosts: Sequence[Host],
    task: Callable[[Session, ByteCounter | None], T],
    *,
    workers: int | None,
    show_progress: bool,
    processes: bool = False,
) -> list[HostResult[T]]:
    """Open each host's session, run ``task`` on it, close it; one result per host, in order.

    ``task`` gets the session and a callback for the bytes it receives (for the progress
    display; None when there is none). ``processes``: the task parses whole logs
    (CPU-bound): run hosts in worker processes.
    """
    settings = inventory.settings

    def runner(count: ByteCounter | None) -> Callable[[Host], T]:
        def per_host(host: Host) -> T:
            session = open_session(host, settings, passphrase_provider=_passphrase)
            try:
                return task(session, count)
            finally:
                session.close()

        return per_host

    if not show_progress:
        return run_on_hosts(
            hosts, runner(None), workers=workers or settings.workers, processes=processes
        )
    import threading

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("hosts  {task.fields[received]}"),
        console=_stderr_console(),
        transient=True,
    ) as progress:
        bar = progress.add_task("querying", total=len(hosts), received="")
        lock = threading.Lock()
        total = [0]

        def count(n: int) -> None:
            with lock:
                total[0] += n
                shown = _human_bytes(total[0])
            progress.update(bar, received=f"{shown} received")

        # Worker processes cannot report their bytes to this display; threads can.
        return run_on_hosts(
            hosts,
            runner(None if processes else count),
            workers=workers or settings.workers,
            on_done=lambda _r: progress.advance(bar),
            processes=processes,
        )


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _is_tty() -> bool:
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"


def _report_failures(results: Sequence[HostResult[Any]]) -> None:
    for r in results:
        if r.error is not None:
            _err(f"{r.error.host}: {r.error.stage}: {r.error.message}")


def _exit_code(
    results: Sequence[HostResult[Any]], found: bool, *, incomplete: bool = False
) -> ExitCode:
    """``incomplete``: some host answered but could not read all of its logs."""
    failed = sum(1 for r in results if not r.ok)
    if results and failed == len(results):
        return ExitCode.ERROR
    if failed or incomplete:
        return ExitCode.PARTIAL
    return ExitCode.FOUND if found else ExitCode.NO_MATCH


#: Discovery/read notes that mean lines were not read: reported like failures (exit 3).
_LOSSY_NOTES = ("cannot read ", " is damaged: ")


def _report_lossy(reports: Sequence[HostReport]) -> bool:
    """One stderr line per log a host could not read; True if there was any."""
    lossy = False
    for h in reports:
        for note in h.notes:
            if any(mark in note for mark in _LOSSY_NOTES):
                _err(f"{h.name}: read: {note}")
                lossy = True
    return lossy


def _reports(results: Sequence[HostResult[HostSearch]]) -> list[HostReport]:
    reports: list[HostReport] = []
    for r in results:
        if r.value is None:
            reports.append(HostReport(r.host, error=r.error))
        else:
            v = r.value
            reports.append(
                HostReport(
                    r.host,
                    sources=v.sources,
                    notes=v.notes,
                    stats=v.log.stats,
                )
            )
    return reports


def _verbose_report(reports: Sequence[HostReport]) -> None:
    for h in reports:
        if h.error is not None:
            continue
        for s in h.sources:
            _err(f"{h.name}: source {s.path} ({s.origin}{', ' + s.compression.value if s.compression.value else ''})")
        for n in h.notes:
            _err(f"{h.name}: {n}")
        if h.stats is not None:
            _err(
                f"{h.name}: {h.stats.lines} lines read, {h.stats.parsed} parsed, "
                f"{h.stats.unknown} not understood, {h.stats.bad} bad"
            )
            for sample in h.stats.unknown_samples:
                _err(f"{h.name}:   not understood: {sample[:150]}")


def _width() -> int:
    try:
        return max(60, int(os.environ.get("COLUMNS", "")))
    except ValueError:
        pass
    if sys.stdout.isatty():
        return max(60, os.get_terminal_size().columns)
    return 100


# --------------------------------------------------------------------------- commands


@app.command()
def search(
    from_: FromOpt = None,
    to: ToOpt = None,
    message_id: MsgIdOpt = None,
    queue_id: QidOpt = None,
    status: StatusOpt = None,
    client: ClientOpt = None,
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
    with _errors(debug):
        query = build_query(from_, to, message_id, queue_id, status, client, since, until)
        inv = _inventory(inventory, offline)
        hosts = select_hosts(inv, host or [], group or [])
        now = datetime.now().astimezone()
        results = _run_fleet(
            inv,
            hosts,
            lambda s, n: search_host(s, query, host_zone(s.host), now, on_bytes=n),
            workers=workers,
            show_progress=_is_tty() and fmt is Format.TABLE,
            processes=pass1_needles(query) is None,  # no fixed string: every line is parsed
        )
        logs = [r.value.log for r in results if r.value is not None]
        rows = select_rows(logs, query)
        reports = _reports(results)
        out = sys.stdout
        if fmt is Format.JSON:
            render_rows_json(rows, reports, out)
        elif fmt is Format.NDJSON:
            render_rows_ndjson(rows, out)
        elif fmt is Format.CSV:
            render_rows_csv(rows, out)
        else:
            render_rows_table(rows, out, width=_width())
        out.flush()
        if verbose:
            _verbose_report(reports)
        _report_failures(results)
        lossy = _report_lossy(reports)
        raise typer.Exit(_exit_code(results, bool(rows), incomplete=lossy))


@app.command()
def summary(
    since: SinceOpt = None,
    until: UntilOpt = None,
    host: HostOpt = None,
    group: GroupOpt = None,
    inventory: InventoryOpt = None,
    offline: OfflineOpt = None,
    fmt: Annotated[
        Format, typer.Option("--format", "-f", help="table or json.")
    ] = Format.TABLE,
    workers: WorkersOpt = None,
    verbose: VerboseOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Per-host counts: log sources, lines, messages, recipients by final status, rejects."""
    with _errors(debug):
        query = build_query(None, None, None, None, None, None, since, until)
        inv = _inventory(inventory, offline)
        hosts = select_hosts(inv, host or [], group or [])
        now = datetime.now().astimezone()
        results = _run_fleet(
            inv,
            hosts,
            lambda s, n: summarize_host(s, query, host_zone(s.host), now, on_bytes=n),
            workers=workers,
            show_progress=_is_tty() and fmt is Format.TABLE,
            processes=True,
        )
        reports = [
            HostReport(r.host, error=r.error)
            if r.value is None
            else HostReport(
                r.host,
                sources=r.value.search.sources,
                notes=r.value.search.notes,
                stats=r.value.search.log.stats,
                summary=r.value.counts,
            )
            for r in results
        ]
        if fmt is Format.TABLE:
            render_summary_table(reports, sys.stdout)
        else:
            payload = {"hosts": [dict(host_dict(h), summary=dict(h.summary)) for h in reports]}
            write_json(payload, sys.stdout)
        if verbose:
            _verbose_report(reports)
        _report_failures(results)
        lossy = _report_lossy(reports)
        raise typer.Exit(_exit_code(results, True, incomplete=lossy))


@app.command()
def hosts(
    inventory: InventoryOpt = None,
    host: HostOpt = None,
    group: GroupOpt = None,
    check: Annotated[
        bool, typer.Option("--check", help="Connect to each host and report what it offers.")
    ] = False,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="table or json.")] = Format.TABLE,
    workers: WorkersOpt = None,
    debug: DebugOpt = False,
) -> None:
    """List the inventory's hosts; with --check, connect and discover each one."""
    from collector.search.hostcheck import check_host, check_rows, list_rows

    with _errors(debug):
        inv = _inventory(inventory)
        selected = select_hosts(inv, host or [], group or [])
        if not check:
            headers, rows, payload = list_rows(selected)
            if fmt is Format.JSON:
                write_json({"hosts": payload}, sys.stdout)
            else:
                from collector.render.rows import render_hosts_table

                render_hosts_table(rows, headers, sys.stdout)
            raise typer.Exit(ExitCode.FOUND)
        results = _run_fleet(
            inv,
            selected,
            lambda s, _n: check_host(s),
            workers=workers,
            show_progress=_is_tty() and fmt is Format.TABLE,
        )
        headers, rows, payload = check_rows(results)
        if fmt is Format.JSON:
            write_json({"hosts": payload}, sys.stdout)
        else:
            from collector.render.rows import render_hosts_table

            render_hosts_table(rows, headers, sys.stdout)
        _report_failures(results)
        raise typer.Exit(_exit_code(results, True))


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

    with _errors(debug):
        query = build_query(from_, to, message_id, queue_id, status, client, since, until)
        if not all_ and query.empty and query.since is None and query.until is None:
            raise UsageError("give a selector (--to, --from, ...), a time window, or --all")
        inv = _inventory(inventory)
        selected = select_hosts(inv, host or [], group or [])
        now = datetime.now().astimezone()
        results = _run_fleet(
            inv,
            selected,
            lambda s, n: fetch_host(s, query, dest, host_zone(s.host), now, whole=all_, on_bytes=n),
            workers=workers,
            show_progress=_is_tty(),
        )
        write_fleet_manifest(dest, inv, results, now)
        for r in results:
            if r.value is not None:
                typer.echo(
                    f"{r.host}: {len(r.value.files)} files, {r.value.lines} lines, "
                    f"{r.value.bytes} bytes -> {dest / r.host}"
                )
        _report_failures(results)
        raise typer.Exit(_exit_code(results, any(r.value and r.value.lines for r in results)))


class TraceFormat(enum.StrEnum):
    TEXT = "text"
    TABLE = "table"
    JSON = "json"
    NDJSON = "ndjson"
    CSV = "csv"
    DOT = "dot"
    MERMAID = "mermaid"


def _tracebuild_query(text: str | None, inv: Inventory) -> tuple[Query, str | None]:
    """The positional QUERY: a message-id, HOST:QUEUEID, a bare queue ID, or an address."""
    if text is None:
        return Query(), None
    value = text.strip()
    if not value or "\n" in value:
        raise UsageError("empty or multi-line QUERY")
    host, sep, rest = value.partition(":")
    if sep and host in {h.name for h in inv.hosts} and rest:
        return Query(terms=(rest,)), host
    return Query(terms=(value,)), None


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
    since: SinceOpt = None,
    until: UntilOpt = None,
    host: HostOpt = None,
    group: GroupOpt = None,
    inventory: InventoryOpt = None,
    offline: OfflineOpt = None,
    fmt: Annotated[
        TraceFormat | None,
        typer.Option("--format", "-f", help="text (default on a terminal and in pipes), table, "
                     "json, ndjson, csv, dot, mermaid.", show_default=False),
    ] = None,
    max_skew: Annotated[
        float, typer.Option("--max-skew", help="Clock skew tolerated between hosts, seconds.")
    ] = 300.0,
    depth: Annotated[int, typer.Option("--depth", help="Most hops followed.", min=1)] = 12,
    workers: WorkersOpt = None,
    verbose: VerboseOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Follow messages across the fleet: every hop, and the fate of every recipient."""
    from collector.render.trace import (
        render_traces_csv,
        render_traces_dot,
        render_traces_json,
        render_traces_mermaid,
        render_traces_ndjson,
        render_traces_table,
        render_traces_text,
    )
    from collector.trace.follow import trace_fleet

    with _errors(debug):
        inv = _inventory(inventory, offline)
        base = build_query(from_, to, message_id, queue_id, status, client, since, until)
        positional, only_host = _tracebuild_query(query_text, inv)
        query = _combine(base, positional)
        if query.empty and query.since is None:
            raise UsageError("give a QUERY or a selector (--to, --from, --message-id, ...)")
        start = select_hosts(inv, (host or []) + ([only_host] if only_host else []), group or [])
        settings = inv.settings
        run = trace_fleet(
            inv.hosts,
            start,
            query,
            open_session=lambda h: open_session(h, settings, passphrase_provider=_passphrase),
            zone_of=host_zone,
            now=datetime.now().astimezone(),
            max_skew=timedelta(seconds=max_skew),
            depth=depth,
            workers=workers or settings.workers,
        )
        results = list(run.results)
        reports = [
            HostReport(r.host, error=r.error, stats=r.value.log.stats if r.value else None)
            for r in results
        ]
        out = sys.stdout
        chosen = fmt or TraceFormat.TEXT
        if chosen is TraceFormat.JSON:
            render_traces_json(run.traces, reports, out)
        elif chosen is TraceFormat.NDJSON:
            render_traces_ndjson(run.traces, out)
        elif chosen is TraceFormat.CSV:
            render_traces_csv(run.traces, out)
        elif chosen is TraceFormat.TABLE:
            render_traces_table(run.traces, out, width=_width())
        elif chosen is TraceFormat.DOT:
            render_traces_dot(run.traces, out)
        elif chosen is TraceFormat.MERMAID:
            render_traces_mermaid(run.traces, out)
        else:
            render_traces_text(run.traces, out, width=_width(), color=_color())
        out.flush()
        for note in run.notes:
            _err(note)
        if verbose:
            _err(f"{run.rounds} rounds, {run.round_trips} commands over SSH/local sessions")
        _report_failures(results)
        raise typer.Exit(_exit_code(results, bool(run.traces)))


def _combine(a: Query, b: Query) -> Query:
    return Query(
        senders=a.senders,
        recipients=a.recipients,
        message_ids=a.message_ids,
        queue_ids=a.queue_ids,
        statuses=a.statuses,
        clients=a.clients,
        since=a.since,
        until=a.until,
        terms=b.terms,
    )


def _color() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


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



"""Run a task on each selected host, with a progress display on a terminal.

The CLI's one way to reach the fleet: open each host's session, run the task, close it.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, MutableMapping, Sequence
from typing import TYPE_CHECKING, TypeVar

from collector.inventory.origins import Reading, plan_readings
from collector.models import Host, HostError, HostResult, Inventory
from collector.render.text import human_bytes
from collector.search.fleet import run_on_hosts
from collector.transport import open_session
from collector.transport.base import Session

if TYPE_CHECKING:
    from collector.search.host import ByteCounter

T = TypeVar("T")


def passphrase(path: str) -> str | None:
    """Ask for a key's passphrase, only when a person is there to answer."""
    if not sys.stdin.isatty():
        return None
    import getpass

    try:
        return getpass.getpass(f"Passphrase for {path}: ")
    except (EOFError, KeyboardInterrupt):
        return None


def run_fleet(
    inventory: Inventory,
    hosts: Sequence[Host],
    task: Callable[[Session, ByteCounter | None], T],
    *,
    workers: int | None,
    progress: bool,
    processes: bool = False,
    exceptions: MutableMapping[str, BaseException] | None = None,
) -> list[HostResult[T]]:
    """Open each host's session, run ``task`` on it, close it; one result per host, in order.

    ``task`` gets the session and a callback for the bytes it receives (for the progress
    display; None when there is none). ``processes``: the task parses whole logs
    (CPU-bound): run hosts in worker processes (which cannot report their bytes).
    """
    settings = inventory.settings

    def runner(count: ByteCounter | None) -> Callable[[Host], T]:
        def per_host(host: Host) -> T:
            session = open_session(host, settings, passphrase_provider=passphrase)
            try:
                return task(session, count)
            finally:
                session.close()

        return per_host

    on_done: Callable[[HostResult[T]], None] | None = None
    count: ByteCounter | None = None
    with contextlib.ExitStack() as stack:
        if progress:
            shown = stack.enter_context(_Progress(len(hosts)))
            on_done = lambda _r: shown.host_done()  # noqa: E731
            count = None if processes else shown.received
        return run_on_hosts(
            hosts,
            runner(count),
            workers=workers or settings.workers,
            on_done=on_done,
            processes=processes,
            exceptions=exceptions,
        )


def run_readings(
    inventory: Inventory,
    hosts: Sequence[Host],
    task: Callable[[Session, ByteCounter | None, Reading], Sequence[tuple[str, T]]],
    *,
    everything: bool,
    workers: int | None,
    progress: bool,
    processes: bool = False,
    exceptions: MutableMapping[str, BaseException] | None = None,
) -> list[HostResult[T]]:
    """:func:`run_fleet` for hosts that may be read on a log host (``collects``).

    Each selected host is read where its lines are: on its own, or on its log host, which is
    read once for all the selected hosts it carries. ``task`` answers ``(origin, value)``
    pairs; the result is one per origin host, in inventory order (then the hosts a
    ``collects = ["*"]`` log host made of its lines' names). A log host that fails fails every
    host it carries, with its error (``via`` names it).
    """
    readings = plan_readings(inventory.hosts, hosts, everything=everything)
    by_reader = {r.host.name: r for r in readings}
    results = run_fleet(
        inventory,
        [r.host for r in readings],
        lambda s, n: task(s, n, by_reader[s.host.name]),
        workers=workers,
        progress=progress,
        processes=processes,
        exceptions=exceptions,
    )
    answers: dict[str, HostResult[T]] = {}
    made: list[HostResult[T]] = []
    for r in results:
        reading = by_reader[r.host]
        if r.error is not None:
            for name in reading.report:
                via = r.host if name != r.host else None
                error = HostError(name, r.error.stage, r.error.message, via)
                answers[name] = HostResult(name, error=error)
                if exceptions is not None and r.host in exceptions:
                    exceptions.setdefault(name, exceptions[r.host])
            continue
        for name, value in r.value or ():
            if name in reading.report:
                answers[name] = HostResult(name, value=value)
            elif reading.reports(name):
                made.append(HostResult(name, value=value))
    return [answers[h.name] for h in inventory.hosts if h.name in answers] + made


class _Progress:
    """hosts done of all, and the bytes received so far, on stderr (gone when finished)."""

    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("hosts  {task.fields[received]}"),
            console=Console(stderr=True),
            transient=True,
        )
        self._bar = self._progress.add_task("querying", total=total, received="")
        self._lock = threading.Lock()
        self._bytes = 0

    def __enter__(self) -> _Progress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(None, None, None)

    def received(self, n: int) -> None:
        with self._lock:
            self._bytes += n
            shown = human_bytes(self._bytes)
        self._progress.update(self._bar, received=f"{shown} received")

    def host_done(self) -> None:
        self._progress.advance(self._bar)

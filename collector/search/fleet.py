"""The orchestrator's pool: run a per-host task on every host, one result per host.

Only *expected* failures become a host's error: collector's own errors, ``OSError`` (sockets,
files) and paramiko's. Anything else is a bug in collector; it must not pass for a host
problem, so it is held until every other host has finished and then raised as
:class:`InternalError` (the CLI shows its traceback under ``--debug``).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import traceback
from collections.abc import Callable, MutableMapping, Sequence
from concurrent.futures import (
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    as_completed,
)
from typing import Any, TypeVar

from collector.errors import CollectorError, TransportError
from collector.models import Host, HostError, HostResult, Stage

T = TypeVar("T")


class InternalError(Exception):
    """A bug met while searching a host: not a host problem, so not a per-host error.

    ``details`` is the formatted traceback (kept as text: an exception from a worker
    process may not pickle).
    """

    def __init__(self, host: str, summary: str, details: str) -> None:
        self.host = host
        self.summary = summary
        self.details = details
        super().__init__(f"internal error on {host}: {summary}")


def expected_errors() -> tuple[type[BaseException], ...]:
    """The exception types that mean "this host failed", not "collector has a bug"."""
    kinds: list[type[BaseException]] = [CollectorError, OSError]
    paramiko = sys.modules.get("paramiko")  # never imported: none of its errors can occur
    if paramiko is not None:
        kinds.append(paramiko.SSHException)
    return tuple(kinds)


def describe_failure(host: str, exc: BaseException) -> HostError:
    """The per-host error for an expected exception a task raised.

    A :class:`TransportError` keeps its stage; another :class:`CollectorError` keeps a
    ``stage`` attribute if it has one, else counts as ``read``; an ``OSError`` or an SSH
    error counts as ``read`` with its type name.
    """
    if isinstance(exc, TransportError):
        return HostError(host, exc.stage, exc.message)
    if isinstance(exc, CollectorError):
        stage = getattr(exc, "stage", None)
        return HostError(host, stage if isinstance(stage, Stage) else Stage.READ, str(exc))
    return HostError(host, Stage.READ, f"{type(exc).__name__}: {exc}")


def run_on_hosts(
    hosts: Sequence[Host],
    task: Callable[[Host], T],
    *,
    workers: int = 16,
    on_done: Callable[[HostResult[T]], None] | None = None,
    exceptions: MutableMapping[str, BaseException] | None = None,
    processes: bool = False,
) -> list[HostResult[T]]:
    """Run ``task(host)`` for every host on at most ``workers`` threads.

    Results come back in inventory order. An expected exception (see
    :func:`expected_errors`) becomes the host's error (see :func:`describe_failure`) and, when
    ``exceptions`` is given, is stored there under the host name so ``--debug`` can show its
    traceback. Any other exception is a bug: the other hosts still finish, then
    :class:`InternalError` is raised for the first such host. ``on_done`` is called in the
    calling thread as each host finishes, in finishing order. Each task runs in its own
    thread, so a task may hold a session: sessions are never shared between threads. A slow
    host holds only its own worker.

    With ``processes``, CPU-bound tasks (parsing whole logs) run in forked worker processes,
    at most one per CPU, so several hosts parse in parallel despite the GIL; the task is
    inherited by the fork (never pickled), its value must pickle.
    """
    if not hosts:
        return []
    results: list[HostResult[T] | None] = [None] * len(hosts)
    bugs: list[InternalError] = []
    pool, submit = _pool(hosts, task, workers, processes)
    try:
        futures: dict[Future[Any], int] = {submit(index): index for index in range(len(hosts))}
        for future in as_completed(futures):
            index = futures[future]
            name = hosts[index].name
            result = _result(name, future, exceptions, bugs)
            if result is None:
                continue
            results[index] = result
            if on_done is not None:
                on_done(result)
    except BaseException:
        # Ctrl-C or a failing on_done: do not start the hosts still queued.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    if bugs:
        raise bugs[0]
    return [r for r in results if r is not None]


def _pool(
    hosts: Sequence[Host], task: Callable[[Host], Any], workers: int, processes: bool
) -> tuple[Executor, Callable[[int], Future[Any]]]:
    count = max(1, min(workers, len(hosts)))
    if processes and count > 1 and (os.cpu_count() or 1) > 1:
        procs = ProcessPoolExecutor(
            max_workers=min(count, os.cpu_count() or 1),
            mp_context=multiprocessing.get_context("fork"),
            initializer=_adopt,
            initargs=(task, tuple(hosts)),
        )
        return procs, lambda i: procs.submit(_run_adopted, i)
    threads = ThreadPoolExecutor(max_workers=count, thread_name_prefix="collector-host")
    return threads, lambda i: threads.submit(task, hosts[i])


def _result(
    name: str,
    future: Future[Any],
    exceptions: MutableMapping[str, BaseException] | None,
    bugs: list[InternalError],
) -> HostResult[Any] | None:
    """The host's result; None (and a bug recorded) when the task met a bug."""
    exc = future.exception()
    if exc is None:
        value = future.result()
        if isinstance(value, _Failed):
            return HostResult(name, error=value.error)
        if isinstance(value, _Bug):
            bugs.append(InternalError(name, value.summary, value.details))
            return None
        return HostResult(name, value=value)
    if exceptions is not None:
        exceptions[name] = exc
    if isinstance(exc, expected_errors()):
        return HostResult(name, error=describe_failure(name, exc))
    bugs.append(_internal(name, exc))
    return None


def _internal(host: str, exc: BaseException) -> InternalError:
    details = "".join(traceback.format_exception(exc))
    error = InternalError(host, f"{type(exc).__name__}: {exc}", details)
    error.__cause__ = exc
    return error


class _Failed:
    """A task's expected failure in a worker process (exceptions may not pickle; this does)."""

    def __init__(self, error: HostError) -> None:
        self.error = error


class _Bug:
    """A task's bug in a worker process, as text."""

    def __init__(self, summary: str, details: str) -> None:
        self.summary = summary
        self.details = details


# Set in each forked worker by the pool's initializer: the task and the hosts, inherited by
# the fork rather than pickled (a task is usually a closure).
_ADOPTED: list[Any] = []


def _adopt(task: Callable[[Host], Any], hosts: tuple[Host, ...]) -> None:
    _ADOPTED[:] = [task, hosts]


def _run_adopted(index: int) -> Any:
    task, hosts = _ADOPTED
    try:
        return task(hosts[index])
    except expected_errors() as exc:
        return _Failed(describe_failure(hosts[index].name, exc))
    except Exception as exc:  # noqa: BLE001 - a bug: reported by the parent, as text
        return _Bug(f"{type(exc).__name__}: {exc}", "".join(traceback.format_exception(exc)))

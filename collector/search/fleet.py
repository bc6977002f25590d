"""The one thread pool: run a per-host task on every host, one result per host."""

from __future__ import annotations

import multiprocessing
import os
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


def describe_failure(host: str, exc: BaseException) -> HostError:
    """The per-host error for an exception a task raised.

    A :class:`TransportError` keeps its stage; another :class:`CollectorError` keeps a
    ``stage`` attribute if it has one, else counts as ``read``; anything else is a bug
    and is reported as ``read`` with its type name.
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

    Results come back in inventory order. A task's exception never propagates: it
    becomes the host's error (see :func:`describe_failure`) and, when ``exceptions`` is
    given, is stored there under the host name so ``--debug`` can show its traceback.
    ``on_done`` is called in the calling thread as each host finishes, in finishing
    order. Each task runs in its own thread, so a task may hold a session: sessions are
    never shared between threads. A slow host holds only its own worker.

    With ``processes``, CPU-bound tasks (parsing whole logs) run in forked worker processes,
    at most one per CPU, so several hosts parse in parallel despite the GIL; the task is
    inherited by the fork (never pickled), its value must pickle.
    """
    if not hosts:
        return []
    results: list[HostResult[T] | None] = [None] * len(hosts)
    count = max(1, min(workers, len(hosts)))
    pool: Executor
    if processes and count > 1 and (os.cpu_count() or 1) > 1:
        pool = ProcessPoolExecutor(
            max_workers=min(count, os.cpu_count() or 1),
            mp_context=multiprocessing.get_context("fork"),
            initializer=_adopt,
            initargs=(task, tuple(hosts)),
        )
        submit: Callable[[int], Future[Any]] = lambda i: pool.submit(_run_adopted, i)  # noqa: E731
    else:
        pool = ThreadPoolExecutor(max_workers=count, thread_name_prefix="collector-host")
        submit = lambda i: pool.submit(task, hosts[i])  # noqa: E731
    try:
        futures: dict[Future[Any], int] = {submit(index): index for index in range(len(hosts))}
        for future in as_completed(futures):
            index = futures[future]
            name = hosts[index].name
            exc = future.exception()
            value = future.result() if exc is None else None
            if isinstance(value, _Failed):
                result: HostResult[T] = HostResult(name, error=value.error)
            elif exc is None:
                result = HostResult(name, value=value)
            else:
                result = HostResult(name, error=describe_failure(name, exc))
                if exceptions is not None:
                    exceptions[name] = exc
            results[index] = result
            if on_done is not None:
                on_done(result)
    except BaseException:
        # Ctrl-C or a failing on_done: do not start the hosts still queued.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return [r for r in results if r is not None]


class _Failed:
    """A task's failure in a worker process (exceptions may not pickle; this does)."""

    def __init__(self, error: HostError) -> None:
        self.error = error


# Set in each forked worker by the pool's initializer: the task and the hosts, inherited by
# the fork rather than pickled (a task is usually a closure).
_ADOPTED: list[Any] = []


def _adopt(task: Callable[[Host], Any], hosts: tuple[Host, ...]) -> None:
    _ADOPTED[:] = [task, hosts]


def _run_adopted(index: int) -> Any:
    task, hosts = _ADOPTED
    try:
        return task(hosts[index])
    except Exception as exc:  # noqa: BLE001 - becomes the host's error in the parent
        return _Failed(describe_failure(hosts[index].name, exc))

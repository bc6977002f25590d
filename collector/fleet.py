"""The one thread pool: run a per-host task on every host, one result per host."""

from __future__ import annotations

from collections.abc import Callable, MutableMapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from typing import TypeVar

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
) -> list[HostResult[T]]:
    """Run ``task(host)`` for every host on at most ``workers`` threads.

    Results come back in inventory order. A task's exception never propagates: it
    becomes the host's error (see :func:`describe_failure`) and, when ``exceptions`` is
    given, is stored there under the host name so ``--debug`` can show its traceback.
    ``on_done`` is called in the calling thread as each host finishes, in finishing
    order. Each task runs in its own thread, so a task may hold a session: sessions are
    never shared between threads. A slow host holds only its own worker.
    """
    if not hosts:
        return []
    results: list[HostResult[T] | None] = [None] * len(hosts)
    pool = ThreadPoolExecutor(
        max_workers=max(1, min(workers, len(hosts))), thread_name_prefix="collector-host"
    )
    try:
        futures: dict[Future[T], int] = {
            pool.submit(task, host): index for index, host in enumerate(hosts)
        }
        for future in as_completed(futures):
            index = futures[future]
            name = hosts[index].name
            exc = future.exception()
            if exc is None:
                result: HostResult[T] = HostResult(name, value=future.result())
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

"""The bastion pool's bookkeeping (pure: fake clients, no network)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from collector.errors import TransportError
from collector.models import Stage
from collector.transport.bastions import BastionPool


class FakeTransport:
    def __init__(self) -> None:
        self.active = True

    def is_active(self) -> bool:
        return self.active


class FakeClient:
    def __init__(self) -> None:
        self.transport = FakeTransport()
        self.closed = False

    def get_transport(self) -> FakeTransport:
        return self.transport

    def close(self) -> None:
        self.closed = True
        self.transport.active = False


def counting(made: list[FakeClient]) -> Any:
    def connect() -> FakeClient:
        client = FakeClient()
        made.append(client)
        return client
    return connect


def test_one_connection_per_key_closed_by_its_last_user() -> None:
    pool, made = BastionPool(), []  # type: ignore[var-annotated]
    first = pool.acquire("k", "a", counting(made))
    second = pool.acquire("k", "b", counting(made))
    other = pool.acquire("other", "c", counting(made))
    assert first is second and first is not other and len(made) == 2
    pool.release("k")
    assert not first.closed
    pool.release("k")
    assert first.closed and not other.closed
    assert pool.open_connections() == 1


def test_a_dead_connection_is_made_again() -> None:
    pool, made = BastionPool(), []  # type: ignore[var-annotated]
    first = pool.acquire("k", "a", counting(made))
    first.transport.active = False
    second = pool.acquire("k", "b", counting(made))
    assert second is not first and len(made) == 2


def test_a_failure_is_remembered_and_renamed_for_each_host() -> None:
    pool, calls = BastionPool(), []  # type: ignore[var-annotated]

    def refuse() -> Any:
        calls.append(1)
        raise TransportError("a", Stage.CONNECT, "connection refused (gate:22)")

    with pytest.raises(TransportError) as one:
        pool.acquire("k", "a", refuse)
    with pytest.raises(TransportError) as two:
        pool.acquire("k", "b", refuse)
    assert len(calls) == 1
    assert (one.value.host, two.value.host) == ("a", "b")
    assert two.value.message == "connection refused (gate:22)"
    assert pool.open_connections() == 0


def test_waiting_hosts_share_the_connect_in_progress() -> None:
    pool, made = BastionPool(), []  # type: ignore[var-annotated]
    gate = threading.Event()

    def slow() -> FakeClient:
        gate.wait(5)
        return counting(made)()

    got: list[Any] = []
    threads = [threading.Thread(target=lambda: got.append(pool.acquire("k", "h", slow)))
               for _ in range(8)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join()
    assert len(made) == 1 and all(c is made[0] for c in got)

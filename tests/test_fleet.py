"""The host pool, with fake tasks: order, error tagging, worker bound, slow hosts."""

from __future__ import annotations

import threading
import time

import pytest

from collector.errors import CollectorError, InventoryError, TransportError
from collector.models import Host, HostError, HostResult, Stage
from collector.search.fleet import InternalError, describe_failure, run_on_hosts

HOSTS = [Host(f"mx{i}") for i in range(8)]


def test_results_come_back_in_inventory_order() -> None:
    # Later hosts finish first; the result list still follows the inventory.
    def task(host: Host) -> str:
        time.sleep(0.01 * (8 - int(host.name[2:])))
        return host.name.upper()

    finished: list[str] = []
    results = run_on_hosts(HOSTS, task, workers=8, on_done=lambda r: finished.append(r.host))
    assert [r.host for r in results] == [h.name for h in HOSTS]
    assert [r.value for r in results] == [h.name.upper() for h in HOSTS]
    assert all(r.ok for r in results)
    assert sorted(finished) == sorted(h.name for h in HOSTS)
    assert finished[0] == "mx7"


def test_errors_are_tagged_per_host_and_never_propagate() -> None:
    class Odd(CollectorError):
        stage = Stage.DISCOVER

    def task(host: Host) -> int:
        match host.name:
            case "mx1":
                raise TransportError("mx1", Stage.AUTH, "Authentication failed")
            case "mx2":
                raise Odd("no log found")
            case "mx3":
                raise InventoryError(None, "bad key")
            case "mx4":
                raise ConnectionResetError("boom")
        return 1

    caught: dict[str, BaseException] = {}
    results = run_on_hosts(HOSTS[:6], task, exceptions=caught)
    assert [r.error for r in results] == [
        None,
        HostError("mx1", Stage.AUTH, "Authentication failed"),
        HostError("mx2", Stage.DISCOVER, "no log found"),
        HostError("mx3", Stage.READ, "bad key"),
        HostError("mx4", Stage.READ, "ConnectionResetError: boom"),
        None,
    ]
    assert [r.value for r in results] == [1, None, None, None, None, 1]
    assert set(caught) == {"mx1", "mx2", "mx3", "mx4"}
    assert isinstance(caught["mx4"], ConnectionResetError)
    assert caught["mx4"].__traceback__ is not None  # --debug can print it


def test_error_host_name_is_the_inventory_name() -> None:
    # A task may raise an error naming another host (a bastion); the result is still ours.
    error = describe_failure("mx9", TransportError("bastion", Stage.CONNECT, "refused"))
    assert error == HostError("mx9", Stage.CONNECT, "refused")


@pytest.mark.parametrize("workers", [1, 3, 16])
def test_worker_bound_is_respected(workers: int) -> None:
    expected = min(workers, len(HOSTS))
    changed = threading.Condition()
    running = 0
    peak = 0

    def task(host: Host) -> None:
        nonlocal running, peak
        with changed:
            running += 1
            peak = max(peak, running)
            changed.notify_all()
            # Hold the worker until the pool has shown it can run `expected` at once.
            changed.wait_for(lambda: peak >= expected, timeout=5)
            running -= 1

    run_on_hosts(HOSTS, task, workers=workers)
    assert peak == expected


def test_a_slow_host_does_not_delay_the_others() -> None:
    finished_at: dict[str, float] = {}
    started = time.monotonic()

    def task(host: Host) -> str:
        time.sleep(3.0 if host.name == "mx0" else 0.05)
        return host.name

    def done(result: HostResult[str]) -> None:
        finished_at[result.host] = time.monotonic() - started

    results = run_on_hosts(HOSTS, task, workers=4, on_done=done)
    assert all(r.ok for r in results)
    # The seven fast hosts share three workers: ~0.15 s, far from mx0's 3 s.
    assert max(t for name, t in finished_at.items() if name != "mx0") < 1.5
    assert finished_at["mx0"] >= 3.0


def test_no_hosts() -> None:
    assert run_on_hosts([], lambda host: 1) == []


def test_a_failing_callback_stops_queued_hosts() -> None:
    ran: list[str] = []

    def task(host: Host) -> None:
        ran.append(host.name)
        time.sleep(0.05)

    def done(result: HostResult[None]) -> None:
        raise RuntimeError("renderer broke")

    with pytest.raises(RuntimeError, match="renderer broke"):
        run_on_hosts(HOSTS, task, workers=1, on_done=done)
    time.sleep(0.2)
    assert len(ran) < len(HOSTS)


@pytest.mark.parametrize("processes", [False, True])
def test_a_bug_is_not_a_host_error_and_waits_for_the_others(processes: bool) -> None:
    # A KeyError is collector's bug, not mx2's problem: it must not pass for a per-host
    # error, and it must not cut the other hosts short either.
    finished: list[str] = []

    def task(host: Host) -> str:
        if host.name == "mx2":
            raise KeyError("boom")
        time.sleep(0.05)
        return host.name

    with pytest.raises(InternalError) as caught:
        run_on_hosts(HOSTS, task, workers=4, processes=processes,
                     on_done=lambda r: finished.append(r.host))
    assert caught.value.host == "mx2"
    assert caught.value.summary == "KeyError: 'boom'"
    assert "Traceback" in caught.value.details and "KeyError" in caught.value.details
    assert sorted(finished) == sorted(h.name for h in HOSTS if h.name != "mx2")


def test_an_expected_error_in_a_worker_process_is_the_hosts_error() -> None:
    def task(host: Host) -> str:
        if host.name == "mx1":
            raise PermissionError(13, "Permission denied")
        return host.name

    results = run_on_hosts(HOSTS[:3], task, workers=3, processes=True)
    assert [r.error for r in results] == [
        None, HostError("mx1", Stage.READ, "PermissionError: [Errno 13] Permission denied"), None
    ]

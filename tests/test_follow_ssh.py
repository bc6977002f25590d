"""collector follow against real sshd hosts (tests/sshfleet.py) whose logs grow while it runs:
the lab's real lines appended in the order they were logged, a rotation midway, a host lost and
back, and nothing left running on the hosts afterwards."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet_support import lab_spec
from follow_support import (
    EXPECTED,
    LAB,
    aliases,
    append,
    check_scenarios,
    feed,
    lab_lines,
    log_path,
    scenario_traces,
    start,
)
from sshfleet import Fleet, running_fleet

pytestmark = pytest.mark.ssh

HOSTS = tuple(EXPECTED["hosts"])


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    specs = [lab_spec(h, LAB, files={log_path(h): ""}) for h in HOSTS]
    with running_fleet(tmp_path_factory.mktemp("follow-fleet"), specs) as running:
        yield running


def _inventory(fleet: Fleet, path: Path) -> Path:
    path.write_text(fleet.inventory_toml({n: {"aliases": a} for n, a in aliases().items()}))
    return path


def _tails(fleet: Fleet) -> list[str]:
    """The follow commands still running on any host."""
    found = []
    for name in HOSTS:
        for pid in fleet.namespace_pids(name):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if cmd.startswith("tail -n0 -F"):
                found.append(f"{name}: {pid} {cmd}")
    return found


def test_follow_over_ssh_every_scenario_once_rotation_host_lost_and_back(
    fleet: Fleet, tmp_path: Path
) -> None:
    inv = _inventory(fleet, tmp_path / "inventory.toml")
    logs = {h: fleet.host_path(h, log_path(h)) for h in HOSTS}
    live = start("follow", "-i", str(inv), "--format", "ndjson")
    try:
        live.until(lambda: len(_tails(fleet)) == len(HOSTS), 30, "every host followed")
        lines = lab_lines()
        half = len(lines) // 2
        for _ in feed(logs, lines[:half]):
            pass
        os.rename(logs["mbox1"], str(logs["mbox1"]) + ".1")  # rotated: renamed, a new file
        logs["mbox1"].write_bytes(b"")
        time.sleep(1.5)
        for _ in feed(logs, lines[half:]):
            pass
        live.until(lambda: check_scenarios(live.traces()), 60, "every scenario shown")

        # mx1 goes down: said once; the reader tries again and says when it is back
        fleet.stop_host("mx1")
        stopped = time.time()
        live.until(lambda: any(e.startswith("collector: mx1: ") and "reconnecting" in e
                               for e in live.err), 30, "mx1 lost")
        reject = [x for h, x in lines if h == "mx1" and b"Client host rejected" in x]
        append(logs["mx1"], reject)  # logged while it is down: missed
        time.sleep(2)
        fleet.start_host("mx1")
        started = time.time()
        live.until(lambda: any("mx1: back" in e and "missed" in e for e in live.err), 60,
                   "mx1 back")
        said = dict(zip(live.err, live.err_arrived, strict=True))
        lost_at = next(t for e, t in said.items() if "reconnecting" in e)
        back_at = next(t for e, t in said.items() if "mx1: back" in e)
        # (figures for the record, not a timed test: said with -s)
        print(f"\nfollow reconnect: lost said {lost_at - stopped:.1f} s after sshd stopped, "
              f"back said {back_at - started:.1f} s after it started "
              f"(down {started - stopped:.1f} s)")
        time.sleep(1)
        append(logs["mx1"], reject)  # logged after: shown
        (client_reject,) = [s for s in EXPECTED["scenarios"] if s["name"] == "client_reject"]
        live.until(lambda: len(scenario_traces(live.traces(), client_reject)) == 2, 30,
                   "the reject logged after mx1 came back")
    finally:
        code = live.interrupt()
    assert code == 0, live.err
    assert [e for e in live.err if "mx1" in e and ("lost" in e or "back" in e)], live.err
    assert len([e for e in live.err if "mx1" in e]) == 2, live.err  # once down, once back
    assert not [e for e in live.err if "mx1" not in e or "internal" in e], live.err
    # The follow commands end themselves once nobody reads them (the next heartbeat fails).
    deadline = time.monotonic() + 20
    while _tails(fleet) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _tails(fleet) == []


def test_a_command_without_deadline_ends_as_any_other(fleet: Fleet, tmp_path: Path) -> None:
    """timeout=math.inf (follow's commands): no `timeout` guard, and its end is an end."""
    import math

    from collector.inventory.load import load_inventory
    from collector.transport import open_session

    inv = load_inventory(_inventory(fleet, tmp_path / "inventory.toml"))
    session = open_session(inv.hosts[0], inv.settings)
    try:
        out = list(session.stream(["sh", "-c", "echo one; echo two >&2; echo three"],
                                  timeout=math.inf))
        assert out == [b"one", b"three"]
        ran = session.run(["sh", "-c", "ps -o args= -p $PPID"], timeout=math.inf)
        assert b"timeout" not in ran.stdout, ran.stdout
    finally:
        session.close()


def test_a_frozen_host_is_lost_after_its_missed_heartbeats_and_back_when_it_thaws(
    fleet: Fleet, tmp_path: Path
) -> None:
    """A host that hangs (every process of it stopped: its TCP connection stays open, nothing
    comes, not even the heartbeat) is said lost after SILENT_BEATS heartbeats (+5 s), the
    other hosts followed all the while; once it runs again it is said back. (heartbeat 1 s
    here; follow's is FOLLOW_BEAT.) The figures are printed for the record, not asserted."""
    import signal
    import threading
    from datetime import UTC

    from collector.inventory.load import load_inventory
    from collector.trace.live import LiveTracer
    from collector.trace.stream import SILENT_BEATS, follow_fleet
    from collector.transport import open_session

    inv = load_inventory(_inventory(fleet, tmp_path / "inventory.toml"))
    said: list[tuple[float, str]] = []
    stop = threading.Event()
    runner = threading.Thread(target=lambda: follow_fleet(
        inv.hosts, inv.hosts, LiveTracer(inv.hosts),
        open_session=lambda h: open_session(h, inv.settings), zone_of=lambda _h: UTC,
        on_trace=lambda _t: False, on_problem=lambda p: said.append((time.time(), p)),
        stop=stop, everything=True, beat=1), daemon=True)
    runner.start()

    def until(what: str, timeout: float) -> float:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            hit = [t for t, p in said if what in p]
            if hit:
                return hit[0]
            time.sleep(0.1)
        raise AssertionError(f"{what!r} not said in {timeout} s: {said}")

    frozen: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while len(_tails(fleet)) < len(HOSTS) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(_tails(fleet)) == len(HOSTS)
        frozen = fleet.namespace_pids("mx1")
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        froze = time.time()
        lost = until("mx1: ", 1 * SILENT_BEATS + 5 + 10) - froze
        assert lost >= 1 * SILENT_BEATS, said  # not before its heartbeats were missed
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        thawed = time.time()
        frozen = []
        back = until("mx1: back", 60) - thawed
        print(f"\nfollow, a frozen host: said lost {lost:.1f} s after it froze "
              f"(heartbeat 1 s x {SILENT_BEATS} + 5 s), back {back:.1f} s after it thawed")
        assert [p for _, p in said if not p.startswith("mx1: ")] == [], said  # only mx1
    finally:
        for pid in frozen:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGCONT)
        stop.set()
        runner.join(30)
    assert not runner.is_alive()

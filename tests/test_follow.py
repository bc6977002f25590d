"""collector follow and wait on local-transport hosts whose logs grow while they run: the lab's
real lines appended in the order they were logged, a rotation, wait's exit codes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from follow_support import (
    EXPECTED,
    Live,
    append,
    check_scenarios,
    empty_tree,
    feed,
    lab_lines,
    local_inventory,
    log_path,
    start,
)

HOSTS = tuple(EXPECTED["hosts"])


@pytest.fixture
def fleet(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    roots = {h: empty_tree(tmp_path / h, h) for h in HOSTS}
    inv = local_inventory(tmp_path / "inventory.toml", roots)
    return inv, {h: roots[h] / log_path(h).lstrip("/") for h in HOSTS}


def test_follow_shows_every_scenario_once_joined_across_hops(
    fleet: tuple[Path, dict[str, Path]]
) -> None:
    inv, logs = fleet
    live = start("follow", "-i", str(inv), "--format", "ndjson")
    try:
        lines = lab_lines()
        half = len(lines) // 2
        time.sleep(1.5)  # the readers start (tail -n0: lines before that are not new)
        for _ in feed(logs, lines[:half]):
            pass
        # mx1's log is rotated halfway (renamed, a new file): tail -F follows the new one
        os.rename(logs["mx1"], str(logs["mx1"]) + ".1")
        logs["mx1"].write_bytes(b"")
        time.sleep(1.5)
        for _ in feed(logs, lines[half:]):
            pass
        live.until(lambda: check_scenarios(live.traces()), 60, "every scenario shown")
        time.sleep(3)  # nothing more comes
    finally:
        code = live.interrupt()
    assert code == 0, live.err
    traces = live.traces()
    check_scenarios(traces, refusals_joined=True)
    # each message once
    keys = [(t["hops"][0]["host"], t["hops"][0]["queue_id"], t["first_seen"],
             tuple(r["address"] for r in t["recipients"])) for t in traces]
    assert len(keys) == len(set(keys))
    assert not [e for e in live.err if "error" in e], live.err


def test_follow_text_is_one_line_per_recipient(fleet: tuple[Path, dict[str, Path]]) -> None:
    inv, logs = fleet
    live = start("follow", "-i", str(inv), "--to", "alice@example.test")
    try:
        time.sleep(1.5)
        lines = lab_lines()
        for _ in feed(logs, lines, pause=0):
            pass
        live.until(lambda: any("4jcvP85l5CzC646" in x for x in live.out), 60, "single")
        time.sleep(8)
    finally:
        code = live.interrupt()
    assert code == 0
    single = [x for x in live.out if "4jcvP85l5CzC646" in x]
    assert single == ["2026-11-29T17:32:44.899126+00:00 mbox1 4jcvP85l5CzC646 "
                      "sender@example.org alice@example.test sent delivered mx1>filter1>mbox1"]
    # --to alice: only messages with a recipient alice (on any hop), never others
    assert not any("partner@example.net" in x for x in live.out), live.out


def _wait(inv: Path, *args: str, timeout: str = "60s") -> Live:
    return start("wait", "-i", str(inv), "--timeout", timeout, "-f", "json", *args)


def test_wait_exit_0_when_already_delivered(fleet: tuple[Path, dict[str, Path]]) -> None:
    inv, logs = fleet
    for host, line in lab_lines():
        append(logs[host], [line])
    live = _wait(inv, "<single.20261129173200@lab.example.test>")
    code = live.proc.wait(60)
    assert code == 0, live.err
    payload = json.loads("\n".join(live.out))
    (trace,) = payload["traces"]
    assert [r["outcome"] for r in trace["recipients"]] == ["delivered"]


def test_wait_exit_1_when_it_bounces_while_waiting(fleet: tuple[Path, dict[str, Path]]) -> None:
    inv, logs = fleet
    live = _wait(inv, "<unknown_user.20261129173200@lab.example.test>")
    time.sleep(2.5)
    for _ in feed(logs, lab_lines(), pause=0):
        pass
    code = live.proc.wait(90)
    assert code == 1, live.err
    payload = json.loads("\n".join(live.out))
    outcomes = [r["outcome"] for t in payload["traces"] for r in t["recipients"]]
    assert "bounced" in outcomes, payload


def test_wait_exit_124_when_the_timeout_runs_out(fleet: tuple[Path, dict[str, Path]]) -> None:
    inv, logs = fleet
    live = _wait(inv, "<nothing.here@lab.example.test>", timeout="3s")
    code = live.proc.wait(60)
    assert code == 124, live.err
    assert any("timed out after 3s" in e for e in live.err), live.err


def test_wait_that_could_not_read_a_host_is_partial_not_a_timeout(
        fleet: tuple[Path, dict[str, Path]]) -> None:
    inv, _ = fleet
    inv.write_text(inv.read_text() + '\n[[hosts]]\nname = "gone"\ntransport = "local"\n'
                   'root = "no-such-directory"\n')
    live = _wait(inv, "<nothing.here@lab.example.test>", timeout="3s")
    code = live.proc.wait(60)
    assert code == 3, live.err
    assert any(e.startswith("collector: gone: ") for e in live.err), live.err
    assert any("partial: gone could not be read while waiting" in e for e in live.err), live.err


def test_a_local_command_without_deadline_runs_and_close_ends_it(tmp_path: Path) -> None:
    import contextlib
    import math
    import threading

    from collector.errors import TransportError
    from collector.models import Host, Settings, TransportKind
    from collector.transport.local import LocalSession

    session = LocalSession(Host("h", transport=TransportKind.LOCAL, root=str(tmp_path)),
                           Settings())
    assert list(session.stream(["sh", "-c", "echo one"], timeout=math.inf)) == [b"one"]
    got: list[bytes] = []
    lines = session.stream(["sh", "-c", "echo up; exec sleep 600"], timeout=math.inf)
    def read() -> None:
        with contextlib.suppress(TransportError):  # killed: "exited with -9"
            got.extend(lines)

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(1)
    session.close()  # from another thread: ends the command, the stream ends
    reader.join(10)
    assert not reader.is_alive() and got == [b"up"]


# --------------------------------------------------------------------------- failures


def _follow_with(opener: Any, problems: list[str], seconds: float = 1.5) -> Any:
    from datetime import UTC
    from threading import Event as Stop

    from collector.models import Host
    from collector.trace.live import LiveTracer
    from collector.trace.stream import follow_fleet

    hosts = [Host("mx1"), Host("mx2")]
    return follow_fleet(hosts, hosts, LiveTracer(hosts), open_session=opener,
                        zone_of=lambda _h: UTC, on_trace=lambda _t: False,
                        on_problem=problems.append, stop=Stop(), everything=True,
                        deadline=time.monotonic() + seconds)


def test_follow_reports_a_host_that_cannot_be_reached_and_goes_on() -> None:
    problems: list[str] = []

    def refuse(host: Any) -> Any:
        raise ConnectionRefusedError(111, "Connection refused")

    result = _follow_with(refuse, problems)
    assert sorted(e.host for e in result.down) == ["mx1", "mx2"]
    assert len(problems) == 2 and all("retrying" in p for p in problems)


def test_a_bug_while_following_ends_the_run_as_an_internal_error() -> None:
    from collector.search.fleet import InternalError

    def broken(host: Any) -> Any:
        raise ZeroDivisionError("a bug")

    with pytest.raises(InternalError) as caught:
        _follow_with(broken, [], seconds=10)
    assert caught.value.summary == "ZeroDivisionError: a bug"
    assert "Traceback" in caught.value.details

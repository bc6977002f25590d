"""Shared pieces of the ``follow`` and ``wait`` tests: the lab's hosts with empty logs, the
lab's real lines appended to them in the order they were logged, and ``collector follow`` run
as a real process (it runs until stopped: a CliRunner cannot interrupt it)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from collector.logs.parse import LineParser, TimeContext

TESTS = Path(__file__).resolve().parent
LAB = TESTS / "fixtures" / "lab"
EXPECTED: dict[str, Any] = json.loads((LAB / "expected.json").read_text())
ROOT = TESTS.parent


def log_path(host: str) -> str:
    """The host path of a lab host's log (``/var/log/...``)."""
    return str(EXPECTED["hosts"][host]["log"]["path"])


def empty_tree(dest: Path, host: str) -> Path:
    """A copy of a lab host's tree (its Postfix configuration) whose log is empty."""
    shutil.copytree(LAB / host, dest, dirs_exist_ok=True)
    (dest / log_path(host).lstrip("/")).write_bytes(b"")
    return dest


def lab_lines() -> list[tuple[str, bytes]]:
    """Every line of the four lab logs as ``(host, line)``, in the order of their times
    across hosts (a line keeps its place within its own log)."""
    timed: list[tuple[datetime, str, int, bytes]] = []
    for host in EXPECTED["hosts"]:
        data = (LAB / host / log_path(host).lstrip("/")).read_bytes()
        parser = LineParser(TimeContext(tz=UTC, reference=datetime(2026, 12, 1, tzinfo=UTC)))
        last = datetime(2000, 1, 1, tzinfo=UTC)
        for n, line in enumerate(data.splitlines()):
            rec = parser.feed(line)
            if rec is not None:
                last = max(last, rec.time)
            timed.append((last, host, n, line))
    timed.sort(key=lambda t: t[0])  # stable: each log keeps its own order
    return [(host, line) for _, host, _, line in timed]


def aliases() -> dict[str, list[str]]:
    return {n: [h["fqdn"], h["ip"]] for n, h in EXPECTED["hosts"].items()}


def local_inventory(path: Path, roots: Mapping[str, Path]) -> Path:
    parts = ['[defaults]\ntransport = "local"\ntimezone = "UTC"\n']
    for name, root in roots.items():
        parts.append(f'[[hosts]]\nname = "{name}"\nroot = "{root}"\n'
                     f"aliases = {json.dumps(aliases()[name])}\n")
    path.write_text("\n".join(parts))
    return path


@dataclass
class Live:
    """A running ``collector`` process; its stdout and stderr lines as they come."""

    proc: subprocess.Popen[bytes]
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)  # time.time() of each stdout line
    err_arrived: list[float] = field(default_factory=list)  # ... and of each stderr line

    def until(self, ok: Any, timeout: float, what: str = "") -> None:
        """Wait until ``ok()`` is true, or raises nothing (an assertion of the output)."""
        end = time.monotonic() + timeout
        last: AssertionError | None = None
        while time.monotonic() < end:
            try:
                if ok() is not False:
                    return
            except AssertionError as exc:
                last = exc
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"{what}: timed out ({last!r}); stderr: {self.err}; "
                             f"{len(self.out)} lines out")

    def interrupt(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout)

    def traces(self) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.out]


def _interruptible() -> None:
    """In the child: Ctrl-C as at a terminal. A test run started in the background by a
    non-interactive shell ignores SIGINT, and a child inherits that (Python then installs
    no KeyboardInterrupt handler): the test's SIGINT would be lost."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(*args: str, env: Mapping[str, str] | None = None) -> Live:
    proc = subprocess.Popen(
        [sys.executable, "-m", "collector", *args], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        preexec_fn=_interruptible,
    )
    live = Live(proc)

    def pump(stream: Any, into: list[str]) -> None:
        for raw in iter(stream.readline, b""):
            (live.arrived if into is live.out else live.err_arrived).append(time.time())
            into.append(raw.decode().rstrip("\n"))

    for stream, into in ((proc.stdout, live.out), (proc.stderr, live.err)):
        threading.Thread(target=pump, args=(stream, into), daemon=True).start()
    return live


def append(path: Path, lines: Sequence[bytes]) -> None:
    with open(path, "ab") as f:
        f.write(b"".join(line + b"\n" for line in lines))


def feed(paths: Mapping[str, Path], lines: Sequence[tuple[str, bytes]],
         pause: float = 0.002) -> Iterator[int]:
    """Append each line to its host's log, in order; yields the count written so far."""
    for n, (host, line) in enumerate(lines, 1):
        append(paths[host], [line])
        if pause:
            time.sleep(pause)
        yield n


# --------------------------------------------------------------------------- checking


def collapse(hosts: Sequence[str]) -> list[str]:
    out: list[str] = []
    for host in hosts:
        if not out or out[-1] != host:
            out.append(host)
    return out


_OUTCOME = {"delivered": "delivered", "bounced": "bounced", "rejected": "rejected",
            "expired": "expired", "forwarded": "delivered", "discarded": "discarded",
            "deferred": "queued"}


def scenario_traces(traces: Sequence[Mapping[str, Any]], scenario: Mapping[str, Any]
                    ) -> list[Mapping[str, Any]]:
    if all(f["fate"] == "rejected" for f in scenario["fates"]):
        wanted = {f["recipient"] for f in scenario["fates"]}
        return [t for t in traces if t["message_id"] is None and t["sender"] ==
                scenario["sender"] and {r["address"] for r in t["recipients"]} == wanted]
    return [t for t in traces if t["message_id"] == scenario["message_id"]]


def check_scenarios(traces: Sequence[Mapping[str, Any]],
                    expected: Mapping[str, Any] = EXPECTED, *,
                    refusals_joined: bool = False) -> None:
    """Every lab scenario's message is one trace, joined across hops, each recipient at the
    fate expected.json says, on the host it says, along the path it says (``expected``: a
    lab run's expected.json, by default the committed one's). With ``refusals_joined`` a
    bounce refused by the next fleet hop must end its path at that hop's refusal."""
    for scenario in expected["scenarios"]:
        found = scenario_traces(traces, scenario)
        assert len(found) == 1, (scenario["name"], len(found))
        (trace,) = found
        for fate in scenario["fates"]:
            names = {fate["recipient"]}
            if "@" not in fate["recipient"]:
                host = scenario["submitted"]["host"]
                names.add(f"{fate['recipient']}@{expected['hosts'][host]['fqdn']}")
            rs = [r for r in trace["recipients"]
                  if r["address"] in names or r["orig_address"] in names]
            assert rs, (scenario["name"], fate, trace["recipients"])
            for r in rs:
                what = (scenario["name"], fate, r)
                assert r["outcome"] == _OUTCOME[fate["fate"]], what
                assert r["host"] == fate["at"], what
                paths = [collapse(fate["path"])]
                if (fate["fate"] == "bounced" and paths[0][-1] != fate["at"]
                        and not refusals_joined):
                    # refused by the next hop: its refusal is part of the path or not
                    paths.append(paths[0][: paths[0].index(fate["at"]) + 1])
                assert collapse([p["host"] for p in r["path"]]) in paths, what

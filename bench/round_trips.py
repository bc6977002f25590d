#!/usr/bin/env python3
"""Round trips per host: which commands one collector command runs on each SSH host.

Starts N real sshd hosts (tests/sshfleet.py; needs root), each with a main.cf and a mail log
(the Postfix lab's mx1 log, as bench/scale_bench.py), then:

1. runs the CLI in-process (``collector.cli.app``) for ``hosts --check`` and
   ``search --to ADDR`` with every session wrapped so that each command it runs is logged
   (kind, wall time, bytes back), and prints the commands of one host and the count per host;
2. times the same two commands as child processes over the whole fleet, median of
   ``--runs`` runs taken in turns with the other commands (``--src`` may name several
   collector source directories, e.g. a snapshot of the branch point and this checkout:
   each is measured in the same turns).

    python3 bench/round_trips.py --hosts 8,32
    python3 bench/round_trips.py --hosts 8 --src /snap/before --src .
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "tests"))

from _common import (
    MAIN_CF,
    MAIN_CF_AGE,
    REPO,
    Series,
    machine_line,
    main_cf,
    note,
    run_timed,
    say,
    table,
)
from sshfleet import Fleet, HostSpec

LOG_SOURCE = REPO / "tests" / "fixtures" / "lab" / "mx1" / "var" / "log" / "postfix-mx1.log"
LOG = "/var/log/mail.log"
ADDRESS = "alice@example.test"


def describe(argv: Sequence[str]) -> str:
    """A command in a few words: a constant script by its first words, else its argv."""
    words = list(argv)
    if words[:2] == ["sh", "-c"] and len(words) > 2:
        script = " ".join(words[2].split())
        return f"sh -c '{script[:48]}…' " + " ".join(w[:40] for w in words[4:8])
    return " ".join(w[:40] for w in words[:8])


class LoggingSession:
    """Wraps a Session; appends one JSON line per command to ``log`` (O_APPEND: worker
    processes share it)."""

    def __init__(self, inner: Any, log: Path) -> None:
        self.inner = inner
        self.host = inner.host
        self._fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _write(self, argv: Sequence[str], began: float, nbytes: int) -> None:
        line = json.dumps({"host": self.host.name, "what": describe(argv).replace("\n", "\\n"),
                           "ms": round((time.perf_counter() - began) * 1000, 2),
                           "bytes": nbytes}) + "\n"
        os.write(self._fd, line.encode())

    def run(self, argv: Sequence[str], **kw: Any) -> Any:
        began = time.perf_counter()
        result = self.inner.run(argv, **kw)
        self._write(argv, began, len(result.stdout))
        return result

    def _streamed(self, method: str, argv: Sequence[str], kw: dict[str, Any]) -> Iterator[bytes]:
        began = time.perf_counter()
        n = 0
        try:
            for part in getattr(self.inner, method)(argv, **kw):
                n += len(part)
                yield part
        finally:
            self._write(argv, began, n)

    def stream(self, argv: Sequence[str], **kw: Any) -> Iterator[bytes]:
        return self._streamed("stream", argv, kw)

    def stream_chunks(self, argv: Sequence[str], **kw: Any) -> Iterator[bytes]:
        return self._streamed("stream_chunks", argv, kw)

    def path(self, p: str) -> str:
        return str(self.inner.path(p))

    def close(self) -> None:
        os.close(self._fd)
        self.inner.close()


def logged_cli(args: Sequence[str], log: Path) -> int:
    """Run the CLI in this process with every session logged."""
    import collector.cli.app as app_module
    import collector.cli.run as run_module
    from collector.transport import open_session

    def opener(*a: Any, **kw: Any) -> Any:
        return LoggingSession(open_session(*a, **kw), log)

    saved = run_module.open_session, app_module.open_session
    run_module.open_session = opener  # type: ignore[assignment]
    app_module.open_session = opener  # type: ignore[assignment]
    try:
        from typer.testing import CliRunner

        result = CliRunner().invoke(app_module.app, list(args))
        return result.exit_code
    finally:
        run_module.open_session, app_module.open_session = saved


def count_commands(inv: Path, one: str, work: Path) -> list[list[object]]:
    rows: list[list[object]] = []
    for label, args in (("hosts --check", ["hosts", "--check", "-i", str(inv)]),
                        ("search --to", ["search", "-i", str(inv), "--to", ADDRESS,
                                         "--format", "json"])):
        log = work / f"{label.split()[0]}.jsonl"
        log.unlink(missing_ok=True)
        code = logged_cli(args, log)
        entries = [json.loads(x) for x in log.read_text().splitlines()]
        per_host = Counter(e["host"] for e in entries)
        say(f"### `collector {label}` (exit {code}): commands on {one}")
        say()
        mine = [e for e in entries if e["host"] == one]
        say(table(["#", "command", "ms", "bytes back"],
                  [[i + 1, f"`{e['what']}`", e["ms"], e["bytes"]] for i, e in enumerate(mine)]))
        say()
        counts = sorted(set(per_host.values()))
        rows.append([label, f"{min(counts)}–{max(counts)}" if len(counts) > 1 else counts[0],
                     f"{sum(e['ms'] for e in mine):.1f}"])
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1] if __doc__ else None)
    ap.add_argument("--hosts", default="8,32", help="fleet sizes, comma-separated")
    ap.add_argument("--runs", type=int, default=3, help="runs per figure (median reported)")
    ap.add_argument("--src", type=Path, action="append",
                    help="collector source directory to time (repeatable; default this checkout)")
    ap.add_argument("--work", type=Path, help="scratch directory (default: a new temp dir)")
    args = ap.parse_args(argv)
    sources = [s.resolve() for s in (args.src or [REPO])]
    sys.path.insert(0, str(sources[-1]))
    work = Path(args.work or tempfile.mkdtemp(prefix="collector-round-trips-")).resolve()
    try:
        for size in (int(s) for s in args.hosts.split(",")):
            measure(args, sources, work / f"n{size}", size)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    say(f"Machine: {machine_line()}.")
    return 0


def measure(args: argparse.Namespace, sources: Sequence[Path], work: Path, size: int) -> None:
    names = [f"h{n:03d}" for n in range(1, size + 1)]
    specs = [HostSpec(name, files={LOG: LOG_SOURCE, MAIN_CF: main_cf(name)},
                      mtimes={MAIN_CF: time.time() - MAIN_CF_AGE}) for name in names]
    note(f"starting {size} sshd hosts")
    work.mkdir(parents=True, exist_ok=True)
    fleet = Fleet(work / "fleet", specs)
    fleet.start()
    try:
        inv = work / "inventory.toml"
        inv.write_text(fleet.inventory_toml({n: {"timezone": "UTC"} for n in names}))
        say(f"## {size} hosts ({sources[-1]})")
        say()
        counted = count_commands(inv, names[0], work)
        say(table(["command", "commands per host", f"ms on {names[0]} (sum)"], counted))
        say()
        commands = {"hosts --check": ["hosts", "--check", "-i", str(inv)],
                    "search --to": ["search", "-i", str(inv), "--to", ADDRESS,
                                    "--format", "json"]}
        series = {(c, s): Series(f"{c} {s}") for c in commands for s in sources}
        for _ in range(args.runs):
            for c, words in commands.items():
                for s in sources:
                    env = dict(os.environ, PYTHONPATH=str(s))
                    run = run_timed([sys.executable, "-m", "collector", *words], env=env)
                    if run.code not in (0, 1):
                        note(f"{c} from {s}: exit {run.code}: {run.stderr[-300:]!r}")
                    series[(c, s)].take(run)
        say(table(["command", "source", f"wall s, median of {args.runs} [min–max]"],
                  [[c, _commit(s), series[(c, s)].span()] for c in commands for s in sources]))
        say()
    finally:
        fleet.stop()


def _commit(src: Path) -> str:
    done = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=False)
    return f"{src.name} ({done.stdout.strip()})" if done.returncode == 0 else src.name


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""SSH fleet benchmark: collector over 8 real sshd hosts against bare parallel ssh + grep.

Starts one sshd per host (tests/sshfleet.py, private mount namespaces; needs root), each
host's generated log as its /var/log/mail.log. Every figure comes from one run of this
script, warm page cache, median of N runs (default 3) taken in turns. Prints Markdown; never
fails on timing. See bench/README.md.

    python3 bench/fleet_bench.py --generator genlog.py [--work DIR]
    python3 bench/fleet_bench.py --data DIR_WITH_8_HOST_LOGS_AND_TRUTH [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "tests"))
sys.path.insert(0, str(BENCH.parent))

from _common import (
    COLLECTOR,
    MAIN_CF,
    MAIN_CF_AGE,
    MB,
    REPO,
    Expected,
    Series,
    answer_bytes,
    check,
    compare_rows,
    expected_for,
    generate,
    host_aliases,
    host_logs,
    last_line_time,
    machine_line,
    main_cf,
    note,
    run_parallel,
    run_timed,
    say,
    table,
    use_source,
    warm,
)
from sshfleet import Fleet, HostSpec

TYPICAL = "mmitchell@example.com"
HEAVIEST = "alice.smith@example.com"
LOG = "/var/log/mail.log"


# --------------------------------------------------------------------------- bytes


def _kind(argv: Sequence[str]) -> str:
    """Which retrieval step a command is (from the shape of collector's own commands)."""
    text = " ".join(argv)
    if "dd if=" in text:
        return "pass 2, windows around hits"
    if "awk" in text:
        return "pass 2, whole file (awk ID lookup)"
    if "grep" in text and "-b" in argv:
        return "pass 1 (grep -b)"
    if "grep" in text:
        return "pass 2, whole file (grep IDs)"
    return "other"


class CountingSession:
    """Wraps a collector Session and counts the bytes each command sends back."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.host = inner.host
        self.bytes: Counter[str] = Counter()
        self.commands: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        # Whatever else a Session offers (notes, ...) is the wrapped session's.
        return getattr(self.inner, name)

    def path(self, p: str) -> str:
        return str(self.inner.path(p))

    def close(self) -> None:
        self.inner.close()

    def run(self, argv: Sequence[str], **kw: Any) -> Any:
        result = self.inner.run(argv, **kw)
        self._add("discovery (run)", len(result.stdout))
        return result

    def stream(self, argv: Sequence[str], *, on_bytes: Callable[[int], None] | None = None,
               **kw: Any) -> Iterator[bytes]:
        return self.inner.stream(  # type: ignore[no-any-return]
            argv, on_bytes=self._counter(argv, on_bytes), **kw)

    def stream_chunks(self, argv: Sequence[str], *,
                      on_bytes: Callable[[int], None] | None = None,
                      **kw: Any) -> Iterator[bytes]:
        return self.inner.stream_chunks(  # type: ignore[no-any-return]
            argv, on_bytes=self._counter(argv, on_bytes), **kw)

    def _counter(self, argv: Sequence[str],
                 on_bytes: Callable[[int], None] | None) -> Callable[[int], None]:
        kind = _kind(argv)
        with self._lock:
            self.commands[kind] += 1

        def count(n: int) -> None:
            self._add(kind, n)
            if on_bytes is not None:
                on_bytes(n)

        return count

    def _add(self, kind: str, n: int) -> None:
        with self._lock:
            self.bytes[kind] += n


def collector_bytes(inventory: Path, address: str) -> tuple[Counter[str], Counter[str]]:
    """Run collector's own search pipeline in-process on every host; count what comes back."""
    from collector.inventory.load import host_zone, load_inventory
    from collector.models import Query
    from collector.search.fleet import run_on_hosts
    from collector.search.host import search_host
    from collector.transport import open_session

    inv = load_inventory(inventory)
    now = datetime.now().astimezone()
    query = Query(recipients=(address,))
    sessions: list[CountingSession] = []
    lock = threading.Lock()

    def one(host: Any) -> None:
        session = CountingSession(open_session(host, inv.settings))
        with lock:
            sessions.append(session)
        try:
            search_host(session, query, host_zone(host), now, drop_deliveries=True)
        finally:
            session.close()

    results = run_on_hosts(inv.hosts, one, workers=len(inv.hosts))
    for r in results:
        if r.error is not None:
            raise SystemExit(f"{r.host}: {r.error.stage}: {r.error.message}")
    total: Counter[str] = Counter()
    commands: Counter[str] = Counter()
    for s in sessions:
        total.update(s.bytes)
        commands.update(s.commands)
    return total, commands


# --------------------------------------------------------------------------- helpers


def ssh_grep(fleet: Fleet, names: Sequence[str], needle: str) -> list[list[str]]:
    """The bare baseline: one ``ssh HOST "LC_ALL=C grep -F NEEDLE LOG"`` per host."""
    out = []
    for name in names:
        address, port = fleet.address(name)
        out.append([
            "ssh", "-F", "/dev/null", "-i", str(fleet.client_key),
            "-o", f"UserKnownHostsFile={fleet.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-p", str(port),
            f"root@{address}", f"LC_ALL=C grep -F {shlex.quote(needle)} {LOG}",
        ])
    return out


def pick_message(truth: Path) -> dict[str, Any]:
    """A delivered single-recipient inbound message with 4 hops, from the second half."""
    with truth.open() as f:
        count = sum(1 for _ in f)
    with truth.open() as f:
        for n, line in enumerate(f):
            if n < count // 2:
                continue
            rec = json.loads(line)
            if (rec["kind"] == "inbound" and len(rec["hops"]) == 4 and len(rec["recipients"]) == 1
                    and set(rec["status"].values()) == {"sent"} and rec.get("message_id")
                    and not rec.get("retries")):
                return dict(rec)
    raise SystemExit("no 4-hop message in truth.jsonl")


_ROUNDS = re.compile(r"(\d+) rounds, (\d+) commands")


def trace_hops(payload: dict[str, Any]) -> set[tuple[str, str]]:
    hops: set[tuple[str, str]] = set()
    for t in payload.get("traces", []):
        for h in t["hops"]:
            hops.add((h["host"], h["queue_id"]))
    return hops


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1] if __doc__ else None)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--generator", type=Path, help="genlog.py (the fleet-log generator)")
    src.add_argument("--data", type=Path, help="an already generated 8-host directory")
    ap.add_argument("--work", type=Path, help="scratch directory (default: a new temp dir)")
    ap.add_argument("--messages", type=int, default=367000,
                    help="messages to generate over 8 hosts (~1.6 GB, ~200 MB per host)")
    ap.add_argument("--runs", type=int, default=3, help="runs per figure (median reported)")
    ap.add_argument("--address", action="append",
                    help=f"recipients to search (default {TYPICAL}, {HEAVIEST})")
    ap.add_argument("--src", type=Path, default=REPO,
                    help="directory holding the collector package to measure (default: this checkout)")
    ap.add_argument("--keep", action="store_true", help="keep the temp work dir")
    args = ap.parse_args(argv)
    args.start_machine = machine_line()
    args.source = use_source(args.src)
    args.src = args.src.resolve()
    made_tmp = args.work is None
    work = Path(args.work or tempfile.mkdtemp(prefix="collector-fleet-bench-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        return bench(args, work)
    finally:
        if made_tmp and not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def bench(args: argparse.Namespace, work: Path) -> int:
    if args.data is not None:
        data = args.data.resolve()
    else:
        data = work / "data"
        generate(args.generator.resolve(), data, ["-H", "8", "-n", str(args.messages)])
    logs = host_logs(data)
    truth = data / "truth.jsonl"
    addresses = args.address or [TYPICAL, HEAVIEST]
    aliases = host_aliases(logs)
    specs = [HostSpec(name, files={LOG: path, MAIN_CF: main_cf(name)},
                      mtimes={LOG: last_line_time(path), MAIN_CF: time.time() - MAIN_CF_AGE})
             for name, path in logs.items()]
    note(f"starting {len(specs)} sshd hosts (copies {sum(p.stat().st_size for p in logs.values()) / MB:,.0f} MB)")
    fleet = Fleet(work / "fleet", specs)
    fleet.start()
    try:
        inv = work / "inventory.toml"
        inv.write_text(fleet.inventory_toml(
            {n: {"aliases": aliases[n], "timezone": "UTC"} for n in logs}))
        return measure(args, fleet, inv, logs, truth, addresses)
    finally:
        fleet.stop()


def measure(args: argparse.Namespace, fleet: Fleet, inv: Path, logs: dict[str, Path],
            truth: Path, addresses: list[str]) -> int:
    names = list(logs)
    files = [fleet.host_path(n, LOG) for n in names]
    note("warming the page cache")
    warm(files)
    expected: dict[str, Expected] = {a: expected_for(truth, a, logs) for a in addresses}
    msg = pick_message(truth)
    want_hops = {(h, q) for h, q in msg["hops"]}
    first_host, first_qid = msg["hops"][0]

    base = {a: Series(a) for a in addresses}
    search = {a: Series(a) for a in addresses}
    grep_bytes: dict[str, int] = {}
    verdict: dict[str, str] = {}
    matched: dict[str, bool] = {}
    checks = {k: Series(str(k)) for k in (1, 4, 8)}
    start_floor = Series("collector hosts")
    tr_base = Series("grep message-id")
    tr_mid = Series("trace message-id")
    tr_qid = Series("trace queue id")
    tr_info: dict[str, str] = {}
    host_sets = {1: names[:1], 4: names[:4], 8: names}

    # One untimed round first: the first SSH session after sshd starts can be slow.
    run_parallel(ssh_grep(fleet, names, "warm-up"))
    for r in range(args.runs):
        for a in addresses:
            note(f"run {r + 1}/{args.runs}: ssh grep / collector search {a}")
            wall, runs = run_parallel(ssh_grep(fleet, names, a))
            base[a].add(wall)
            grep_bytes[a] = sum(x.out_bytes for x in runs)
            s = run_timed([*COLLECTOR, "search", "-i", str(inv), "--to", a, "-f", "json"],
                          cwd=args.src)
            search[a].take(s)
            if s.code not in (0, 1):
                note(f"collector search exited {s.code}: {s.stderr.decode()[-500:]}")
            matched[a], verdict[a] = compare_rows(expected[a], json.loads(s.stdout or b"{}"))
        note(f"run {r + 1}/{args.runs}: hosts --check, trace")
        v = run_timed([*COLLECTOR, "hosts", "-i", str(inv)], cwd=args.src)
        start_floor.add(v.wall)
        for k, chosen in host_sets.items():
            argv = [*COLLECTOR, "hosts", "--check", "-i", str(inv), "-f", "json"]
            for n in chosen:
                argv += ["--host", n]
            c = run_timed(argv, cwd=args.src)
            if c.code != 0:
                note(f"hosts --check exited {c.code}: {c.stderr.decode()[-300:]}")
            checks[k].add(c.wall)
        wall, _ = run_parallel(ssh_grep(fleet, names, msg["message_id"]))
        tr_base.add(wall)
        for label, series, query in (("message-id", tr_mid, msg["message_id"]),
                                     ("queue id", tr_qid, f"{first_host}:{first_qid}")):
            t = run_timed([*COLLECTOR, "trace", "-i", str(inv), "-v", "-f", "json", query],
                          cwd=args.src)
            series.take(t)
            m = _ROUNDS.search(t.stderr.decode())
            got = trace_hops(json.loads(t.stdout or b"{}"))
            same = "all 4 hops = truth" if got == want_hops else (
                f"**hops differ**: got {sorted(got)}, truth {sorted(want_hops)}")
            tr_info[label] = (f"{m.group(1)} rounds, {m.group(2)} commands" if m else
                              f"no round count on stderr (exit {t.code})") + "; " + same

    note("counting the bytes collector's commands send back (in-process, same pipeline)")
    sent = {a: collector_bytes(inv, a) for a in addresses}
    ideal = {a: answer_bytes(logs, expected[a], a) for a in addresses}

    report(args, logs, fleet, names, addresses, base, search, grep_bytes, verdict, matched,
           sent, ideal, checks, start_floor, tr_base, tr_mid, tr_qid, tr_info, msg)
    return 0


def report(args: argparse.Namespace, logs: dict[str, Path], fleet: Fleet, names: list[str],
           addresses: list[str], base: dict[str, Series], search: dict[str, Series],
           grep_bytes: dict[str, int], verdict: dict[str, str], matched: dict[str, bool],
           sent: dict[str, tuple[Counter[str], Counter[str]]],
           ideal: dict[str, tuple[int, int]], checks: dict[int, Series], start_floor: Series,
           tr_base: Series, tr_mid: Series, tr_qid: Series, tr_info: dict[str, str],
           msg: dict[str, Any]) -> None:
    total = sum(p.stat().st_size for p in logs.values())
    say(f"## SSH fleet benchmark ({len(names)} sshd hosts, {total / MB:,.0f} MB in all)")
    say()
    say(f"Machine at the start: {args.start_machine}; at the end: {machine_line()}. Other jobs may share the machine; client, 8 sshd and "
        "their greps all share these cores (loopback).")
    say(f"Warm page cache; whole-process wall times, median of {args.runs} runs taken in "
        "turns, [min–max]. MB = 10^6 bytes. Peak RSS: largest process (GNU time %M), tree "
        f"sum (sampled) when larger. collector: {args.source}.")
    say()
    say(table(["host", LOG + " bytes"], [[n, f"{logs[n].stat().st_size:,}"] for n in names]))
    say()
    say("### Search one recipient over 8 hosts")
    say()
    say("Baseline: `ssh -i KEY -o UserKnownHostsFile=KH -p PORT root@127.0.0.1 \"LC_ALL=C grep "
        "-F ADDRESS /var/log/mail.log\"` for all 8 hosts at once, outputs read through pipes.")
    say()
    rows = []
    for a in addresses:
        ratio = search[a].median / base[a].median
        # The targets: a typical user <= 1.5x the bare fan-out, the heaviest recipient <= 4x.
        target = 4.0 if a == HEAVIEST else 1.5
        rows.append([f"`{a}`", base[a].span(), search[a].span(), search[a].rss_text(),
                     f"{ratio:.2f}× (≤ {target:g}×: {check(ratio <= target)})",
                     ("match: " if matched[a] else "**MISMATCH**: ") + verdict[a]])
    say(table(["address", "bare parallel ssh grep", "`collector search --to ADDR -f json`",
               "peak RSS", "search / baseline (target)", "rows vs truth"], rows))
    say()
    say("### Bytes sent back")
    say()
    say("Counted in-process: collector's own per-host pipeline (`search_host`, the same code "
        "the CLI runs) on a session wrapper that adds up the stdout bytes of every command. "
        "'Answer' = every log line of the address's messages (truth.jsonl's queue IDs on each "
        "host) plus its NOQUEUE reject lines: what an ideal two-pass search must transfer.")
    say()
    rows = []
    for a in addresses:
        by_kind, cmds = sent[a]
        data = sum(v for k, v in by_kind.items() if not k.startswith("discovery"))
        ans, ans_lines = ideal[a]
        detail = "; ".join(f"{k}: {v:,} B in {cmds.get(k, 0)} cmds" if cmds.get(k) else
                           f"{k}: {v:,} B" for k, v in sorted(by_kind.items()))
        rows.append([f"`{a}`", f"{grep_bytes[a]:,}", f"{ans:,} ({ans_lines:,} lines)",
                     f"{data:,}", f"{data / ans:.2f}× ({check(data <= 1.2 * ans)})", detail])
    say(table(["address", "baseline grep output", "answer lines",
               "collector pass 1 + pass 2", "collector / answer (target ≤ 1.2×)",
               "breakdown"], rows))
    say()
    say("### Connect + discover (`collector hosts --check -i INV --host ...`)")
    say()
    rows = [[f"{k} host{'s' if k > 1 else ''}", checks[k].span()] for k in (1, 4, 8)]
    rows.append(["(start-up floor: `collector hosts -i INV`, no connection)", start_floor.span()])
    say(table(["hosts", "wall"], rows))
    say()
    say("### Trace one 4-hop message")
    say()
    say(f"Message: `{msg['message_id']}` (truth id {msg['id']}, hops "
        + " → ".join(f"{h}:{q}" for h, q in msg["hops"]) + "). Baseline: one bare parallel "
        "ssh `LC_ALL=C grep -F MESSAGE-ID` pass over the 8 hosts.")
    say()
    rows = [["bare parallel ssh grep (message-id)", tr_base.span(), "", "", ""]]
    for label, s in (("message-id", tr_mid), ("queue id", tr_qid)):
        ratio = s.median / tr_base.median
        query = msg["message_id"] if label == "message-id" else \
            f"{msg['hops'][0][0]}:{msg['hops'][0][1]}"
        rows.append([f"`collector trace -v -f json '{query}'`", s.span(), s.rss_text(),
                     f"{ratio:.2f}× ({check(ratio <= 2)})", tr_info.get(label, "")])
    say(table(["what", "wall", "peak RSS", "/ baseline (target ≤ 2×)",
               "SSH round trips (stderr of -v); result"], rows))


if __name__ == "__main__":
    sys.exit(main())

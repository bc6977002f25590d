#!/usr/bin/env python3
"""Per-line benchmark: the parser, the assembler and summary's counter alone, in-process.

No CLI, no subprocess, no I/O in the timed part: a host log (or its first ``--lines`` lines)
is read into memory once, cut into the 64 KiB blocks a transport hands over, and fed to

- ``parse``: :meth:`LineParser.parse_blocks` (what every search and summary runs);
- ``parse + assemble``: the records into an :class:`Assembler` (search's scan);
- ``parse + assemble + rows``: plus :func:`rows_of_group` for every finished group;
- ``parse + count``: the records into summary's :class:`Counter`, each count tallied.

Each figure is the process's CPU time (single-threaded, no I/O: other jobs on the machine
weigh less than in wall time), the median of ``--runs`` (default 3) runs taken in turns; the assemble and
count rows also show their own share (the stage's median minus parse's). It prints
Markdown; it never fails on timing. See bench/README.md.

    python3 bench/parse_bench.py HOST.log [--lines N] [--runs 3] [--src DIR]
    python3 bench/parse_bench.py HOST.log --profile count   # cProfile of one stage, top 25
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import MB, REPO, machine_line, note, say, table, use_source

#: What a transport hands over per read (``collector.transport.base.CHUNK``).
BLOCK = 65536


def load(path: Path, lines: int | None) -> tuple[bytes, int]:
    """The file's bytes (its first ``lines`` lines) and how many lines that is."""
    data = path.read_bytes()
    if lines is not None:
        end = -1
        for _ in range(lines):
            end = data.find(b"\n", end + 1)
            if end < 0:
                break
        if end >= 0:
            data = data[: end + 1]
    return data, data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)


def blocks(data: bytes) -> Iterator[bytes]:
    view = memoryview(data)
    for i in range(0, len(data), BLOCK):
        yield bytes(view[i : i + BLOCK])


def stages(reference: datetime) -> dict[str, Callable[[bytes], int]]:
    """Each stage as a function of the log's bytes; it returns what it made (a count), so
    nothing is optimised away and the runs can be compared."""
    from collector.logs.assemble import Assembler, Counter
    from collector.logs.parse import LineParser, TimeContext
    from collector.logs.select import rows_of_group, tally_count
    from collector.models import Query, QueueGroup

    ctx = TimeContext(tz=UTC, reference=reference)
    host = "bench"

    def parse(data: bytes) -> int:
        n = 0
        for _ in LineParser(ctx).parse_blocks(blocks(data)):
            n += 1
        return n

    def assembled(data: bytes, per_group: Callable[[QueueGroup], int]) -> int:
        """Parse and assemble ``data``; the sum of ``per_group`` over every finished group."""
        asm = Assembler(host)
        add = asm.add
        n = 0
        for rec in LineParser(ctx).parse_blocks(blocks(data)):
            done = add(rec)
            if done:
                for g in done:
                    n += per_group(g)
        for g in asm.finish().groups:
            n += per_group(g)
        return n

    def assemble(data: bytes) -> int:
        return assembled(data, lambda g: 1)

    def rows(data: bytes) -> int:
        return assembled(data, lambda g: len(rows_of_group(g)))

    def count(data: bytes) -> int:
        counter = Counter(host, keep_reject=lambda r: False)
        add = counter.add
        counts: dict[str, int] = {}
        query = Query()
        for rec in LineParser(ctx).parse_blocks(blocks(data)):
            done = add(rec)
            if done:
                for c in done:
                    tally_count(c, counts, query)
        tail, _ = counter.finish()
        for c in tail:
            tally_count(c, counts, query)
        return counts.get("messages", 0)

    return {
        "parse": parse,
        "parse + assemble": assemble,
        "parse + assemble + rows": rows,
        "parse + count": count,
    }


def measure(fn: Callable[[bytes], int], data: bytes) -> tuple[float, int]:
    """CPU seconds of one run (the process's own: other jobs sharing the cores weigh less
    than in wall time; the stage is single-threaded and does no I/O) and what it made."""
    gc.collect()
    t0 = time.process_time()
    made = fn(data)
    return time.process_time() - t0, made


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("log", type=Path, help="a host log (e.g. genlog.py's HOST.log)")
    ap.add_argument("--lines", type=int, help="only the first N lines")
    ap.add_argument("--runs", type=int, default=3, help="runs per stage (median reported)")
    ap.add_argument("--src", type=Path, default=REPO,
                    help="directory holding the collector package to measure (default: this checkout)")
    ap.add_argument("--stage", action="append",
                    help="only these stages (parse, assemble, rows, count; repeatable)")
    ap.add_argument("--profile", metavar="STAGE",
                    help="instead of timing: cProfile one run of STAGE, top 25 by own time")
    args = ap.parse_args(argv)
    source = use_source(args.src)
    data, n_lines = load(args.log, args.lines)
    # BSD stamps carry no year: the file's mtime places them, as a search does.
    reference = datetime.fromtimestamp(args.log.stat().st_mtime, tz=UTC)
    every = stages(reference)
    short = {"parse": "parse", "assemble": "parse + assemble",
             "rows": "parse + assemble + rows", "count": "parse + count"}
    if args.profile:
        fn = every[short.get(args.profile, args.profile)]
        prof = cProfile.Profile()
        prof.enable()
        fn(data)
        prof.disable()
        pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(25)
        return 0
    chosen = [short.get(s, s) for s in args.stage] if args.stage else list(every)
    times: dict[str, list[float]] = {name: [] for name in chosen}
    made: dict[str, int] = {}
    for run in range(args.runs):
        for name in chosen:  # in turns: a slow moment of the machine hits every stage
            wall, out = measure(every[name], data)
            times[name].append(wall)
            if made.setdefault(name, out) != out:
                raise SystemExit(f"{name}: run {run + 1} made {out}, run 1 {made[name]}")
            note(f"run {run + 1} {name}: {wall:.2f} s")

    say("## parse_bench.py — per-line parse, assemble and count")
    say()
    say(f"Code measured: {source}. Python {sys.version.split()[0]}. {machine_line()}.")
    say()
    say(f"Input: {args.log.name}, {n_lines:,} lines, {len(data) / MB:.1f} MB, in-process, "
        f"{BLOCK // 1024} KiB blocks; median [min–max] of {args.runs} runs.")
    say()
    base = statistics.median(times["parse"]) if "parse" in times else None
    rows = []
    for name in chosen:
        ts = times[name]
        med = statistics.median(ts)
        own = ""
        if base is not None and name != "parse":
            own = f"{(med - base) / n_lines * 1e6:.2f}"
        rows.append([
            name, f"{med:.2f} [{min(ts):.2f}–{max(ts):.2f}]", f"{med / n_lines * 1e6:.2f}", own,
            f"{n_lines / med:,.0f}", f"{len(data) / MB / med:.1f}", f"{made[name]:,}",
        ])
    say(table(["stage", "CPU s", "us/line", "us/line beyond parse", "lines/s", "MB/s",
               "made (records, groups, rows, messages)"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

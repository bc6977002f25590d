#!/usr/bin/env python3
"""Local benchmark: collector on a >= 1 GB 4-host fleet log against grep and pflogsumm.

Every figure comes from one run of this script on the same files, warm page cache, median
of N runs (default 3) taken in turns (A B A B ...). It prints Markdown; it never fails on
timing. See bench/README.md.

    python3 bench/local_bench.py --generator genlog.py [--work DIR]
    python3 bench/local_bench.py --data DIR_WITH_HOST_LOGS_AND_TRUTH [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    COLLECTOR,
    MB,
    REPO,
    Expected,
    Series,
    check,
    compare_rows,
    copy_head,
    expected_for,
    generate,
    host_aliases,
    host_logs,
    last_line_time,
    machine_line,
    note,
    place,
    quoted,
    run_timed,
    say,
    table,
    use_source,
    warm,
)

TYPICAL = "mmitchell@example.com"
HEAVIEST = "alice.smith@example.com"


def target(address: str) -> int:
    """The issue's bound for a search, in grep passes: the heaviest recipient <= 5x, any
    other (a typical user) <= 3x."""
    return 5 if address == HEAVIEST else 3
SMALL_BYTES = 250 * MB
#: "Flat" peak RSS: the 1 GB run may use at most this much more than the 250 MB run.
FLAT_FACTOR = 1.25


def layout(logs: dict[str, Path], root: Path, aliases: dict[str, list[str]],
           small: int | None = None) -> Path:
    """ROOT/HOST/var/log/mail.log per host (mtime = last line) and ROOT/inventory.toml.

    ``small`` cuts the whole set to about that many bytes, each host to its share.
    """
    total = sum(p.stat().st_size for p in logs.values())
    hosts = []
    for name, src in logs.items():
        dst = root / name / "var" / "log" / "mail.log"
        if small is None:
            place(src, dst)
        else:
            copy_head(src, dst, src.stat().st_size * small // total)
        when = last_line_time(dst)
        os.utime(dst, (when, when))
        alias_list = ", ".join(json.dumps(a) for a in aliases.get(name, []))
        hosts.append(
            f'[[hosts]]\nname = "{name}"\nroot = {json.dumps(str(root / name))}\n'
            f"aliases = [{alias_list}]\n"
        )
    inv = root / "inventory.toml"
    inv.write_text('[defaults]\ntransport = "local"\ntimezone = "UTC"\n\n' + "\n".join(hosts))
    return inv


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1] if __doc__ else None)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--generator", type=Path, help="genlog.py (the fleet-log generator)")
    src.add_argument("--data", type=Path, help="an already generated directory (HOST.log, truth.jsonl)")
    ap.add_argument("--work", type=Path, help="scratch directory (default: a new temp dir)")
    ap.add_argument("--messages", type=int, default=240963, help="messages to generate (~1.05 GB)")
    ap.add_argument("--runs", type=int, default=3, help="runs per figure (median reported)")
    ap.add_argument("--address", action="append", help=f"recipients to search (default {TYPICAL}, {HEAVIEST})")
    ap.add_argument("--skip-pflogsumm", action="store_true", help="for trial runs only")
    ap.add_argument("--src", type=Path, default=REPO,
                    help="directory holding the collector package to measure (default: this checkout)")
    ap.add_argument("--keep", action="store_true", help="keep the temp work dir")
    args = ap.parse_args(argv)
    if shutil.which("pflogsumm") is None and not args.skip_pflogsumm:
        ap.error("pflogsumm is not installed (Debian package pflogsumm)")

    args.start_machine = machine_line()
    args.source = use_source(args.src)
    args.src = args.src.resolve()
    made_tmp = args.work is None
    work = Path(args.work or tempfile.mkdtemp(prefix="collector-bench-")).resolve()
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
        generate(args.generator.resolve(), data, ["-n", str(args.messages)])
    logs = host_logs(data)
    truth = data / "truth.jsonl"
    addresses = args.address or [TYPICAL, HEAVIEST]
    aliases = host_aliases(logs)
    big_root = work / "roots-full"
    small_root = work / "roots-250m"
    inv = layout(logs, big_root, aliases)
    inv_small = layout(logs, small_root, aliases, small=SMALL_BYTES)
    files = [big_root / h / "var/log/mail.log" for h in logs]
    small_files = [small_root / h / "var/log/mail.log" for h in logs]
    size = sum(f.stat().st_size for f in files)
    small_size = sum(f.stat().st_size for f in small_files)
    note(f"laid out {len(files)} hosts, {size / MB:.1f} MB (+ {small_size / MB:.1f} MB cut)")

    note("warming the page cache")
    warm(files + small_files)
    line_count = run_timed(["wc", "-l", *map(str, files)], keep_stdout=True)
    lines = int(line_count.stdout.split()[-2])
    small_lines = int(run_timed(["wc", "-l", *map(str, small_files)]).stdout.split()[-2])
    expected = {a: expected_for(truth, a, logs) for a in addresses}
    env = dict(os.environ, LC_ALL="C", COLUMNS="200")

    grep = {a: Series(f"grep {a}") for a in addresses}
    search = {a: Series(f"search {a}") for a in addresses}
    verdict: dict[str, str] = {}
    matched: dict[str, bool] = {}
    grep_lines: dict[str, int] = {}
    for r in range(args.runs):
        for a in addresses:
            note(f"run {r + 1}/{args.runs}: grep / search {a}")
            g = run_timed(["grep", "-F", f"to=<{a}>", *map(str, files)], keep_stdout=False,
                          env=env)
            grep[a].take(g)
            grep_lines[a] = g.out_lines
            s = run_timed([*COLLECTOR, "search", "-i", str(inv), "--to", a, "-f", "json"],
                          cwd=args.src)
            search[a].take(s)
            if s.code not in (0, 1):
                note(f"collector search exited {s.code}: {s.stderr.decode()[-500:]}")
            ok, text = compare_rows(expected[a], json.loads(s.stdout or b"{}"))
            matched[a], verdict[a] = ok, text

    start = Series("collector --version")
    for r in range(3 * args.runs):
        start.take(run_timed([*COLLECTOR, "--version"], cwd=args.src))

    summ = Series("collector summary 1 GB")
    summ_small = Series("collector summary 250 MB")
    pfl = Series("pflogsumm 1 GB")
    pfl_small = Series("pflogsumm 250 MB")
    summary_out = b""
    for r in range(args.runs):
        note(f"run {r + 1}/{args.runs}: summary / pflogsumm")
        s = run_timed([*COLLECTOR, "summary", "-i", str(inv)], cwd=args.src)
        summ.take(s)
        summary_out = s.stdout
        s = run_timed([*COLLECTOR, "summary", "-i", str(inv_small)], cwd=args.src)
        summ_small.take(s)
        if not args.skip_pflogsumm:
            p = run_timed(["pflogsumm", *map(str, files)], keep_stdout=False, env=env)
            pfl.take(p)
            p = run_timed(["pflogsumm", *map(str, small_files)], keep_stdout=False, env=env)
            pfl_small.take(p)

    report(args, logs, size, lines, small_size, small_lines, addresses, expected, grep,
           grep_lines, search, verdict, matched, summ, summ_small, pfl, pfl_small, summary_out,
           start)
    return 0


def report(args: argparse.Namespace, logs: dict[str, Path], size: int, lines: int,
           small_size: int, small_lines: int, addresses: list[str], expected: dict[str, Expected],
           grep: dict[str, Series], grep_lines: dict[str, int], search: dict[str, Series],
           verdict: dict[str, str], matched: dict[str, bool], summ: Series, summ_small: Series,
           pfl: Series, pfl_small: Series, summary_out: bytes, start: Series) -> None:
    n = args.runs
    say(f"## Local benchmark ({len(logs)} hosts, {size / MB:,.1f} MB, {lines:,} lines)")
    say()
    say(f"Machine at the start: {args.start_machine}; at the end: {machine_line()}. Other jobs may share the machine.")
    say(f"Warm page cache; every time is a whole process (start-up included), the median of "
        f"{n} runs taken in turns, [min–max]. MB = 10^6 bytes. Peak RSS: the largest "
        f"process (GNU time %M), and the sum over the process tree (sampled every 0.1 s) "
        f"when larger. collector ({args.source}) runs as "
        f"`{quoted(['python3', '-m', 'collector'])}` with a `transport = \"local\"` inventory.")
    say()
    say(table(["host", "file", "bytes"],
              [[h, "var/log/mail.log", f"{p.stat().st_size:,}"] for h, p in logs.items()]))
    say()
    say("### Search one recipient (all 4 files)")
    say()
    rows = []
    for a in addresses:
        g, s = grep[a], search[a]
        ratio = s.median / g.median
        rows.append([f"`{a}`", f"{grep_lines[a]:,}", g.span(), s.span(),
                     s.rss_text(), f"{ratio:.2f}× (≤ {target(a)}×: {check(ratio <= target(a))})",
                     ("match: " if matched[a] else "**MISMATCH**: ") + verdict[a]])
    say(table(["address", "grep lines", "`LC_ALL=C grep -F 'to=<ADDR>'` 4 files",
               "`collector search --to ADDR -f json`", "search peak RSS",
               "search / grep (target)", "rows vs truth.jsonl"], rows))
    say()
    say("### Full parse + assemble (`collector summary`) vs pflogsumm")
    say()
    rows = []
    for label, s, sz, ln in (("collector summary", summ, size, lines),
                             ("collector summary", summ_small, small_size, small_lines),
                             ("pflogsumm (the 4 files as arguments, read in turn)", pfl, size,
                              lines),
                             ("pflogsumm (the 4 files as arguments, read in turn)", pfl_small,
                              small_size, small_lines)):
        if not s.walls:
            continue
        rows.append([label, f"{sz / MB:,.0f} MB", s.span(), f"{sum(s.cpus) / len(s.cpus):.1f} s",
                     f"{sz / MB / s.median:.1f}", f"{ln / s.median / 1000:,.0f} k",
                     s.rss_text()])
    say(table(["what", "set", "wall", "cpu (mean)", "MB/s", "lines/s", "peak RSS"], rows))
    say()
    say("### Against the targets")
    say()
    rows = []
    for a in addresses:
        ratio = search[a].median / grep[a].median
        rows.append([f"search `{a}` ≤ {target(a)}× the grep pass", f"{ratio:.2f}×",
                     check(ratio <= target(a))])
    if pfl.walls:
        speed = (size / summ.median) / (size / pfl.median)
        rows.append([f"parse+assemble ≥ 2× pflogsumm MB/s ({size / MB:,.0f} MB)", f"{speed:.2f}×",
                     check(speed >= 2)])
        rows.append([f"peak RSS < pflogsumm's ({size / MB:,.0f} MB)",
                     f"{summ.peak_mib:.0f} vs {pfl.peak_mib:.0f} MiB",
                     check(summ.peak_mib < pfl.peak_mib)])
    flat = summ.peak_mib / summ_small.peak_mib
    rows.append([f"peak RSS flat ({size / MB:,.0f} MB ≤ {FLAT_FACTOR}× {small_size / MB:,.0f} MB)",
                 f"{summ.peak_mib:.0f} / {summ_small.peak_mib:.0f} MiB = {flat:.2f}×",
                 check(flat <= FLAT_FACTOR)])
    rows.append(["start-up ≤ 0.2 s (`collector --version`, whole process, median of "
                 f"{len(start.walls)})", start.span(), check(start.median <= 0.2)])
    say(table(["target", "measured", "verdict"], rows))
    say()
    say(f"`collector summary` output ({size / MB:,.0f} MB, last run):")
    say()
    say("```")
    say(summary_out.decode(errors="replace").rstrip())
    say("```")


if __name__ == "__main__":
    sys.exit(main())

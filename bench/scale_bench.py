#!/usr/bin/env python3
"""Scale benchmark: collector over N real sshd hosts against a bare `xargs -P ssh grep`.

Starts N sshd hosts (tests/sshfleet.py; needs root), each serving the same small mail log
(the Postfix lab's mx1 log, committed in tests/fixtures/lab), directly or all behind one
ProxyJump bastion that keeps OpenSSH's default ``MaxStartups 10:30:100``. For each size it
runs `collector search --to ADDR --workers N` and the bare fan-out
`xargs -P N ssh HOST LC_ALL=C grep -F 'to=<ADDR>' LOG` (OpenSSH's own client, ProxyJump
from the generated ssh_config), in turns, and prints how many hosts answered, the median
wall time, the ratio, collector's peak RSS and its peak of open file descriptors. Never fails on timing. See bench/README.md.

    python3 bench/scale_bench.py                      # 8, 32, 64, 100 hosts, then 64 behind a bastion
    python3 bench/scale_bench.py --hosts 64 --bastion
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "tests"))
sys.path.insert(0, str(BENCH.parent))

from _common import (
    COLLECTOR,
    MAIN_CF,
    MAIN_CF_AGE,
    REPO,
    Series,
    check,
    machine_line,
    main_cf,
    note,
    run_timed,
    say,
    table,
    use_source,
)
from sshfleet import Fleet, HostSpec

LOG_SOURCE = REPO / "tests" / "fixtures" / "lab" / "mx1" / "var" / "log" / "postfix-mx1.log"
#: "memory flat": the largest fleet's peak RSS within this factor of the smallest's.
FLAT_FACTOR = 1.25
LOG = "/var/log/mail.log"
ADDRESS = "alice@example.test"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1] if __doc__ else None)
    ap.add_argument("--hosts", default="8,32,64,100", help="fleet sizes, comma-separated")
    ap.add_argument("--bastion", action="store_true",
                    help="only: every host behind one bastion (default MaxStartups 10:30:100)")
    ap.add_argument("--bastion-hosts", type=int, default=64,
                    help="without --bastion: also this many hosts behind one bastion (0: none)")
    ap.add_argument("--runs", type=int, default=3, help="runs per figure (median reported)")
    ap.add_argument("--work", type=Path, help="scratch directory (default: a new temp dir)")
    ap.add_argument("--src", type=Path, default=REPO,
                    help="directory holding the collector package to measure")
    args = ap.parse_args(argv)
    source = use_source(args.src)
    work = Path(args.work or tempfile.mkdtemp(prefix="collector-many-hosts-")).resolve()
    rows: list[list[object]] = []
    jump_rows: list[list[object]] = []
    try:
        if not args.bastion:
            for size in (int(s) for s in args.hosts.split(",")):
                rows.append(measure(args, work / f"n{size}", size, bastion=False))
        jump = [int(s) for s in args.hosts.split(",")] if args.bastion else (
            [args.bastion_hosts] if args.bastion_hosts else [])
        for size in jump:
            jump_rows.append(measure(args, work / f"j{size}", size, bastion=True))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    headers = ["hosts", "collector answered", "bare ssh answered", "collector s", "bare ssh s",
               "ratio", "collector peak RSS", "collector peak fds"]
    say(f"## Scale ({source})")
    say()
    say(f"Machine: {machine_line()}. Each host: {LOG_SOURCE.stat().st_size:,} bytes of lab "
        f"log; `search --to {ADDRESS} --workers N`; median of {args.runs} runs, in turns.")
    for title, found in (("Direct hosts", rows), ("Behind one bastion (MaxStartups 10:30:100)",
                                                  jump_rows)):
        if found:
            say()
            say(f"### {title}")
            say()
            say(table(headers, [r[:-1] for r in found]))
    if len(rows) > 1:
        (small, *_), (large, *_) = rows[0], rows[-1]
        flat = float(rows[-1][-1]) / float(rows[0][-1])
        say()
        say(f"Memory flat: peak RSS at {large} hosts / at {small} hosts = {flat:.2f}x "
            f"(≤ {FLAT_FACTOR}x: {check(flat <= FLAT_FACTOR)}).")
    return 0


class FdPeak:
    """The most file descriptors any collector process held while it ran (from /proc)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> FdPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                    if b"collector\x00search" not in cmdline:
                        continue
                    self.peak = max(self.peak, len(os.listdir(f"/proc/{pid}/fd")))
                except OSError:
                    continue


def measure(args: argparse.Namespace, work: Path, size: int, *, bastion: bool) -> list[object]:
    names = [f"h{n:03d}" for n in range(1, size + 1)]
    specs = []
    if bastion:
        specs.append(HostSpec("gate", jump_only=True, sshd_extra=("MaxStartups 10:30:100",)))
    specs += [HostSpec(name, files={LOG: LOG_SOURCE, MAIN_CF: main_cf(name)},
                       mtimes={MAIN_CF: time.time() - MAIN_CF_AGE}, via="gate" if bastion else None)
              for name in names]
    note(f"starting {len(specs)} sshd hosts")
    fleet = Fleet(work / "fleet", specs)
    fleet.start()
    try:
        inv = work / "inventory.toml"
        inv.write_text(fleet.inventory_toml({n: {"timezone": "UTC"} for n in names}))
        ours = [*COLLECTOR, "search", "-i", str(inv), "--to", ADDRESS, "--workers", str(size),
                "--format", "json"]
        bare = ["sh", "-c",
                f"printf '%s\\n' {' '.join(names)} | xargs -P {size} -I{{}} "
                f"ssh -F {fleet.ssh_config} {{}} \"LC_ALL=C grep -F 'to=<{ADDRESS}>' {LOG}; "
                "echo answered\""]
        mine, theirs = Series("collector"), Series("bare")
        answered = bare_answered = fd_peak = 0
        for _ in range(args.runs):
            with FdPeak() as fds:
                run = run_timed(ours)
            fd_peak = max(fd_peak, fds.peak)
            mine.take(run)
            try:
                hosts = json.loads(run.stdout)["hosts"]
                answered = sum(1 for h in hosts if h.get("error") is None)
            except (ValueError, KeyError):
                answered = 0
            run = run_timed(bare)
            theirs.take(run)
            bare_answered = run.stdout.count(b"answered\n")
        ratio = mine.median / theirs.median
        verdict = (f"all answer: {check(answered == size)}" if bastion
                   else f"≤ 1.1x: {check(ratio <= 1.1)}")
        return [size, f"{answered}/{size}", f"{bare_answered}/{size}", f"{mine.median:.2f}",
                f"{theirs.median:.2f}", f"{ratio:.2f}x ({verdict})", mine.rss_text(), fd_peak,
                mine.peak_mib]
    finally:
        fleet.stop()


if __name__ == "__main__":
    raise SystemExit(main())

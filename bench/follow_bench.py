#!/usr/bin/env python3
"""follow over a day: the memory of ``collector follow`` while a day of fleet traffic is logged.

A generated day (genlog.py, e.g. ``-n 259200 --rate 3``: 3 messages a second for 24 h) is
appended, window by window of log time, to the (at first empty) logs of four local directory
hosts while ``collector follow`` follows them (``tail -n0 -F``, the same command as on an SSH
host). After each window the feeder waits until follow has printed a line of that window (it
keeps up; nothing piles up in a pipe), and every hour of log time it samples follow's VmRSS
(``/proc/PID/status``) and CPU time. It prints a Markdown table; it never fails on figures.

    python3 bench/follow_bench.py --data DIR [--max-open 2h] [--hours 24] [--window 300]
    python3 bench/follow_bench.py --generator genlog.py --work DIR
"""

from __future__ import annotations

import argparse
import calendar
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    REPO,
    generate,
    host_aliases,
    host_logs,
    machine_line,
    note,
    say,
    table,
    use_source,
)

# What the host side lets through: follow_command's grep -F of the Postfix syslog names
# (genlog's hosts log as postfix/...).
PATTERNS = (b"postfix/",)
_QID = re.compile(rb"\]: ([0-9A-Za-z]{5,}): ")


def _stamp(line: bytes) -> int | None:
    """Seconds of a BSD stamp (``Jan 15 12:34:56``) counted from day 0 of the month."""
    try:
        return (int(line[4:6]) * 86400 + int(line[7:9]) * 3600 + int(line[10:12]) * 60
                + int(line[13:15]))
    except ValueError:
        return None


def windows(path: Path, width: int) -> Iterator[tuple[int, list[bytes]]]:
    """A log's lines, cut into windows of ``width`` seconds of log time (window index)."""
    current: int | None = None
    chunk: list[bytes] = []
    with path.open("rb") as f:
        for line in f:
            t = _stamp(line)
            w = current if t is None else t // width
            if current is not None and w != current and chunk:
                yield current, chunk
                chunk = []
            current = w
            chunk.append(line)
    if chunk and current is not None:
        yield current, chunk


class Follow:
    """``collector follow`` running, its output counted as it comes."""

    def __init__(self, inventory: Path, max_open: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "collector", "follow", "-i", str(inventory),
             "--max-open", max_open],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines = 0
        self.latest = ""  # the time of the latest line printed (ISO text)
        self.err: list[str] = []
        threading.Thread(target=self._out, daemon=True).start()
        threading.Thread(target=self._err, daemon=True).start()

    def _out(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines += 1
            when = raw[:19].decode(errors="replace")
            if when > self.latest:
                self.latest = when
    def _err(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.err.append(raw.decode(errors="replace").rstrip())

    def status(self) -> tuple[float, float, float]:
        """VmRSS and VmHWM (MiB), CPU seconds (user + system) of the follow process."""
        fields = {}
        for row in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = row.partition(":")
            fields[key] = value.strip()
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
        return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024,
                cpu)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(30)


def layout(root: Path, aliases: dict[str, list[str]]) -> tuple[Path, dict[str, Path]]:
    """ROOT/HOST/var/log/mail.log, empty, per host, and the inventory naming them."""
    parts = ['[defaults]\ntransport = "local"\ntimezone = "UTC"\n']
    logs = {}
    for name, alias in aliases.items():
        log = root / name / "var" / "log" / "mail.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_bytes(b"")
        logs[name] = log
        parts.append(f'[[hosts]]\nname = "{name}"\nroot = {json.dumps(str(root / name))}\n'
                     f"aliases = {json.dumps(alias)}\n")
    inv = root / "inventory.toml"
    inv.write_text("\n".join(parts))
    return inv, logs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="a genlog.py output directory")
    ap.add_argument("--generator", type=Path, help="genlog.py, to generate the day")
    ap.add_argument("--work", type=Path, help="scratch directory (default: a temporary one)")
    ap.add_argument("--max-open", default="2h", help="follow's --max-open (default 2h)")
    ap.add_argument("--hours", type=float, default=24.0, help="hours of log time to feed")
    ap.add_argument("--window", type=int, default=300, help="seconds of log time per append")
    ap.add_argument("--src", type=Path, default=REPO, help="the collector package to measure")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        data = args.data
        if data is None:
            if args.generator is None:
                ap.error("give --data or --generator")
            data = (args.work or work) / "data"
            generate(args.generator, data, ["-n", "259200", "--rate", "3"])
        return bench(args, data, work)


def bench(args: argparse.Namespace, data: Path, work: Path) -> int:
    sources = host_logs(data)
    aliases = host_aliases(sources)
    inv, logs = layout(work / "fleet", aliases)
    use_source(args.src)  # sets PYTHONPATH (it returns a description of the source)
    env = dict(os.environ)
    follow = Follow(inv, args.max_open, env)
    time.sleep(3)  # the readers start: tail -n0 shows only what is appended after
    feeds = {h: windows(p, args.window) for h, p in sources.items()}
    pending: dict[str, tuple[int, list[bytes]] | None] = {h: next(f, None) for h, f in
                                                          feeds.items()}
    max_open = _span(args.max_open)
    opened: dict[tuple[str, bytes], int] = {}  # queue files open in the lines fed: start
    rows: list[list[object]] = []
    fed = passed = passed_bytes = fed_bytes = 0
    start_t: int | None = None
    next_sample = 3600
    began = time.monotonic()
    stalls = 0
    while any(pending.values()):
        w = min(p[0] for p in pending.values() if p is not None)
        if start_t is None:
            start_t = w * args.window
        hour_end = w * args.window + args.window - start_t
        if hour_end > args.hours * 3600:
            break
        for host, item in pending.items():
            if item is None or item[0] != w:
                continue
            chunk = item[1]
            blob = b"".join(chunk)
            with logs[host].open("ab") as f:
                f.write(blob)
            fed += len(chunk)
            fed_bytes += len(blob)
            for line in chunk:
                if any(p in line for p in PATTERNS):
                    passed += 1
                    passed_bytes += len(line)
                _track(opened, host, line)
            pending[host] = next(feeds[host], None)
        # wait until follow has shown a line of the window's last minute: it keeps up
        t_end = (w + 1) * args.window - 60
        wanted = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(_epoch(data, t_end)))
        deadline = time.monotonic() + 120
        while follow.latest < wanted and time.monotonic() < deadline:
            if follow.proc.poll() is not None:
                raise SystemExit(f"follow ended: {follow.err[-5:]}")
            time.sleep(0.05)
        if follow.latest < wanted:
            stalls += 1
        if hour_end >= next_sample:
            now_t = t_end + args.window
            open_now = sum(1 for s in opened.values() if s >= now_t - max_open)
            rss, hwm, cpu = follow.status()
            rows.append([f"{hour_end / 3600:.0f}", f"{fed:,}", f"{len(opened):,}",
                         f"{open_now:,}", f"{follow.lines:,}", f"{rss:.1f}", f"{hwm:.1f}",
                         f"{cpu:.0f}"])
            note(" | ".join(str(c) for c in rows[-1]))
            next_sample += 3600
    time.sleep(5)
    rss, hwm, cpu = follow.status()
    code = follow.stop()
    wall = time.monotonic() - began
    say(f"### follow over a day: `collector follow --max-open {args.max_open}`\n")
    say(f"{machine_line()}\n")
    say(table(["log hours fed", "lines fed", "queue files open in the log",
               "... of them within --max-open", "lines printed", "RSS MiB", "peak RSS MiB",
               "CPU s"], rows))
    say("")
    say(f"- fed {fed:,} lines ({fed_bytes / 1e6:,.0f} MB) in {wall:.0f} s "
        f"({fed / wall:,.0f} lines/s); follow's CPU {cpu:.0f} s; "
        f"{stalls} windows where follow had not shown a line of the window within 120 s")
    say(f"- the filtered tail stream (lines holding {', '.join(p.decode() for p in PATTERNS)})"
        f": {passed:,} lines, {passed_bytes:,} bytes = {passed_bytes / max(fed, 1):.1f} "
        f"bytes per logged line, {passed_bytes / max(passed, 1):.1f} per Postfix line "
        "(+ one heartbeat line per host every 10 s)")
    say(f"- at the end: RSS {rss:.1f} MiB, peak {hwm:.1f} MiB; exit code after SIGINT {code}; "
        f"stderr lines {len(follow.err)}")
    for e in follow.err[:5]:
        say(f"  - stderr: `{e}`")
    return 0


def _track(opened: dict[tuple[str, bytes], int], host: str, line: bytes) -> None:
    """Queue files open in the lines fed: from client=/pickup uid= to qmgr's removed."""
    if b": client=" in line or b": uid=" in line:
        m = _QID.search(line)
        t = _stamp(line)
        if m and t is not None:
            opened.setdefault((host, m.group(1)), t)
    elif line.endswith(b": removed\n"):
        m = _QID.search(line)
        if m:
            opened.pop((host, m.group(1)), None)


def _span(text: str) -> int:
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return int(float(text[:-1]) * unit[text[-1]]) if text[-1] in unit else int(text)


_EPOCH_BASE: dict[Path, float] = {}


def _epoch(data: Path, t: int) -> float:
    """Epoch seconds of a window start (genlog's month; the year as follow places it)."""
    base = _EPOCH_BASE.get(data)
    if base is None:
        first = next(iter(host_logs(data).values())).open("rb").readline()
        month = first[:3].decode()
        number = datetime.strptime(month, "%b").month
        now = datetime.now(UTC)
        year = now.year if number <= now.month else now.year - 1
        base = _EPOCH_BASE[data] = calendar.timegm((year, number, 1, 0, 0, 0, 0, 0, 0))
    return base + t - 86400  # day 1 of the month is t = 86400


if __name__ == "__main__":
    raise SystemExit(main())

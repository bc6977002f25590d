"""Helpers shared by the benchmark scripts: timing child processes, data layout, ground truth.

Benchmarks print measured figures; nothing here judges them.
"""

from __future__ import annotations

import calendar
import compileall
import io
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MB = 1_000_000
MIB = 1024 * 1024

#: The collector CLI as a child process, run in the source directory (the checkout by
#: default, not whatever is installed; ``--src`` pins a copy while the checkout moves on).
COLLECTOR = [sys.executable, "-m", "collector"]


def use_source(src: Path) -> str:
    """Make ``src`` (a directory holding the ``collector`` package) the code measured."""
    src = src.resolve()
    if not (src / "collector" / "__init__.py").is_file():
        raise SystemExit(f"no collector package in {src}")
    os.environ["PYTHONPATH"] = str(src)
    sys.path.insert(0, str(src))
    # Byte-compiled, as `pip install` leaves it (and as a first run leaves a checkout): else
    # each run under PYTHONDONTWRITEBYTECODE=1 would compile every module again (~0.08 s).
    compileall.compile_dir(str(src / "collector"), quiet=1)
    head = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=False)
    if head.returncode == 0 and Path(src / ".git").exists():
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "collector"],
                               capture_output=True, text=True, check=False).stdout.strip()
        return f"{src.name} at commit {head.stdout.strip()}{' (modified)' if dirty else ''}"
    return str(src)
#: GNU time (Debian package ``time``): peak RSS and CPU of one command.
TIME = "/usr/bin/time"
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024

_BSD_STAMP = re.compile(rb"^([A-Z][a-z]{2}) +(\d{1,2}) (\d\d):(\d\d):(\d\d)")
_ISO_STAMP = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d))")
_MONTHS = {m: i for i, m in enumerate(calendar.month_abbr) if m}


@dataclass(frozen=True, slots=True)
class Run:
    """One finished child process: wall time, CPU, peak RSS and what it printed."""

    argv: tuple[str, ...]
    wall: float
    cpu: float
    maxrss_kib: int  # the largest single process (GNU time's %M)
    tree_rss_kib: int  # the largest sum over the process tree, sampled every 0.1 s
    code: int
    out_bytes: int
    out_lines: int
    stdout: bytes
    stderr: bytes


def _tree_rss_kib(root: int) -> int:
    """Sum of the current RSS of ``root`` and all its descendants (from /proc)."""
    parent: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry)
        parent[pid] = int(fields[1])
        rss[pid] = int(fields[21]) * PAGE_KIB
    total = 0
    for pid, kib in rss.items():
        p = pid
        while p > 1:
            if p == root:
                total += kib
                break
            p = parent.get(p, 0)
    return total


def run_timed(argv: Sequence[str], *, keep_stdout: bool = True, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> Run:
    """Run one command with stdout read through a pipe (never /dev/null: grep stops early).

    Peak RSS comes from GNU time (``%M``) wrapped around the command: ``wait4`` here would
    report this benchmark's own RSS, which a child inherits across fork and exec.
    """
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as rss:
        began = time.perf_counter()
        proc = subprocess.Popen([TIME, "-f", "%M %U %S", "-o", rss.name, *argv],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                                env=env, cwd=cwd)
        out = proc.stdout
        assert isinstance(out, io.BufferedReader)
        tree_peak = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.1):
                tree_peak[0] = max(tree_peak[0], _tree_rss_kib(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        chunks: list[bytes] = []
        size = lines = 0
        for chunk in iter(lambda: out.read1(1 << 16), b""):
            size += len(chunk)
            lines += chunk.count(b"\n")
            if keep_stdout:
                chunks.append(chunk)
        code = proc.wait()
        wall = time.perf_counter() - began
        done.set()
        sampler.join()
        out.close()
        err.seek(0)
        stderr = err.read()
        # GNU time writes "Command exited with non-zero status N" first when N != 0.
        last = (rss.read().strip().splitlines() or ["0 0 0"])[-1].split()
    maxrss, user, system = int(last[0]), float(last[1]), float(last[2])
    return Run(tuple(argv), wall, user + system, maxrss, tree_peak[0], code, size, lines,
               b"".join(chunks), stderr)


def run_parallel(commands: Sequence[Sequence[str]]) -> tuple[float, list[Run]]:
    """Start every command at once, read all their outputs; wall time until the last ends."""
    results: list[Run | None] = [None] * len(commands)

    def one(i: int) -> None:
        results[i] = run_timed(commands[i], keep_stdout=False)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(commands))]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    return wall, [r for r in results if r is not None]


@dataclass(slots=True)
class Series:
    """Repeated measurements of one thing (median reported, min–max kept)."""

    name: str
    walls: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    tree_kib: list[int] = field(default_factory=list)

    def add(self, wall: float, rss_kib: int = 0, cpu: float = 0.0, tree_kib: int = 0) -> None:
        self.walls.append(wall)
        self.rss_kib.append(rss_kib)
        self.cpus.append(cpu)
        self.tree_kib.append(tree_kib)

    def take(self, run: Run) -> None:
        self.add(run.wall, run.maxrss_kib, run.cpu, run.tree_rss_kib)

    @property
    def tree_mib(self) -> float:
        return max(self.tree_kib) / 1024

    @property
    def peak_mib(self) -> float:
        """Memory the run needed: the larger of the biggest process and the tree's sum."""
        return max(self.rss_mib, self.tree_mib)

    def rss_text(self) -> str:
        """Largest process, and the sampled sum over the process tree when it is larger."""
        if self.tree_mib > self.rss_mib * 1.1:
            return f"{self.rss_mib:.0f} MiB (tree {self.tree_mib:.0f} MiB)"
        return f"{self.rss_mib:.0f} MiB"

    @property
    def median(self) -> float:
        return statistics.median(self.walls)

    @property
    def rss_mib(self) -> float:
        return max(self.rss_kib) / 1024

    def span(self) -> str:
        return f"{self.median:.3f} s [{min(self.walls):.3f}–{max(self.walls):.3f}]"


#: Where a bench host's main.cf is, and its mtime: a day old. (Postfix waits while main.cf
#: is less than a second old, re-reading it: a fresh file would slow the first run.)
MAIN_CF = "/etc/postfix/main.cf"
MAIN_CF_AGE = 86400.0


def main_cf(name: str) -> str:
    """A Postfix server's /etc/postfix/main.cf, as every real one has (discovery asks
    postconf; logs to syslog, the genlog files' /var/log/mail.log). Give it the mtime
    ``time.time() - MAIN_CF_AGE``."""
    return (f"myhostname = {name}.example.com\nmydomain = example.com\n"
            "compatibility_level = 3.6\ninet_interfaces = all\n")


def check(cond: bool) -> str:
    return "met" if cond else "**missed**"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table."""
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def say(text: str = "") -> None:
    print(text, flush=True)


def note(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def quoted(argv: Sequence[str]) -> str:
    return shlex.join(argv)


# --------------------------------------------------------------------------- data


def generate(generator: Path, out: Path, args: Sequence[str]) -> None:
    """Run the fleet-log generator into ``out`` unless a finished set is already there."""
    stamp = out / "bench-args.json"
    wanted = json.dumps(list(args))
    if (out / "truth.jsonl").is_file() and stamp.is_file() and stamp.read_text() == wanted:
        note(f"reusing generated data in {out}")
        return
    note(f"generating {' '.join(args)} into {out} (takes a while)")
    began = time.perf_counter()
    subprocess.run([sys.executable, str(generator), "-o", str(out), *args], check=True,
                   stdout=subprocess.DEVNULL)
    stamp.write_text(wanted)
    note(f"generated in {time.perf_counter() - began:.1f} s")


def host_logs(data: Path) -> dict[str, Path]:
    """``HOST.log`` files of a generated directory, by host name."""
    logs = {p.stem: p for p in sorted(data.glob("*.log"))}
    if not logs:
        raise SystemExit(f"no HOST.log files in {data}")
    return logs


def line_time(line: bytes, now: float) -> float | None:
    """Epoch seconds of a BSD (yearless, read as UTC) or RFC 3339 syslog line."""
    m = _BSD_STAMP.match(line)
    if m:
        mon, day, hh, mm, ss = m.groups()
        year = time.gmtime(now).tm_year
        when = 0.0
        # A yearless stamp is the latest such time not after tomorrow (as syslog readers do).
        for candidate in (year, year - 1):
            when = calendar.timegm((candidate, _MONTHS[mon.decode()], int(day), int(hh),
                                    int(mm), int(ss), 0, 0, 0))
            if when <= now + 86400:
                return when
        return when
    iso = _ISO_STAMP.match(line)
    if iso:
        return datetime.fromisoformat(iso.group(1).decode()).timestamp()
    return None


def last_line_time(path: Path, now: float | None = None) -> float:
    """Time of a log's last timestamped line (read from its tail only)."""
    now = time.time() if now is None else now
    size = path.stat().st_size
    with path.open("rb") as f:
        f.seek(max(0, size - 65536))
        tail = f.read()
    for line in reversed(tail.splitlines()):
        when = line_time(line, now)
        if when is not None:
            return when
    raise SystemExit(f"{path}: no timestamped line at its end")


_PEER = re.compile(rb"(?:relay=|connect from |client=)([A-Za-z0-9.-]+)\[([0-9a-fA-F.:]+)\]")


def host_aliases(logs: dict[str, Path], probe_bytes: int = 20 * MB) -> dict[str, list[str]]:
    """Each host's FQDN and IP as the other fleet hosts' logs name it (relay=, client=).

    Only names in the fleet's own domain count (remote MTAs called ``mx1.*`` are not our
    mx1): the domain is the one most peer names of fleet hosts use. Read from the logs' heads.
    """
    names = set(logs)
    pairs: dict[tuple[str, str], int] = {}
    for host, path in logs.items():
        with path.open("rb") as f:
            head = f.read(probe_bytes)
        for m in _PEER.finditer(head):
            fqdn, ip = m.group(1).decode(), m.group(2).decode()
            short, _, domain = fqdn.partition(".")
            if short in names and short != host and domain:
                pairs[(fqdn, ip)] = pairs.get((fqdn, ip), 0) + 1
    domains: dict[str, int] = {}
    for (fqdn, _), n in pairs.items():
        domain = fqdn.partition(".")[2]
        domains[domain] = domains.get(domain, 0) + n
    found: dict[str, set[str]] = {h: set() for h in logs}
    if domains:
        home = max(domains, key=lambda d: domains[d])
        for fqdn, ip in pairs:
            short, _, domain = fqdn.partition(".")
            if domain == home:
                found[short].update((fqdn, ip))
    return {h: sorted(v) for h, v in found.items()}


def copy_head(src: Path, dst: Path, size: int) -> None:
    """The first ``size`` bytes of a log, cut back to a whole line."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with src.open("rb") as f, dst.open("wb") as out:
        left = size
        while left > 0:
            chunk = f.read(min(left, 1 << 22))
            if not chunk:
                break
            left -= len(chunk)
            if left <= 0:
                chunk = chunk[: chunk.rfind(b"\n") + 1]
            out.write(chunk)


def place(src: Path, dst: Path) -> None:
    """Put a log at ``dst``: a hard link when possible (no 1 GB copy), else a copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        import shutil

        shutil.copyfile(src, dst)


def warm(paths: Iterable[Path]) -> None:
    """Read files once so every measurement sees them in the page cache."""
    for p in paths:
        with p.open("rb") as f:
            while f.read(1 << 24):
                pass


# --------------------------------------------------------------------------- ground truth


@dataclass(frozen=True, slots=True)
class Expected:
    """What a search for one recipient must return, from truth.jsonl."""

    address: str
    messages: int
    rows: Counter[tuple[str, str | None]]  # (host, queue ID or None for a reject) -> rows
    ids: dict[str, set[str]]  # host -> queue IDs of the address's messages
    #: (host, queue ID) -> rows the generator's log adds to the truth (see ``split_recipients``)
    split: Counter[tuple[str, str | None]] = field(default_factory=Counter)


def expected_for(truth: Path, address: str, logs: dict[str, Path]) -> Expected:
    """Rows one (host, queue ID, recipient) each: one per hop of every message to ``address``.

    Messages come from truth.jsonl. Reject rows (no queue ID) are counted in the logs:
    ``NOQUEUE: reject`` lines naming ``to=<address>``, since postscreen's DNSBL rejects are
    background noise the truth file does not list as messages.
    """
    rows: Counter[tuple[str, str | None]] = Counter()
    ids: dict[str, set[str]] = {}
    messages = 0
    needle = f'"{address}"'
    with truth.open() as f:
        for line in f:
            if needle not in line:
                continue
            rec = json.loads(line)
            if address not in rec.get("recipients", ()) or rec["kind"] == "noqueue":
                continue
            messages += 1
            for host, qid in rec["hops"]:
                rows[(host, qid)] += 1
                ids.setdefault(host, set()).add(qid)
    for host, path in logs.items():
        done = subprocess.run(
            ["sh", "-c", 'grep -F -e "$1" -- "$2" | grep -c -F "NOQUEUE: reject"', "sh",
             f"to=<{address}>", str(path)],
            capture_output=True, env=dict(os.environ, LC_ALL="C"), check=False,
        )
        n = int(done.stdout or 0)
        if n:
            rows[(host, None)] += n
    return Expected(address, messages, rows, ids, split_recipients(logs, address, ids))


def split_recipients(logs: dict[str, Path], address: str,
                     ids: dict[str, set[str]]) -> Counter[tuple[str, str | None]]:
    """Recipients the generator's log makes two of: ``orig_to=`` on the first attempt only.

    genlog.py writes ``orig_to=<O>`` on a recipient's first delivery line (final delivery on
    a mailbox host) but not on its retries, and truth.jsonl does not record ``orig_to`` at
    all. Postfix itself logs ``orig_to=`` on every attempt (qmgr reads the original recipient
    record of the queue file with each recipient, ``log_adhoc`` prints it whenever it differs
    from ``to``), and keeps one recipient per (original, final) address pair: the same
    ``to=`` with and without ``orig_to=`` in one queue ID is two recipients (the address
    reached directly and through an alias), each with its own delivery lines. collector
    reads it so, one row each, as the log says: on these files such a recipient is one more
    row than the truth lists. Only that exact shape counts here (the address's first line of
    the queue ID has ``orig_to=<O>``, every later one has none); the comparison reports the
    number apart, so a real extra row still shows as one.
    """
    line = re.compile(r" ([0-9A-Za-z]+): to=<" + re.escape(address)
                      + r">(?:, orig_to=<([^>]*)>)?, ", re.IGNORECASE)
    split: Counter[tuple[str, str | None]] = Counter()
    for host, wanted in ids.items():
        done = subprocess.run(
            ["grep", "-F", "-i", "-e", f"to=<{address}>,", "--", str(logs[host])],
            capture_output=True, env=dict(os.environ, LC_ALL="C"), check=False,
        )
        origs: dict[str, list[str | None]] = {}
        for raw in done.stdout.decode("utf-8", "replace").splitlines():
            m = line.search(raw)
            if m and m.group(1) in wanted:
                origs.setdefault(m.group(1), []).append(m.group(2))
        for qid, seq in origs.items():
            if seq[0] is not None and len(seq) > 1 and all(o is None for o in seq[1:]):
                split[(host, qid)] += 1
    return split


def compare_rows(expected: Expected, payload: dict[str, object]) -> tuple[bool, str]:
    """Compare ``collector search -f json`` rows for the address with the truth."""
    results = payload.get("results", [])
    assert isinstance(results, list)
    got: Counter[tuple[str, str | None]] = Counter()
    addr = expected.address.lower()
    for r in results:
        if (r.get("to") or "").lower() == addr or (r.get("orig_to") or "").lower() == addr:
            got[(r["host"], r.get("queue_id"))] += 1
    want = expected.rows + expected.split
    total_got = sum(got.values())
    truth_n, split_n = sum(expected.rows.values()), sum(expected.split.values())
    said = f"truth {truth_n}" + (
        f" + {split_n} recipient{'s' if split_n != 1 else ''} the generator splits"
        f" (orig_to= on the first attempt only, "
        f"e.g. {sorted(expected.split, key=str)[:3]})" if split_n else "")
    if got == want and len(results) == total_got:
        return True, f"{total_got} rows = {said}"
    missing = want - got
    extra = got - want
    other = len(results) - total_got
    parts = [f"{total_got} rows vs {said}"]
    if missing:
        parts.append(f"{sum(missing.values())} missing (e.g. {sorted(missing, key=str)[:3]})")
    if extra:
        parts.append(f"{sum(extra.values())} extra (e.g. {sorted(extra, key=str)[:3]})")
    if other:
        parts.append(f"{other} rows for other recipients")
    return False, "; ".join(parts)


def answer_bytes(logs: dict[str, Path], expected: Expected, address: str) -> tuple[int, int]:
    """Bytes and lines of every log line of the address's messages (and its rejects).

    The ideal output of a two-pass search: each line whose queue-ID field is one of the
    message's IDs on that host, plus the NOQUEUE reject lines that name the address. Counted
    with awk's hash lookup (a Python line loop is far slower on GBs).
    """
    prog = (
        'NR == FNR { want[$1 ":"] = 1; next } '
        '{ hit = 0; for (i = 4; i <= 7 && i <= NF; i++) if ($i in want) { hit = 1; break }; '
        '  if (!hit && index($0, "NOQUEUE: reject") && index($0, rej)) hit = 1; '
        '  if (hit) { n += length($0) + 1; c++ } } '
        'END { print n + 0, c + 0 }'
    )
    total = lines = 0
    with tempfile.TemporaryDirectory() as tmp:
        for host, path in logs.items():
            ids = Path(tmp) / f"{host}.ids"
            ids.write_text("".join(f"{q}\n" for q in sorted(expected.ids.get(host, ()))) or "\n")
            out = subprocess.run(
                ["awk", "-v", f"rej=to=<{address}>", prog, str(ids), str(path)],
                check=True, capture_output=True, env=dict(os.environ, LC_ALL="C"),
            ).stdout.split()
            total += int(out[0])
            lines += int(out[1])
    return total, lines


def machine_line() -> str:
    load = os.getloadavg()
    return (f"nproc {os.cpu_count()}, load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}"
            f" (1/5/15 min), {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")

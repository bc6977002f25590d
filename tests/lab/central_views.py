"""The same lines seen through each layout of a central-mode lab output (``run --central``).

``OUT/<host>/var/log/...`` is what each host wrote itself; ``OUT/loghost/...`` is what the log
host received. These readers turn every layout into per-host lists of lines, so a test can
compare them: same lines, same order, none lost, none doubled.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .postfix_lab import (
    LOGHOST_COMBINED,
    LOGHOST_COMBINED_ISO,
    LOGHOST_JOURNAL_DIR,
    LOGHOST_PER_HOST,
)


@dataclass(frozen=True, slots=True)
class Line:
    stamp: str  # as written: "Dec  2 17:28:13" or "2026-12-02T17:28:13.527500+00:00"
    host: str
    text: str  # "tag[pid]: message", the part every layout must carry unchanged


def syslog_lines(path: Path) -> list[Line]:
    """The lines of a traditional (BSD) or RFC 3339 syslog file."""
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        if raw[:1].isdigit():
            stamp, host, text = raw.split(" ", 2)
        else:
            stamp, (host, text) = raw[:15], raw[16:].split(" ", 1)
        lines.append(Line(stamp, host, text))
    return lines


def by_host(lines: list[Line]) -> dict[str, list[Line]]:
    grouped: dict[str, list[Line]] = {}
    for line in lines:
        grouped.setdefault(line.host, []).append(line)
    return grouped


def own_lines(out: Path) -> dict[str, list[Line]]:
    """Each host's own log (the per-host truth), by host name."""
    expected = json.loads((out / "expected.json").read_text())
    return {name: syslog_lines(out / name / host["log"]["path"].lstrip("/"))
            for name, host in expected["hosts"].items()}


def loghost_files(out: Path) -> dict[str, dict[str, list[Line]]]:
    """The log host's syslog layouts (relative path -> host -> lines)."""
    root = out / "loghost"
    views = {rel: by_host(syslog_lines(root / rel))
             for rel in (LOGHOST_COMBINED, LOGHOST_COMBINED_ISO)}
    for path in sorted((root / "var/log/remote").iterdir()):
        rel = LOGHOST_PER_HOST.format(host=path.name)
        views[rel] = by_host(syslog_lines(root / rel))
    return views


def journal_lines(journal_dir: Path) -> dict[str, list[Line]]:
    """What ``journalctl -D`` gives for the log host's journal files, by _HOSTNAME.

    The stamp is journalctl's own ``short-iso-precise`` rendering of __REALTIME_TIMESTAMP,
    the text is SYSLOG_IDENTIFIER[_PID]: MESSAGE.
    """
    def journalctl(*args: str) -> list[str]:
        proc = subprocess.run(["journalctl", "-D", str(journal_dir), "--no-pager", "-q", *args],
                              capture_output=True, text=True, check=True, timeout=60)
        return [line for line in proc.stdout.splitlines() if not line.startswith("-- ")]

    entries: list[dict[str, Any]] = [json.loads(line) for line in journalctl("-o", "json")]
    short = journalctl("-o", "short-iso-precise")
    assert len(short) == len(entries), (len(short), len(entries))
    grouped: dict[str, list[Line]] = {}
    for entry, rendered in zip(entries, short, strict=True):
        stamp, host, _ = rendered.split(" ", 2)
        assert host == entry["_HOSTNAME"], (rendered, entry["_HOSTNAME"])
        text = f"{entry['SYSLOG_IDENTIFIER']}[{entry['_PID']}]: {entry['MESSAGE']}"
        realtime = datetime.fromisoformat(stamp)
        assert int(entry["__REALTIME_TIMESTAMP"]) == round(realtime.timestamp() * 1_000_000)
        grouped.setdefault(host, []).append(Line(stamp, host, text))
    return grouped


def loghost_journal_dir(out: Path) -> Path:
    return out / "loghost" / LOGHOST_JOURNAL_DIR


def same_instant(iso: str, other: str) -> bool:
    """An RFC 3339 stamp and another rendering (RFC 3339, journalctl's, or BSD) of one time."""
    when = datetime.fromisoformat(iso)
    if other[:1].isdigit():
        return datetime.fromisoformat(other) == when
    return when.strftime("%b %e %H:%M:%S") == other

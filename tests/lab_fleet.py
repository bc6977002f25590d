"""The Postfix lab's real logs as a fleet of local hosts: what several test modules share.

The lab (tests/lab/) ran a real Postfix relay chain; its logs and ground truth are
tests/fixtures/lab/. Each host's directory is copied to a temporary root with a
``collector-manifest.json`` of the logs' original mtimes (what scripts/build_demo.py does), so
the year of a syslog stamp comes out right.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from collector.models import Host, TransportKind
from collector.search.view import MANIFEST

LAB = Path(__file__).parent / "fixtures" / "lab"
EXPECTED: dict[str, Any] = json.loads((LAB / "expected.json").read_text(encoding="utf-8"))
MTIMES: dict[str, float] = json.loads((LAB / "mtimes.json").read_text(encoding="utf-8"))
HOSTS = tuple(EXPECTED["hosts"])
SCENARIOS: dict[str, dict[str, Any]] = {s["name"]: s for s in EXPECTED["scenarios"]}


def log_path(name: str) -> str:
    """The host path of a lab host's log (``/var/log/...``)."""
    return str(EXPECTED["hosts"][name]["log"]["path"])


def copy_lab_host(
    dest: Path, name: str, lab: Path = LAB, mtimes: dict[str, float] = MTIMES
) -> Path:
    """``dest/name``: the lab host's etc/ and var/, with a manifest of the original mtimes.

    ``lab``/``mtimes``: another scenario set of the lab (e.g. fixtures/lab/hostile).
    """
    root = dest / name
    files: dict[str, dict[str, float | int]] = {}
    for path in sorted((lab / name).rglob("*")):
        rel = path.relative_to(lab / name)
        if not path.is_file() or rel.parts[0] not in ("etc", "var"):
            continue
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        key = f"{name}/{rel.as_posix()}"
        if key in mtimes:
            files["/" + rel.as_posix()] = {"mtime": mtimes[key], "size": path.stat().st_size}
    write_manifest(root, name, files)
    return root


def write_manifest(root: Path, name: str, files: dict[str, dict[str, float | int]]) -> None:
    (root / MANIFEST).write_text(json.dumps({"host": name, "files": files}), encoding="utf-8")


def lab_host(root: Path, name: str) -> Host:
    info = EXPECTED["hosts"][name]
    return Host(
        name=name,
        transport=TransportKind.LOCAL,
        root=str(root),
        timezone="UTC",
        aliases=(info["fqdn"], info["ip"]),
    )


def build_lab_fleet(dest: Path, extra: str = "", lab: Path = LAB) -> Path:
    """The four lab hosts under ``dest`` and ``dest/inventory.toml`` naming them (local).

    ``lab``: the directory of a scenario set (its own expected.json and mtimes.json).
    """
    expected = EXPECTED if lab == LAB else json.loads((lab / "expected.json").read_text("utf-8"))
    mtimes = MTIMES if lab == LAB else json.loads((lab / "mtimes.json").read_text("utf-8"))
    lines = ["[defaults]", 'transport = "local"', 'timezone = "UTC"', ""]
    for name in expected["hosts"]:
        copy_lab_host(dest, name, lab, mtimes)
        info = expected["hosts"][name]
        lines += [
            "[[hosts]]",
            f'name = "{name}"',
            f'root = "{name}"',
            f'aliases = ["{info["fqdn"]}", "{info["ip"]}"]',
            "",
        ]
    inventory = dest / "inventory.toml"
    inventory.write_text("\n".join(lines) + extra, encoding="utf-8")
    return inventory


#: Layouts of a central log host: where its syslog receiver writes each host's lines, and
#: the ``logs`` globs that read them (None: discovery finds the file by itself).
CENTRAL_LAYOUTS: dict[str, tuple[str, list[str] | None]] = {
    "combined": ("/var/log/mail.log", None),
    "remote": ("/var/log/remote/{host}/mail.log", ["/var/log/remote/*/mail.log"]),
    "hosts": ("/var/log/hosts/{host}/postfix.log", ["/var/log/hosts/*/*.log"]),
}


def lab_lines(lab: Path = LAB, names: tuple[str, ...] | None = None) -> list[tuple[float, str]]:
    """Every lab host's log lines with their time (seconds), merged in time order (a line
    keeps its place among its own host's lines: the sort is stable)."""
    from datetime import UTC, datetime

    from collector.logs.parse import TimeContext, parse_line

    expected = EXPECTED if lab == LAB else json.loads((lab / "expected.json").read_text("utf-8"))
    mtimes = MTIMES if lab == LAB else json.loads((lab / "mtimes.json").read_text("utf-8"))
    out: list[tuple[float, str]] = []
    for name in names or tuple(expected["hosts"]):
        rel = expected["hosts"][name]["log"]["path"].lstrip("/")
        ctx = TimeContext(UTC, datetime.fromtimestamp(mtimes[f"{name}/{rel}"], UTC))
        when = 0.0
        for line in (lab / name / rel).read_text(encoding="utf-8").splitlines():
            rec = parse_line(line, ctx)
            when = rec.time.timestamp() if rec is not None else when
            out.append((when, line))
    out.sort(key=lambda pair: pair[0])
    return out


def build_central_fleet(
    dest: Path, layout: str = "combined", *, collects: str = "names", lab: Path = LAB,
    lines: list[tuple[float, str]] | None = None, extra: str = "", receiver: Path | None = None,
) -> Path:
    """The lab's four hosts as one central log host ``loghost`` (a directory) carrying them
    (``collects`` = ``names``: the four by name, ``star``: ``["*"]``), ``dest/inventory.toml``.

    ``lines``: the (time, line) pairs its receiver wrote (default: the lab's, merged);
    ``receiver``: instead, the root a real syslog receiver wrote ``layout`` under (copied).
    """
    expected = EXPECTED if lab == LAB else json.loads((lab / "expected.json").read_text("utf-8"))
    pattern, logs = CENTRAL_LAYOUTS[layout]
    root = dest / "loghost"
    if receiver is not None:
        shutil.copytree(receiver, root)
        merged = []
    else:
        merged = lab_lines(lab) if lines is None else lines
    per_file: dict[str, list[str]] = {}
    for _, line in merged:
        words = line.split()
        host = words[1] if line[:4].isdigit() else words[3]  # RFC 3339 or BSD stamp
        per_file.setdefault(pattern.format(host=host), []).append(line)
    files: dict[str, dict[str, float | int]] = {}
    for path, text in per_file.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("\n".join(text) + "\n", encoding="utf-8")
        files[path] = {"mtime": max(t for t, _ in merged) + 1, "size": target.stat().st_size}
    if merged:
        write_manifest(root, "loghost", files)
    names = list(expected["hosts"])
    carried = '["*"]' if collects == "star" else json.dumps(names)
    text = ['[defaults]', 'timezone = "UTC"', '', '[[hosts]]', 'name = "loghost"',
            'transport = "local"', 'root = "loghost"', f"collects = {carried}"]
    if logs:
        text.append(f"logs = {json.dumps(logs)}")
    for name in names:
        info = expected["hosts"][name]
        text += ["", "[[hosts]]", f'name = "{name}"',
                 f'aliases = ["{info["fqdn"]}", "{info["ip"]}"]']
    inventory = dest / "inventory.toml"
    inventory.write_text("\n".join(text) + "\n" + extra, encoding="utf-8")
    return inventory


_ENVELOPE = re.compile(
    r"^(?:\d{4}-\S+|[A-Z][a-z]{2} +\d{1,2} \d\d:\d\d:\d\d(?:\.\d+)?) (?P<host>\S+) "
    r"(?P<tag>[^\s\[:]+)(?:\[(?P<pid>\d+)\])?: (?P<msg>.*)$"
)


def journal_export(lines: list[tuple[float, str]]) -> dict[str, str]:
    """Journal export-format text per host for (time, line) pairs: the fields journald keeps
    for a syslog line (its ``_HOSTNAME`` is the line's hostname), at the line's exact time."""
    import hashlib

    out: dict[str, list[str]] = {}
    for n, (when, line) in enumerate(lines, start=1):
        m = _ENVELOPE.match(line)
        assert m is not None, line
        host = m["host"]
        machine = hashlib.md5(host.encode(), usedforsecurity=False).hexdigest()
        boot = hashlib.md5(b"boot" + host.encode(), usedforsecurity=False).hexdigest()
        fields = [
            f"__REALTIME_TIMESTAMP={round(when * 1_000_000)}",
            f"__MONOTONIC_TIMESTAMP={n * 1000}",
            f"_BOOT_ID={boot}", f"_MACHINE_ID={machine}", f"_HOSTNAME={host}", "PRIORITY=6",
            "SYSLOG_FACILITY=2", f"SYSLOG_IDENTIFIER={m['tag']}", "_TRANSPORT=syslog",
        ]  # fmt: skip
        if m["pid"]:
            fields += [f"SYSLOG_PID={m['pid']}", f"_PID={m['pid']}"]
        fields.append(f"MESSAGE={m['msg']}")
        out.setdefault(host, []).append("\n".join(fields) + "\n")
    return {host: "\n".join(entries) + "\n" for host, entries in out.items()}


def build_journal_remote_fleet(dest: Path, tool: str, lines: list[tuple[float, str]] | None = None
                               ) -> Path:
    """The lab's hosts as a journal-remote log host: ``systemd-journal-remote`` (``tool``)
    writes each host's entries to ``/var/log/journal/remote/remote-HOST.journal`` (its
    ``--split-mode=host`` layout); the inventory reads them with ``logs``."""
    import subprocess

    root = dest / "loghost"
    directory = root / "var/log/journal/remote"
    directory.mkdir(parents=True)
    for host, text in journal_export(lab_lines() if lines is None else lines).items():
        out = subprocess.run([tool, "-o", str(directory / f"remote-{host}.journal"), "-"],
                             input=text.encode(), capture_output=True, check=False)
        assert out.returncode == 0, out.stderr
    names = list(EXPECTED["hosts"])
    text = ['[defaults]', 'timezone = "UTC"', '', '[[hosts]]', 'name = "loghost"',
            'transport = "local"', 'root = "loghost"', f"collects = {json.dumps(names)}",
            'logs = ["/var/log/journal/remote/*.journal"]']
    for name in names:
        info = EXPECTED["hosts"][name]
        text += ["", "[[hosts]]", f'name = "{name}"',
                 f'aliases = ["{info["fqdn"]}", "{info["ip"]}"]']
    inventory = dest / "inventory.toml"
    inventory.write_text("\n".join(text) + "\n", encoding="utf-8")
    return inventory

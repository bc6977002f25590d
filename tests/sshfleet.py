"""A fleet of real OpenSSH sshd processes on loopback, one per simulated mail host.

Each host's sshd runs in its own private mount (and UTS) namespace in which the host's own
directories are bind-mounted over ``/etc/postfix``, ``/var/log``, ``/etc/hosts``,
``/etc/hostname``, ``/etc/machine-id``, ``/root``, ``/home`` and ``/etc/sudoers.d``. Every
session (exec, SFTP, sudo, postconf, journalctl) inherits that namespace, so each host sees its
own main.cf and logs while the machine's real files stay untouched. Needs root, OpenSSH's
``sshd``, util-linux ``unshare``, ``sudo`` and ``systemd-journal-remote``.

Non-root login users are created on the machine itself (``useradd``, ``usermod -p '*'``); their
home directories live in each host's private ``/home``.

A host behind a bastion (``HostSpec.via``) listens on its own loopback address (127.0.0.2 by
default). Loopback cannot stop the test client from connecting to it directly; what proves a
test went through the bastion is the bastion's sshd log (``Fleet.forwarded_to``).

Command line, for benchmarks and manual runs (the sshd processes outlive ``up``)::

    python3 -m tests.sshfleet up --dir DIR [--lab LAB_DIR]
    python3 -m tests.sshfleet down --dir DIR
"""

from __future__ import annotations

import argparse
import bz2
import calendar
import contextlib
import gzip
import hashlib
import json
import lzma
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Self

SSHD = "/usr/sbin/sshd"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "fleet"
NON_ROOT_USER = "collector"
JUMP_ADDRESS = "127.0.0.2"
STATE_FILE = "fleet.json"
STOCK_MASTER_CF = "/usr/share/postfix/master.cf.dist"

# Directories and files of a host that get their own copy. Everything a HostSpec writes must
# live under one of them; the rest of the machine is shared by all hosts.
MOUNTED_DIRS = ("/etc/postfix", "/var/log", "/root", "/home", "/etc/sudoers.d")
MOUNTED_FILES = ("/etc/hosts", "/etc/hostname", "/etc/machine-id")

_JOURNAL_REMOTE_CANDIDATES = (
    "/usr/lib/systemd/systemd-journal-remote",
    "/lib/systemd/systemd-journal-remote",
)


class FleetError(RuntimeError):
    """A host's sshd could not be prepared, started or stopped."""


@dataclass
class HostSpec:
    """What one simulated host contains and how it is reached.

    ``files`` maps absolute paths inside the host to content (``str``/``bytes``) or to a file
    on disk to copy. ``modes`` sets permission bits (files are root-owned, 0644 unless set).
    ``sudo`` is what the generated inventory says (``sudo = true``), independent of whether
    ``sudo_rules`` lets the user actually run sudo. ``via`` names the bastion host this one is
    reached through; such a host listens on ``address`` (``JUMP_ADDRESS`` when left empty).
    ``dir_modes`` sets the permission bits of directories inside the host (root-owned);
    ``root_login`` lets the client key log in as root too (besides ``user``).
    """

    name: str
    files: dict[str, bytes | str | Path] = field(default_factory=dict)
    mtimes: dict[str, float] = field(default_factory=dict)
    user: str = "root"
    sudo_rules: str | None = None
    journal_export: str | None = None
    jump_only: bool = False
    fifo_logs: list[str] = field(default_factory=list)
    modes: dict[str, int] = field(default_factory=dict)
    sudo: bool = False
    via: str | None = None
    address: str = ""
    dir_modes: dict[str, int] = field(default_factory=dict)
    root_login: bool = False
    #: sshd_config lines that replace the fleet's own line of the same keyword (sshd takes
    #: a keyword's first value), e.g. ``("MaxStartups 2:100:2",)``.
    sshd_extra: tuple[str, ...] = ()


@dataclass
class _Host:
    spec: HostSpec
    dir: Path
    address: str
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    pid: int = 0
    mnt_ns: tuple[int, int] | None = None
    ns_fd: int | None = None  # pins the namespace so its inode cannot be reused meanwhile

    @property
    def fs(self) -> Path:
        return self.dir / "fs"

    @property
    def config(self) -> Path:
        return self.dir / "sshd_config"

    @property
    def pid_file(self) -> Path:
        return self.dir / "sshd.pid"

    @property
    def log(self) -> Path:
        return self.dir / "sshd.log"

    @property
    def host_key(self) -> Path:
        return self.dir / "keys" / "ssh_host_ed25519_key"


# --------------------------------------------------------------------------- helpers


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``address`` a moment ago (the caller retries on a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        port: int = sock.getsockname()[1]
        return port


def machine_id(name: str) -> str:
    """A stable 32-hex-digit machine ID for a host name (journal files are filed under it)."""
    return hashlib.md5(name.encode(), usedforsecurity=False).hexdigest()


def ensure_user(user: str) -> tuple[int, int]:
    """Create a login user with home /home/USER if missing; return (uid, gid).

    ``usermod -p '*'`` because sshd with ``UsePAM no`` refuses a locked (``!``) account.
    """
    if subprocess.run(["id", "-u", user], check=False, capture_output=True).returncode != 0:
        made = subprocess.run(
            ["useradd", "-M", "-d", f"/home/{user}", "-s", "/bin/bash", user],
            check=False, capture_output=True, text=True,
        )
        # 9: created meanwhile by a concurrent run
        if made.returncode not in (0, 9):
            raise FleetError(f"useradd {user}: {made.stderr.strip()}")
        subprocess.run(["usermod", "-p", "*", user], check=True, capture_output=True)
    uid = int(subprocess.run(["id", "-u", user], check=True, capture_output=True).stdout)
    gid = int(subprocess.run(["id", "-g", user], check=True, capture_output=True).stdout)
    return uid, gid


def _keygen(path: Path, comment: str) -> None:
    for old in (path, path.with_name(path.name + ".pub")):
        old.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True, capture_output=True,
    )
    path.chmod(0o600)


def _public_key(private: Path) -> str:
    """``TYPE BASE64`` of a key pair, without the comment."""
    return " ".join(private.with_name(private.name + ".pub").read_text().split()[:2])


def _known_hosts_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


def _mount_ns(pid: int) -> tuple[int, int] | None:
    try:
        st = os.stat(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _is_our_listener(pid: int, config: Path) -> bool:
    # sshd rewrites its title ("sshd: /usr/sbin/sshd -D ... -f CONFIG [listener] ..."), so
    # match the words, not argv[0].
    title = " ".join(_cmdline(pid))
    return SSHD in title and f"-f {config}" in title


def _mounts_host(pid: int, fs: Path) -> bool:
    """Whether the process sees the host's /var/log bind mount (its namespace is that host's)."""
    try:
        mountinfo = Path(f"/proc/{pid}/mountinfo").read_text()
    except OSError:
        return False
    source = str(fs / "var/log").replace(" ", "\\040")
    for line in mountinfo.splitlines():
        fields = line.split()
        # fields[3]: the mounted path relative to its filesystem, a suffix of our path.
        if len(fields) > 4 and fields[4] == "/var/log" and source.endswith(fields[3]) \
                and f"/hosts/{fs.parent.name}/fs/" in fields[3]:
            return True
    return False


def namespace_members(mnt_ns: tuple[int, int], fs: Path) -> list[int]:
    """Pids of every live process in the given mount namespace of the host rooted at fs.

    The mount table is checked too: a freed namespace's inode number can be reused by a new
    namespace (another fleet's host) the moment its last process is gone.
    """
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _mount_ns(int(entry)) == mnt_ns and _mounts_host(int(entry), fs):
            members.append(int(entry))
    return members


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _terminate(listener: int, config: Path, mnt_ns: tuple[int, int] | None,
               timeout: float = 5.0) -> None:
    """End a host: its listener, then every process left in its mount namespace.

    Killing by namespace catches open sessions and their children (a ``cat`` stuck on a FIFO)
    that outlive the listener. Each pid's cmdline is checked first so a recycled pid is never
    hit; the namespace is private to this host, so membership identifies our processes.
    """
    if listener and _is_our_listener(listener, config):
        os.kill(listener, signal.SIGTERM)
    if mnt_ns is None:
        return
    deadline = time.monotonic() + timeout
    sig = signal.SIGTERM
    while True:
        members = [pid for pid in namespace_members(mnt_ns, config.parent / "fs")
                   if _alive(pid) and _cmdline(pid)]
        if not members:
            return
        if time.monotonic() > deadline:
            raise FleetError(f"processes survived SIGKILL in {config.parent.name}: {members}")
        for pid in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        time.sleep(0.05)
        if time.monotonic() > deadline - timeout / 2:
            sig = signal.SIGKILL


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        # JSON string escapes are valid TOML basic-string escapes.
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        items = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML: {value!r}")


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def toml_table(header: str, values: Mapping[str, object]) -> str:
    """One TOML table (``[x]`` or ``[[x]]`` given as header) with simple values."""
    lines = [header] + [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- log fixtures

_BSD_STAMP = re.compile(rb"^([A-Z][a-z]{2}) +(\d{1,2}) (\d\d):(\d\d):(\d\d)")
_ISO_STAMP = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d))")
_MONTHS = {m: i for i, m in enumerate(calendar.month_abbr) if m}
_SYSLOG_LINE = re.compile(
    r"^(?P<stamp>[A-Z][a-z]{2} +\d{1,2} \d\d:\d\d:\d\d|\d{4}-\d\d-\d\dT\S+) (?P<host>\S+) "
    r"(?P<tag>[^\s\[:]+)(?:\[(?P<pid>\d+)\])?: (?P<msg>.*)$"
)


def bsd_time(stamp: bytes | str, now: float) -> float:
    """Epoch seconds of a yearless local ``Mon dd HH:MM:SS``: the latest such time <= now + 1 day."""
    raw = stamp.encode() if isinstance(stamp, str) else stamp
    match = _BSD_STAMP.match(raw)
    if match is None:
        raise ValueError(f"not a BSD syslog timestamp: {stamp!r}")
    mon, day, hh, mm, ss = match.groups()
    year = time.localtime(now).tm_year
    for candidate in (year, year - 1):
        when = time.mktime((candidate, _MONTHS[mon.decode()], int(day), int(hh), int(mm),
                            int(ss), 0, 0, -1))
        if when <= now + 86400:
            return when
    return when


def last_line_time(data: bytes, now: float) -> float | None:
    """Time of the last timestamped line of a (possibly gzipped) log, or None."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    elif data[:3] == b"BZh":
        data = bz2.decompress(data)
    elif data[:6] == b"\xfd7zXZ\x00":
        data = lzma.decompress(data)
    for line in reversed(data.splitlines()):
        if _BSD_STAMP.match(line):
            return bsd_time(line, now)
        iso = _ISO_STAMP.match(line)
        if iso:
            return datetime.fromisoformat(iso.group(1).decode()).timestamp()
    return None


def journal_export_from_syslog(text: str, machine: str, now: float | None = None) -> str:
    """Journal export-format text with the fields journald stores for these syslog lines.

    Postfix logs through syslog(3) with facility mail (2) from postfix@-.service on a systemd
    host; the tag becomes SYSLOG_IDENTIFIER. Lines are traditional (``Mon dd HH:MM:SS``, local
    time, the entry's number added as microseconds to keep the order) or RFC 3339 (exact).
    """
    now = time.time() if now is None else now
    boot_id = hashlib.md5(b"boot" + machine.encode(), usedforsecurity=False).hexdigest()
    entries = []
    for n, line in enumerate(text.splitlines(), start=1):
        match = _SYSLOG_LINE.match(line)
        if match is None:
            raise ValueError(f"line {n} is not a traditional syslog line: {line!r}")
        if match["stamp"][0].isdigit():
            when = datetime.fromisoformat(match["stamp"])
            usec = calendar.timegm(when.utctimetuple()) * 1_000_000 + when.microsecond
        else:
            usec = int(bsd_time(match["stamp"], now) * 1_000_000) + n  # keep entries ordered
        fields = [
            f"__REALTIME_TIMESTAMP={usec}",
            f"__MONOTONIC_TIMESTAMP={n * 1000}",
            f"_BOOT_ID={boot_id}",
            f"_MACHINE_ID={machine}",
            f"_HOSTNAME={match['host']}",
            "PRIORITY=6",
            "SYSLOG_FACILITY=2",
            f"SYSLOG_IDENTIFIER={match['tag']}",
            "_TRANSPORT=syslog",
            "_SYSTEMD_UNIT=postfix@-.service",
        ]
        if match["pid"]:
            fields += [f"SYSLOG_PID={match['pid']}", f"_PID={match['pid']}"]
        fields.append(f"MESSAGE={match['msg']}")
        entries.append("\n".join(fields) + "\n")
    return "\n".join(entries) + "\n"


def write_journal(export: str, path: Path) -> None:
    """Write journal export-format text as a real journal file at ``path`` (which must not
    exist), with ``systemd-journal-remote``. Journal files are preallocated: 8 MB each."""
    tool = next((t for t in _JOURNAL_REMOTE_CANDIDATES if os.access(t, os.X_OK)), None)
    if tool is None:
        raise FleetError("systemd-journal-remote is not installed")
    out = subprocess.run([tool, "-o", str(path), "-"], input=export.encode(), check=False,
                         capture_output=True)
    if out.returncode != 0:
        raise FleetError(f"systemd-journal-remote: {out.stderr!r}")


def spec_from_tree(name: str, tree: Path, now: float | None = None, **kwargs: Any) -> HostSpec:
    """A HostSpec whose files are the host filesystem under ``tree`` (``etc/postfix/...``).

    A top-level ``journal.log`` (syslog lines) or ``journal.export`` becomes the host's
    journal instead of a file. Logs under var/log get the time of their last line as mtime,
    since git does not keep mtimes and rotated files must be ordered by something real.
    """
    now = time.time() if now is None else now
    files: dict[str, bytes | str | Path] = {}
    mtimes: dict[str, float] = {}
    journal = None
    for path in sorted(p for p in tree.rglob("*") if p.is_file()):
        rel = path.relative_to(tree)
        if len(rel.parts) == 1:
            if rel.name == "journal.export":
                journal = path.read_text()
            elif rel.name == "journal.log":
                journal = journal_export_from_syslog(path.read_text(), machine_id(name), now)
            continue
        inside = "/" + rel.as_posix()
        files[inside] = path
        if inside.startswith("/var/log/"):
            when = last_line_time(path.read_bytes(), now)
            if when is not None:
                mtimes[inside] = when
    files.update(kwargs.pop("files", {}))
    mtimes.update(kwargs.pop("mtimes", {}))
    if journal is not None:
        kwargs.setdefault("journal_export", journal)
    return HostSpec(name=name, files=files, mtimes=mtimes, **kwargs)


def standard_specs(lab_dir: Path = FIXTURES) -> list[HostSpec]:
    """The hosts the project's tests use, with files from ``lab_dir/<host>/``.

    A host missing from ``lab_dir`` takes its files from the built-in ``FIXTURES``.

    rhel1 (maillog + maillog-YYYYMMDD), deb1 (mail.log, .1, .2.gz), logfile1 (maillog_file
    with a stale mail.log), journal1 (journald only), sudo1 / nosudo1 (user ``collector``,
    root-only 0600 logs, with / without a sudoers rule; both say ``sudo = true``), bastion1
    (jump only), inner1 (only through bastion1), fifo1 (/var/log/maillog is a FIFO).
    """
    now = time.time()

    def source(name: str) -> Path:
        return lab_dir / name if (lab_dir / name).is_dir() else FIXTURES / name

    def tree(name: str, **kwargs: Any) -> HostSpec:
        return spec_from_tree(name, source(name), now, **kwargs)

    def root_only(name: str) -> dict[str, int]:
        logs = (source(name) / "var" / "log").rglob("*")
        return {"/" + p.relative_to(source(name)).as_posix(): 0o600 for p in logs
                if p.is_file()}

    return [
        tree("rhel1"),
        tree("deb1"),
        tree("logfile1"),
        tree("journal1"),
        tree("sudo1", user=NON_ROOT_USER, sudo=True, modes=root_only("sudo1"),
             sudo_rules=f"{NON_ROOT_USER} ALL=(root) NOPASSWD: ALL\n"),
        tree("nosudo1", user=NON_ROOT_USER, sudo=True, modes=root_only("nosudo1")),
        HostSpec(name="bastion1", jump_only=True),
        tree("inner1", via="bastion1"),
        tree("fifo1", fifo_logs=["/var/log/maillog"]),
    ]


#: A file in narrowdir1's root-only directory whose name a shell, a listing or a sudoers line
#: would misread: ls must list it as what it is, and nothing may run it.
HOSTILE_NAME = 'postfix.log.1\n"; touch /root/CANARY-name; x=$(id) *'


def narrow_specs(lab_dir: Path = FIXTURES) -> list[HostSpec]:
    """Hosts whose login user ``collector`` may run only what ``hosts --sudoers`` prints.

    Their logs are root-only (0600). narrow1: mail.log, .1 and .2.gz in /var/log (and a FIFO
    that is no log); narrowdir1: maillog_file in /var/log/postfix, a 0700 directory only root
    can list, with a compressed rotation and a hostile file name; narrowjournal1: journald
    only. None gets a
    sudoers rule here: the tests install the printed lines. The client key also logs in as root,
    which reads the same files without sudo (the reference answer).
    """
    now = time.time()

    def tree(name: str, **kwargs: Any) -> HostSpec:
        root = lab_dir / name if (lab_dir / name).is_dir() else FIXTURES / name
        logs = (root / "var" / "log").rglob("*")
        modes = {"/" + p.relative_to(root).as_posix(): 0o600 for p in logs if p.is_file()}
        modes.update(kwargs.pop("modes", {}))
        return spec_from_tree(name, root, now, user=NON_ROOT_USER, sudo=True, modes=modes,
                              root_login=True, **kwargs)

    hostile = f"/var/log/postfix/{HOSTILE_NAME}"
    return [
        # A FIFO nobody writes to: a root cat of it blocks for ever (timeouts must end it).
        tree("narrow1", fifo_logs=["/var/log/stuck.fifo"], modes={"/var/log/stuck.fifo": 0o600}),
        tree("narrowdir1", files={hostile: "not a log\n"}, modes={hostile: 0o600},
             dir_modes={"/var/log/postfix": 0o700}),
        tree("narrowjournal1"),
    ]


# --------------------------------------------------------------------------- the fleet


class Fleet:
    """Real sshd processes, one per HostSpec, each in a private mount namespace."""

    def __init__(self, base_dir: Path, specs: Sequence[HostSpec]):
        self.base_dir = Path(base_dir).resolve()
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate host names: {names}")
        self._hosts = {
            spec.name: _Host(spec, self.base_dir / "hosts" / spec.name,
                             spec.address or (JUMP_ADDRESS if spec.via else "127.0.0.1"))
            for spec in specs
        }
        for spec in specs:
            if spec.via is not None and spec.via not in self._hosts:
                raise ValueError(f"{spec.name}: unknown bastion {spec.via!r}")
        client = self.base_dir / "client"
        self.client_key = client / "id_ed25519"
        self.known_hosts = client / "known_hosts"
        self.ssh_config = client / "ssh_config"
        self.startup_seconds = 0.0

    # ---- lifecycle

    def start(self) -> None:
        """Prepare every host, start all sshd and wait until each is listening."""
        began = time.monotonic()
        try:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
            _keygen(self.client_key, "collector-tests")
            for host in self._hosts.values():
                self._prepare(host)
                _keygen(host.host_key, f"host key of {host.spec.name}")
            for host in self._hosts.values():
                self._launch(host)
            for host in self._hosts.values():
                self._wait_ready(host)
            # Only now are the ports final (a lost port race picks another one).
            self.write_known_hosts()
            self._write_ssh_config()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began

    def stop(self) -> None:
        """End every host's listener and every process left in its namespace."""
        errors = []
        for name in self._hosts:
            try:
                self.stop_host(name)
            except FleetError as err:
                errors.append(str(err))
        if errors:
            raise FleetError("; ".join(errors))

    def stop_host(self, name: str) -> None:
        """Take one host down: its listener and its open sessions."""
        host = self._hosts[name]
        if host.pid:
            _terminate(host.pid, host.config, host.mnt_ns)
        if host.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                host.proc.wait(timeout=5)
        if host.ns_fd is not None:
            os.close(host.ns_fd)
        host.proc, host.pid, host.mnt_ns, host.ns_fd = None, 0, None, None
        self._save_state()

    def start_host(self, name: str) -> None:
        """Start one (stopped) host again on the same address and port."""
        host = self._hosts[name]
        if host.pid:
            raise FleetError(f"{name} is already running (pid {host.pid})")
        port = host.port
        self._launch(host)
        self._wait_ready(host)
        if host.port != port:
            self.stop_host(name)
            raise FleetError(f"{name}: port {port} was taken while the host was down")

    def regenerate_host_key(self, name: str, update_known_hosts: bool = False) -> str:
        """Give a host a new host key and restart it; return the new public key.

        known_hosts keeps the old key unless asked, so clients see a changed host key.
        """
        host = self._hosts[name]
        running = bool(host.pid)
        if running:
            self.stop_host(name)
        _keygen(host.host_key, f"host key of {name}")
        if update_known_hosts:
            self.write_known_hosts()
        if running:
            self.start_host(name)
        return _public_key(host.host_key)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- queries

    @property
    def names(self) -> list[str]:
        return list(self._hosts)

    def spec(self, name: str) -> HostSpec:
        return self._hosts[name].spec

    def address(self, name: str) -> tuple[str, int]:
        host = self._hosts[name]
        return host.address, host.port

    def host_public_key(self, name: str) -> str:
        return _public_key(self._hosts[name].host_key)

    def host_path(self, name: str, path: str) -> Path:
        """Where a path inside a host really is on disk (only the per-host directories)."""
        if not path.startswith("/") or ".." in Path(path).parts:
            raise ValueError(f"not an absolute, normalized path: {path!r}")
        if not any(path == top or path.startswith(top + "/") for top in MOUNTED_DIRS) and \
                path not in MOUNTED_FILES:
            raise ValueError(f"{path} is shared with the machine, not private to a host")
        return self._hosts[name].fs / path.lstrip("/")

    def listener_pid(self, name: str) -> int:
        return self._hosts[name].pid

    def namespace_pids(self, name: str) -> list[int]:
        """Live processes in the host's mount namespace (listener and sessions)."""
        host = self._hosts[name]
        if host.mnt_ns is None:
            return []
        return [p for p in namespace_members(host.mnt_ns, host.fs) if _alive(p)]

    def sshd_log(self, name: str) -> str:
        return self._hosts[name].log.read_text(errors="replace")

    def forwarded_to(self, bastion: str) -> list[tuple[str, int]]:
        """Destinations the bastion's sshd has opened direct-tcpip channels to."""
        found = re.findall(r"server_request_direct_tcpip: originator \S+ port \d+, target (\S+) port (\d+)",
                           self.sshd_log(bastion))
        return [(addr, int(port)) for addr, port in found]

    def inventory_toml(self, extra_host_keys: Mapping[str, Mapping[str, object]] = {}) -> str:
        """A collector inventory for the fleet's mail hosts (jump-only hosts are left out).

        ``extra_host_keys`` adds or overrides keys per host; a name that is not in the fleet
        becomes an extra ``[[hosts]]`` table (e.g. a dead host on a closed port).
        """
        parts = [
            f"known_hosts = {_toml_value(self.known_hosts)}\n",
            toml_table("[defaults]", {"user": "root", "identity_file": self.client_key,
                                      "port": 22}),
        ]
        for name, host in self._hosts.items():
            if host.spec.jump_only:
                continue
            table: dict[str, object] = {
                "name": name, "address": host.address, "port": host.port,
                "user": host.spec.user, "sudo": host.spec.sudo,
            }
            if host.spec.via is not None:
                jump = self._hosts[host.spec.via]
                table["proxy_jump"] = f"{jump.spec.user}@{jump.address}:{jump.port}"
            table.update(extra_host_keys.get(name, {}))
            parts.append(toml_table("[[hosts]]", table))
        for name, extra in extra_host_keys.items():
            if name not in self._hosts:
                parts.append(toml_table("[[hosts]]", {"name": name, **extra}))
        return "\n".join(parts)

    def write_known_hosts(self) -> None:
        lines = [
            f"{_known_hosts_name(host.address, host.port)} {_public_key(host.host_key)}\n"
            for host in self._hosts.values()
        ]
        self.known_hosts.write_text("".join(lines))

    # ---- internals

    def _prepare(self, host: _Host) -> None:
        spec = host.spec
        if host.dir.exists():
            shutil.rmtree(host.dir)
        fs = host.fs
        for top in MOUNTED_DIRS:
            (fs / top.lstrip("/")).mkdir(parents=True, exist_ok=True)
        (fs / "root").chmod(0o700)
        for top in MOUNTED_DIRS:
            if top != "/root":
                (fs / top.lstrip("/")).chmod(0o755)
        (fs / "etc/hosts").write_text(
            f"127.0.0.1\tlocalhost\n127.0.1.1\t{spec.name}.example.test {spec.name}\n"
            "::1\tlocalhost ip6-localhost ip6-loopback\n"
        )
        (fs / "etc/hostname").write_text(spec.name + "\n")
        (fs / "etc/machine-id").write_text(machine_id(spec.name) + "\n")
        (fs / "etc/machine-id").chmod(0o444)

        pub = self.client_key.with_name(self.client_key.name + ".pub").read_text()
        logins = [spec.user] + (["root"] if spec.root_login and spec.user != "root" else [])
        for user in logins:
            if user == "root":
                home, uid, gid = fs / "root", 0, 0
            else:
                uid, gid = ensure_user(user)
                home = fs / "home" / user
                home.mkdir(mode=0o750)
            ssh_dir = home / ".ssh"
            ssh_dir.mkdir(mode=0o700)
            (ssh_dir / "authorized_keys").write_text(pub)
            (ssh_dir / "authorized_keys").chmod(0o600)
            for path in (home, ssh_dir, ssh_dir / "authorized_keys"):
                os.chown(path, uid, gid)

        if spec.sudo_rules is not None:
            rules = fs / "etc/sudoers.d/collector"
            rules.write_text(spec.sudo_rules)
            rules.chmod(0o440)

        for inside, content in spec.files.items():
            target = self.host_path(spec.name, inside)
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Path):
                shutil.copyfile(content, target)
            elif isinstance(content, str):
                target.write_text(content)
            else:
                target.write_bytes(content)
            target.chmod(spec.modes.get(inside, 0o644))
        for inside in spec.fifo_logs:
            target = self.host_path(spec.name, inside)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.mkfifo(target, spec.modes.get(inside, 0o644))
        master = fs / "etc/postfix/master.cf"
        if (fs / "etc/postfix/main.cf").exists() and not master.exists() and \
                os.path.exists(STOCK_MASTER_CF):
            # Without master.cf every postconf call warns on stderr, which no real host does.
            shutil.copyfile(STOCK_MASTER_CF, master)
        if spec.journal_export is not None:
            self._write_journal(host)
        for inside, mode in spec.dir_modes.items():
            self.host_path(spec.name, inside).chmod(mode)
        for inside, when in spec.mtimes.items():
            os.utime(self.host_path(spec.name, inside), (when, when), follow_symlinks=False)

        host.log.touch()
        host.config.write_text(self._sshd_config(host))

    def _write_journal(self, host: _Host) -> None:
        journal_dir = host.fs / "var/log/journal" / machine_id(host.spec.name)
        journal_dir.mkdir(parents=True)
        try:
            write_journal(host.spec.journal_export or "", journal_dir / "system.journal")
        except FleetError as exc:
            raise FleetError(f"{host.spec.name}: {exc}") from None

    def _sshd_config(self, host: _Host) -> str:
        spec = host.spec
        lines = [
            f"ListenAddress {host.address}",
            f'HostKey "{host.host_key}"',
            f'PidFile "{host.pid_file}"',
            "UsePAM no",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "AuthorizedKeysFile .ssh/authorized_keys",
            "StrictModes yes",
            "MaxStartups 100:30:200",
            "MaxSessions 100",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            "X11Forwarding no",
            "AllowAgentForwarding no",
            "PermitUserEnvironment no",
            "LogLevel VERBOSE",
            "Subsystem sftp internal-sftp",
        ]
        if spec.jump_only:
            # A bastion only forwards: commands fail so a collector never mistakes it for a
            # mail host.
            lines += ["AllowTcpForwarding yes", "PermitTTY no", "ForceCommand /bin/false"]
            # DEBUG1 is the level at which sshd names direct-tcpip targets (forwarded_to).
            lines = [line for line in lines if not line.startswith("LogLevel")]
            lines.append("LogLevel DEBUG1")
        else:
            lines += ["AllowTcpForwarding no"]
        for extra in spec.sshd_extra:
            keyword = extra.split(None, 1)[0].lower()
            lines = [line for line in lines if line.split(None, 1)[0].lower() != keyword]
            lines.append(extra)
        return "\n".join(lines) + "\n"

    def _write_ssh_config(self) -> None:
        blocks = []
        for name, host in self._hosts.items():
            block = [
                f"Host {name}",
                f"  HostName {host.address}",
                f"  Port {host.port or 22}",
                f"  User {host.spec.user}",
                f'  IdentityFile "{self.client_key}"',
                "  IdentitiesOnly yes",
                f'  UserKnownHostsFile "{self.known_hosts}"',
                "  GlobalKnownHostsFile /dev/null",
                "  StrictHostKeyChecking yes",
                "  BatchMode yes",
                "  LogLevel ERROR",
                "  ConnectTimeout 10",
            ]
            if host.spec.via is not None:
                block.append(f"  ProxyJump {host.spec.via}")
            blocks.append("\n".join(block) + "\n")
        self.ssh_config.write_text("\n".join(blocks))

    def _launch(self, host: _Host) -> None:
        if not host.port:
            host.port = free_port(host.address)
        host.pid_file.unlink(missing_ok=True)
        config = host.config.read_text()
        config = re.sub(r"(?m)^Port \d+\n", "", config)
        host.config.write_text(f"Port {host.port}\n{config}")
        fs = host.fs
        script = [f"hostname {shlex.quote(host.spec.name)}"]
        for target in MOUNTED_DIRS + MOUNTED_FILES:
            if os.path.exists(target):
                script.append(
                    f"mount --bind {shlex.quote(str(fs / target.lstrip('/')))} "
                    f"{shlex.quote(target)}"
                )
        script.append(
            f"exec {SSHD} -D -E {shlex.quote(str(host.log))} -f {shlex.quote(str(host.config))}"
        )
        with open(host.log, "ab") as log:
            host.proc = subprocess.Popen(
                ["unshare", "--mount", "--uts", "--propagation", "private", "--",
                 "/bin/sh", "-ec", " && ".join(script)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True,
            )
        # unshare and sh both exec, so this pid becomes the sshd listener itself.
        host.pid = host.proc.pid

    def _wait_ready(self, host: _Host, timeout: float = 10.0) -> None:
        # sshd writes its PidFile after binding the sockets: non-empty means listening.
        deadline = time.monotonic() + timeout
        assert host.proc is not None
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                if int(host.pid_file.read_text()) == host.pid:
                    host.ns_fd = os.open(f"/proc/{host.pid}/ns/mnt", os.O_RDONLY)
                    host.mnt_ns = _mount_ns(host.pid)
                    self._save_state()
                    return
            if host.proc.poll() is not None:
                break
            time.sleep(0.005)
        log = host.log.read_text(errors="replace")[-2000:]
        running = host.proc.poll() is None
        self.stop_host(host.spec.name)
        if not running and "Address already in use" in log:
            # Lost the race for the free port: take another one.
            host.port = 0
            self._launch(host)
            self._wait_ready(host, timeout)
            return
        raise FleetError(f"sshd for {host.spec.name} did not start:\n{log}")

    def _save_state(self) -> None:
        state = {
            name: {"pid": host.pid, "config": str(host.config),
                   "mnt_ns": list(host.mnt_ns) if host.mnt_ns else None,
                   "address": host.address, "port": host.port}
            for name, host in self._hosts.items()
        }
        self.base_dir.mkdir(parents=True, exist_ok=True)
        (self.base_dir / STATE_FILE).write_text(json.dumps(state, indent=1) + "\n")


def stop_from_state(base_dir: Path) -> list[str]:
    """Stop a fleet started by another process (``up``) from its state file; return names."""
    state = json.loads((Path(base_dir) / STATE_FILE).read_text())
    stopped = []
    for name, entry in state.items():
        if entry["pid"]:
            ns = (entry["mnt_ns"][0], entry["mnt_ns"][1]) if entry["mnt_ns"] else None
            _terminate(entry["pid"], Path(entry["config"]), ns)
            stopped.append(name)
            entry["pid"], entry["mnt_ns"] = 0, None
    (Path(base_dir) / STATE_FILE).write_text(json.dumps(state, indent=1) + "\n")
    return stopped


@contextlib.contextmanager
def running_fleet(base_dir: Path, specs: Sequence[HostSpec]) -> Iterator[Fleet]:
    """``with running_fleet(tmp, specs) as fleet:`` — started, and always stopped."""
    fleet = Fleet(base_dir, specs)
    fleet.start()
    try:
        yield fleet
    finally:
        fleet.stop()


def fleet_fixture(specs: Callable[[], Sequence[HostSpec]] | Sequence[HostSpec] | None = None,
                  scope: Literal["session", "package", "module", "class", "function"] = "session",
                  ) -> Any:
    """A pytest fixture yielding a running Fleet (default: ``standard_specs()``).

    In a conftest: ``fleet = fleet_fixture()`` or ``small = fleet_fixture(lambda: [...],
    scope="module")``.
    """
    import pytest

    @pytest.fixture(scope=scope)
    def _fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
        chosen = standard_specs() if specs is None else specs() if callable(specs) else specs
        with running_fleet(tmp_path_factory.mktemp("sshfleet"), chosen) as fleet:
            yield fleet

    return _fleet


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tests.sshfleet", description=__doc__
                                     and __doc__.splitlines()[0])
    parser.add_argument("action", choices=("up", "down"))
    parser.add_argument("--dir", type=Path, required=True, help="fleet working directory")
    parser.add_argument("--lab", type=Path, default=FIXTURES,
                        help="directory of <host>/etc/... trees (default: built-in fixtures)")
    args = parser.parse_args(argv)
    if args.action == "down":
        for name in stop_from_state(args.dir):
            print(f"stopped {name}")
        return 0
    fleet = Fleet(args.dir, standard_specs(args.lab))
    fleet.start()
    inventory = args.dir.resolve() / "inventory.toml"
    inventory.write_text(fleet.inventory_toml())
    for name in fleet.names:
        addr, port = fleet.address(name)
        print(f"{name:10} {addr}:{port} pid {fleet.listener_pid(name)}")
    print(f"started {len(fleet.names)} hosts in {fleet.startup_seconds:.3f} s")
    print(f"inventory {inventory}\nssh -F {fleet.ssh_config} HOST")
    return 0


if __name__ == "__main__":
    sys.exit(main())

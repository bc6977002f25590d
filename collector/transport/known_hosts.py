"""OpenSSH's known_hosts, read the way ``ssh`` reads it, for paramiko.

paramiko's own loader refuses the whole file at the first line it cannot read, and does not
know the ``@revoked`` and ``@cert-authority`` markers: one such line (common in managed
fleets) would make every host fail. Here each line stands on its own:

* a plain line (hashed or not) is a known key;
* ``@revoked PATTERNS TYPE KEY``: that key is refused for those hosts, even if another line
  lists it as known (as OpenSSH does);
* ``@cert-authority ...``: host certificates are not supported by paramiko; the line is
  skipped and said so (a host known only through its CA is then an unknown host key);
* a malformed line is skipped and said so, with its line number.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import paramiko
from paramiko.hostkeys import HostKeyEntry, InvalidHostKey


@dataclass(frozen=True, slots=True)
class KnownHosts:
    keys: paramiko.HostKeys
    revoked: tuple[paramiko.HostKeys, ...]  # one per @revoked line (lookup matches hashes)
    notes: tuple[str, ...]

    def is_revoked(self, names: tuple[str, ...], key: paramiko.PKey) -> bool:
        """Whether ``key`` is revoked for any of ``names`` (``host`` or ``[host]:port``)."""
        wanted = key.asbytes()
        for line in self.revoked:
            for name in names:
                found = line.lookup(name)
                if found is not None and any(k.asbytes() == wanted for k in found.values()):
                    return True
        return False


def parse_known_hosts(text: str, path: str) -> KnownHosts:
    keys = paramiko.HostKeys()
    revoked: list[paramiko.HostKeys] = []
    notes: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        marker = ""
        if line.startswith("@"):
            marker, _, line = line.partition(" ")
            line = line.strip()
        if marker == "@cert-authority":
            notes.append(
                f"{path}:{number}: @cert-authority skipped (host certificates are not supported)"
            )
            continue
        if marker not in ("", "@revoked"):
            notes.append(f"{path}:{number}: unknown marker {marker[:40]!r}, line skipped")
            continue
        entry = _entry(line)
        if entry is None:
            notes.append(f"{path}:{number}: malformed line skipped")
            continue
        target = keys
        if marker == "@revoked":
            target = paramiko.HostKeys()
            revoked.append(target)
        assert entry.key is not None
        for hostname in entry.hostnames:
            target.add(hostname, entry.key.get_name(), entry.key)
    return KnownHosts(keys, tuple(revoked), tuple(notes))


def _entry(line: str) -> HostKeyEntry | None:
    try:
        entry = HostKeyEntry.from_line(line)
    except (InvalidHostKey, paramiko.SSHException, ValueError, TypeError):
        return None
    if entry is None or entry.key is None or not entry.hostnames:
        return None
    return entry


class _Cache:
    """Each known_hosts file parsed once per run (per change of its mtime and size)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parsed: dict[str, tuple[tuple[float, int], KnownHosts]] = {}

    def get(self, path: str) -> KnownHosts:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return KnownHosts(paramiko.HostKeys(), (), ())
        stamp = (st.st_mtime, st.st_size)
        with self._lock:
            cached = self._parsed.get(path)
            if cached is not None and cached[0] == stamp:
                return cached[1]
            with open(path, encoding="utf-8", errors="replace") as f:
                parsed = parse_known_hosts(f.read(), path)
            self._parsed[path] = (stamp, parsed)
            return parsed


KNOWN_HOSTS = _Cache()

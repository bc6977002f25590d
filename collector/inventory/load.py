"""Read and validate the TOML host inventory, before any connection is made.

Values cascade ``[defaults]`` -> each ``[groups.NAME]`` the host lists (in its order) ->
the host's own ``[[hosts]]`` table -> ``~/.ssh/config`` for what the inventory leaves unset
(``HostName``, ``User``, ``Port``, ``IdentityFile``, ``IdentitiesOnly``, ``ProxyJump``, looked
up by the host's ``name`` as ``ssh NAME`` would). Every problem becomes one ``InventoryError``
naming the file, the line when it can be found, the table or host, and the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import glob
import io
import json
import math
import os
import re
import shlex
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from collector.errors import InventoryError
from collector.models import Host, HostKeyPolicy, Inventory, Settings, SourceMode, TransportKind

ENV_VAR = "COLLECTOR_INVENTORY"
DEFAULT_NAME = "inventory.toml"

GLOBAL_KEYS = ("known_hosts", "host_key_policy", "workers", "connect_timeout", "command_timeout")
HOST_KEYS = (
    "name", "address", "port", "user", "identity_file", "proxy_jump", "sudo", "timezone",
    "groups", "aliases", "transport", "root", "logs", "source", "identities_only", "collects",
)  # fmt: skip
# Keys that describe one host only: in [defaults] or a group they would make every member
# claim the same name/alias, and groups of groups would need an order nobody can guess.
_HOST_ONLY = ("name", "groups", "aliases", "collects")
#: Keys that say how to reach or read a host: a collected host is read on its log host, so
#: in its own table they would mean nothing (inherited ones simply do not apply).
_READ_KEYS = (
    "transport", "root", "logs", "source", "sudo", "timezone", "port", "user", "identity_file",
    "identities_only", "proxy_jump",
)  # fmt: skip
#: ``collects = ["*"]``: every host not collected elsewhere, and any hostname in the lines.
COLLECT_ALL = "*"
_SSH_ONLY = ("address", "port", "user", "identity_file", "identities_only", "proxy_jump")
_TABLES = ("defaults", "groups", "hosts")

_Key = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class JumpHop:
    """One hop of an OpenSSH ``ProxyJump`` chain: ``[user@]host[:port]``.

    ``user`` and ``port`` are the hop's own (None: the transport's default, not the
    target host's user).
    """

    host: str
    user: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        text = f"{self.user}@{host}" if self.user else host
        return f"{text}:{self.port}" if self.port is not None else text


# OpenSSH splits user from host at the last '@'; IPv6 needs brackets when a port follows.
_HOP = re.compile(
    r"^(?:ssh://)?(?:(?P<user>\S+)@)?"
    r"(?:\[(?P<v6>[0-9A-Za-z:.%]+)\]|(?P<host>[^\s@:/\[\],]+))"
    r"(?::(?P<port>\d{1,5}))?/?$"
)


def parse_proxy_jump(spec: str) -> tuple[JumpHop, ...]:
    """Split a ``ProxyJump`` value into hops, first hop first; ``none`` gives ``()``.

    Raises ValueError on a malformed hop.
    """
    if spec.strip().lower() == "none":
        return ()
    hops = []
    for part in spec.split(","):
        m = _HOP.match(part.strip())
        port = int(m["port"]) if m and m["port"] else None
        if m is None or (port is not None and not 1 <= port <= 65535):
            raise ValueError(f"bad ProxyJump hop {part.strip()!r}")
        hops.append(JumpHop(host=m["v6"] or m["host"], user=m["user"], port=port))
    return tuple(hops)


# --------------------------------------------------------------------------- public API


def load_inventory(path: str | Path, *, ssh_config_path: Path | None = None) -> Inventory:
    """Read, validate and cascade an inventory file.

    ``ssh_config_path`` defaults to ``~/.ssh/config``; a missing file is no error.
    """
    shown = str(path)
    file = Path(path).expanduser()
    try:
        text = file.read_bytes().decode("utf-8")
    except OSError as exc:
        raise InventoryError(shown, f"cannot read the inventory: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise InventoryError(shown, f"not UTF-8 text (byte {exc.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _toml_error(shown, text, exc) from None
    ssh_path = ssh_config_path if ssh_config_path is not None else Path("~/.ssh/config")
    loader = _Loader(shown, file.absolute().parent, _key_lines(text))
    return loader.load(data, _read_ssh_config(ssh_path.expanduser()))


def find_inventory(explicit: str | None, env: Mapping[str, str], cwd: Path) -> Path:
    """Pick the inventory file: ``--inventory``, else ``./inventory.toml``, else ``$COLLECTOR_INVENTORY``."""
    if explicit:
        return _existing(Path(explicit).expanduser(), cwd, "--inventory")
    local = cwd / DEFAULT_NAME
    if local.is_file():
        return local
    if env.get(ENV_VAR):
        return _existing(Path(env[ENV_VAR]).expanduser(), cwd, f"${ENV_VAR}")
    raise InventoryError(
        None,
        f"no inventory: pass --inventory FILE, create ./{DEFAULT_NAME} or set ${ENV_VAR}",
    )


def select_hosts(inv: Inventory, names: Sequence[str], groups: Sequence[str]) -> tuple[Host, ...]:
    """The hosts named (by name or alias) or in one of the groups; all when both are empty.

    Inventory order is kept whatever the order of the filters.
    """
    if not names and not groups:
        return inv.hosts
    by_name: dict[str, str] = {}
    for host in inv.hosts:
        for label in (host.name, *host.aliases):
            by_name.setdefault(label.casefold(), host.name)
    chosen: set[str] = set()
    for name in names:
        if name.casefold() not in by_name:
            known = [h.name for h in inv.hosts]
            raise InventoryError(inv.path, f"no host named {name!r}{_hint(name, known)}")
        chosen.add(by_name[name.casefold()])
    for group in groups:
        if group not in inv.groups:
            raise InventoryError(inv.path, f"no group named {group!r}{_hint(group, inv.groups)}")
    wanted = set(groups)
    return tuple(h for h in inv.hosts if h.name in chosen or wanted.intersection(h.groups))


def host_zone(host: Host) -> tzinfo:
    """The zone the host writes its log timestamps in: its ``timezone``, else this machine's."""
    if host.timezone:
        return ZoneInfo(host.timezone)
    return _local_zone()


# --------------------------------------------------------------------------- helpers


def _local_zone() -> tzinfo:
    # A fixed offset (what astimezone() gives) would shift every line logged on the other
    # side of a DST change by an hour, so prefer the named zone the C library uses. The zone
    # must pickle: whole-log reads parse in worker processes.
    tz = os.environ.get("TZ")
    if tz is None:
        named = _zone_name("/etc/localtime")
        if named is not None:
            return named
        try:
            with open("/etc/localtime", "rb") as fh:
                return _FileZone.of(fh.read())
        except (OSError, ValueError):
            pass
    elif tz:
        try:
            return ZoneInfo(tz.removeprefix(":"))
        except (ZoneInfoNotFoundError, ValueError):
            pass  # a POSIX rule like "CET-1CEST": only the C library knows it
    return datetime.now().astimezone().tzinfo or UTC


def _zone_name(localtime: str) -> ZoneInfo | None:
    """The named zone ``/etc/localtime`` links to (``.../zoneinfo/Europe/Berlin``), else the
    one Debian names in ``/etc/timezone`` when it holds the same rules."""
    try:
        target = os.path.realpath(localtime)
        _, found, key = target.partition("/zoneinfo/")
        if found and key:
            return ZoneInfo(key)
        with open("/etc/timezone", encoding="ascii") as fh:
            key = fh.read().strip()
        zone = ZoneInfo(key)
        with open(localtime, "rb") as a, open(_zone_file(key), "rb") as b:
            return zone if a.read() == b.read() else None
    except (OSError, ValueError, ZoneInfoNotFoundError):
        return None


def _zone_file(key: str) -> str:
    import zoneinfo

    for base in zoneinfo.TZPATH:
        path = os.path.join(base, key)
        if os.path.isfile(path):
            return path
    raise ZoneInfoNotFoundError(key)


class _FileZone(ZoneInfo):
    """A zone read from a TZif file that has no name (a copied ``/etc/localtime``): unlike
    ``ZoneInfo.from_file``'s, it pickles, by its bytes."""

    _tzif: bytes

    @classmethod
    def of(cls, data: bytes) -> _FileZone:
        zone = cls.from_file(io.BytesIO(data), key="localtime")
        zone._tzif = data
        return zone

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        return (_FileZone.of, (self._tzif,))


def _existing(path: Path, cwd: Path, origin: str) -> Path:
    full = path if path.is_absolute() else cwd / path
    if not full.is_file():
        raise InventoryError(str(path), f"inventory file not found (from {origin})")
    return full


def _hint(word: str, choices: Sequence[str], *, list_known: bool = True) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    if not choices or not list_known:
        return ""
    shown = ", ".join(choices[:10]) + (", ..." if len(choices) > 10 else "")
    return f" (known: {shown})"


def _show(value: object) -> str:
    """A value as it would be written in TOML, for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array" if not value else "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


_TOML_POS = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


def _toml_error(shown: str, text: str, exc: tomllib.TOMLDecodeError) -> InventoryError:
    message = str(exc)
    m = _TOML_POS.search(message)
    if m:
        return InventoryError(
            shown, f"invalid TOML: {message[: m.start()]}", line=int(m[1]), column=int(m[2])
        )
    message = message.removesuffix(" (at end of document)")
    return InventoryError(shown, f"invalid TOML: {message}", line=max(1, len(text.splitlines())))


# tomllib keeps no positions: find `key =` lines with a light scan so errors can cite them.
_KEY_LINE = re.compile(r"""([A-Za-z0-9_-]+|"[^"]*"|'[^']*')\s*=""")


def _header(line: str) -> tuple[tuple[str, ...], bool] | None:
    """The table path of a ``[a.b]``/``[[a]]`` line, or None for anything else."""
    try:
        node: Any = tomllib.loads(line)
    except tomllib.TOMLDecodeError:
        return None
    path: list[str] = []
    array = False
    while isinstance(node, dict) and len(node) == 1:
        key, node = next(iter(node.items()))
        path.append(key)
        if isinstance(node, list):
            array, node = True, node[-1]
    return (tuple(path), array) if path and node == {} else None


def _key_lines(text: str) -> dict[_Key, int]:
    found: dict[_Key, int] = {}
    table: _Key = ()
    host_index = -1
    open_quote: str | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if open_quote:
            if line.count(open_quote) % 2:
                open_quote = None
            continue
        if not line or line.startswith("#"):
            continue
        head = _header(line) if line.startswith("[") else None
        if head is not None:
            path, array = head
            if path == ("hosts",) and array:
                host_index += 1
                table = ("hosts", host_index)
            elif path[0] == "hosts" and host_index >= 0:
                table = ("hosts", host_index, *path[1:])
            else:
                table = path
            found.setdefault(table, number)
            continue
        m = _KEY_LINE.match(line)
        if m:
            found.setdefault((*table, m[1].strip("\"'")), number)
            rest = line[m.end() :]
            open_quote = next((q for q in ('"""', "'''") if rest.count(q) % 2), None)
    return found


def _read_ssh_config(path: Path) -> _SSHConfig:
    """The ssh config, parsed the first time an SSH host needs it.

    paramiko costs ~0.2 s to import: an inventory of local hosts never pays for it.
    """
    return _SSHConfig(str(path))


def _parse_ssh_config(path: Path) -> Any:
    try:
        text = _inline_includes(path, path.parent, 0)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InventoryError(str(path), f"cannot read the ssh config: {exc.strerror}") from None
    import paramiko

    try:
        return paramiko.SSHConfig.from_text(text)
    except (paramiko.ssh_exception.ConfigParseError, ValueError) as exc:
        raise InventoryError(str(path), f"bad ssh config: {exc}") from None


_INCLUDE = re.compile(r"^\s*include(?:\s*=\s*|\s+)(.+)$", re.IGNORECASE)


def _inline_includes(path: Path, base: Path, depth: int) -> str:
    # paramiko ignores `Include`; OpenSSH reads the files in place (relative to ~/.ssh).
    if depth > 16:
        raise InventoryError(str(path), "ssh config Include nested too deeply")
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = _INCLUDE.match(line)
        if m is None:
            out.append(line)
            continue
        for pattern in shlex.split(m[1], comments=True):
            full = Path(pattern).expanduser()
            full = full if full.is_absolute() else base / full
            for match in sorted(glob.glob(str(full))):
                if Path(match).is_file():
                    out.append(_inline_includes(Path(match), base, depth + 1))
    return "\n".join(out)


class _SSHConfig:
    def __init__(self, path: str) -> None:
        self.path = path
        self._parsed = False
        self._config: Any = None

    @property
    def config(self) -> Any:
        if not self._parsed:
            self._config = _parse_ssh_config(Path(self.path))
            self._parsed = True
        return self._config

    def lookup(self, name: str) -> dict[str, Any]:
        if self.config is None:
            return {}
        try:
            return dict(self.config.lookup(name))
        # Match exec and CanonicalizeHostname run commands and DNS look-ups inside paramiko,
        # which can fail in any way; one clear message beats a traceback.
        except Exception as exc:  # noqa: BLE001
            raise InventoryError(
                self.path, f"ssh config lookup of {name!r} failed: {exc}"
            ) from None


# --------------------------------------------------------------------------- checks


class _Bad(Exception):
    """A value of the wrong type or form; the caller adds file, line, table and key."""

    def __init__(self, expected: str, value: object) -> None:
        super().__init__(expected)
        self.expected = expected
        self.value = value


_Check = Callable[[object, Path], object]


def _text(value: object, _: Path) -> str:
    if not isinstance(value, str) or not value.strip() or any(c in value for c in "\0\n\r"):
        raise _Bad("a non-empty string", value)
    return value


def _name(value: object, base: Path) -> str:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise _Bad("a non-empty string without spaces", value)
    return value


#: A host's name names a directory of a fetched case (``DEST/<name>/``) and a line of every
#: report: letters, digits, ``.``, ``-``, ``_``, starting with a letter or digit (no ``/``, no
#: ``..``, no control characters).
_HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")
HOST_NAME_RULE = "a host name (letters, digits, '.', '-', '_'; starting with a letter or digit)"


def valid_host_name(value: str) -> bool:
    return _HOST_NAME.fullmatch(value) is not None


def _host_name(value: object, base: Path) -> str:
    if not isinstance(value, str) or not valid_host_name(value):
        raise _Bad(HOST_NAME_RULE, value)
    return value


def _port(value: object, _: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise _Bad("an integer from 1 to 65535", value)
    return value


def _flag(value: object, _: Path) -> bool:
    if not isinstance(value, bool):
        raise _Bad("true or false", value)
    return value


def _names(value: object, base: Path) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _Bad("an array of strings", value)
    try:
        items = [_name(v, base) for v in value]
    except _Bad:
        raise _Bad("an array of non-empty strings without spaces", value) from None
    return tuple(dict.fromkeys(items))


def _collects(value: object, base: Path) -> tuple[str, ...]:
    expected = 'an array of inventory host names, or ["*"]'
    if not isinstance(value, list) or not value:
        raise _Bad(expected, value)
    for item in value:
        if not isinstance(item, str) or not (item == COLLECT_ALL or valid_host_name(item)):
            raise _Bad(expected, value)
    return tuple(dict.fromkeys(value))


def _path(value: object, base: Path) -> str:
    return str(base / Path(_text(value, base)).expanduser())


def _zone(value: object, base: Path) -> str:
    name = _text(value, base)
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise _Bad('an IANA time zone name like "Europe/Berlin"', value) from None
    return name


def _jump(value: object, base: Path) -> str | None:
    spec = _text(value, base)
    try:
        hops = parse_proxy_jump(spec)
    except ValueError:
        raise _Bad('"[user@]host[:port]" hops separated by commas, or "none"', value) from None
    return ",".join(str(h) for h in hops) or None


def _logs(value: object, base: Path) -> tuple[str, ...]:
    expected = "an array of absolute paths or globs"
    if not isinstance(value, list) or not value:
        raise _Bad(expected, value)
    for item in value:
        if not isinstance(item, str) or not item.startswith("/") or "\0" in item:
            raise _Bad(expected, value)
    return tuple(dict.fromkeys(value))


def _choice(kind: type[TransportKind | SourceMode | HostKeyPolicy]) -> _Check:
    def check(value: object, _: Path) -> object:
        if isinstance(value, str) and value in kind._value2member_map_:
            return kind(value)
        raise _Bad("one of " + ", ".join(json.dumps(k.value) for k in kind), value)

    return check


def _count(value: object, _: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _Bad("an integer of at least 1", value)
    return value


def _seconds(value: object, _: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Bad("a number of seconds above 0", value)
    if not math.isfinite(value) or value <= 0:
        raise _Bad("a number of seconds above 0", value)
    return float(value)


_HOST_CHECKS: dict[str, _Check] = {
    "name": _host_name,
    "address": _text,
    "port": _port,
    "user": _text,
    "identity_file": _path,
    "identities_only": _flag,
    "proxy_jump": _jump,
    "sudo": _flag,
    "timezone": _zone,
    "groups": _names,
    "aliases": _names,
    "transport": _choice(TransportKind),
    "root": _path,
    "logs": _logs,
    "source": _choice(SourceMode),
    "collects": _collects,
}
_GLOBAL_CHECKS: dict[str, _Check] = {
    "known_hosts": _path,
    "host_key_policy": _choice(HostKeyPolicy),
    "workers": _count,
    "connect_timeout": _seconds,
    "command_timeout": _seconds,
}


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True, slots=True)
class _Layer:
    """One validated table of host keys and where it came from."""

    label: str  # "[defaults]", "[groups.inbound]", "host mx1"
    values: Mapping[str, object]
    lines: Mapping[str, int | None]


@dataclass(frozen=True, slots=True)
class _Loader:
    path: str
    base: Path
    lines: Mapping[_Key, int]

    def fail(
        self, problem: str, *, at: _Key = (), key: str | None = None, section: str | None = None,
        host: str | None = None, line: int | None = None,
    ) -> InventoryError:  # fmt: skip
        if line is None:
            line = self.line(at, key)
        return InventoryError(self.path, problem, line=line, section=section, key=key, host=host)

    def line(self, at: _Key, key: str | None) -> int | None:
        if key is not None and (*at, key) in self.lines:
            return self.lines[(*at, key)]
        return self.lines.get(at) if at else None

    def load(self, data: dict[str, Any], ssh: _SSHConfig) -> Inventory:
        for key in data:
            if key in GLOBAL_KEYS or key in _TABLES:
                continue
            hint = _hint(key, GLOBAL_KEYS + _TABLES, list_known=False)
            if key in HOST_KEYS:
                hint = " (host keys belong in [defaults], [groups.NAME] or [[hosts]])"
            raise self.fail(f"unknown key {key!r}{hint}", at=(), key=key, section="top level")
        settings = self.settings(data)
        defaults = self.layer(data.get("defaults", {}), ("defaults",), "[defaults]", None)
        groups = self.groups(data.get("groups", {}))
        hosts = self.hosts(data.get("hosts"), defaults, groups, ssh)
        return Inventory(path=self.path, hosts=hosts, groups=tuple(groups), settings=settings)

    def settings(self, data: Mapping[str, Any]) -> Settings:
        values = {}
        for key, check in _GLOBAL_CHECKS.items():
            if key in data:
                values[key] = self.checked(check, data[key], (), key, "top level", None)
        return Settings(**values)  # type: ignore[arg-type]

    def checked(
        self, check: _Check, value: object, at: _Key, key: str, section: str, host: str | None
    ) -> object:
        try:
            return check(value, self.base)
        except _Bad as bad:
            problem = f"{key!r} must be {bad.expected}, got {_show(bad.value)}"
            raise self.fail(problem, at=at, key=key, section=section, host=host) from None

    def layer(self, table: object, at: _Key, label: str, host: str | None) -> _Layer:
        if not isinstance(table, dict):
            raise self.fail(f"{label} must be a table, got {_show(table)}", at=at)
        values: dict[str, object] = {}
        for key, value in table.items():
            if key not in _HOST_CHECKS:
                hint = _hint(key, HOST_KEYS, list_known=False)
                if key in GLOBAL_KEYS:
                    hint = " (a file-wide setting: put it above the first [table])"
                raise self.fail(
                    f"unknown key {key!r}{hint}", at=at, key=key, section=label, host=host
                )
            if host is None and key in _HOST_ONLY:
                raise self.fail(
                    f"{key!r} can only be set in a [[hosts]] table", at=at, key=key, section=label
                )
            values[key] = self.checked(_HOST_CHECKS[key], value, at, key, label, host)
        lines = {key: self.line(at, key) for key in values}
        return _Layer(label, values, lines)

    def groups(self, table: object) -> dict[str, _Layer]:
        if not isinstance(table, dict):
            raise self.fail(
                f"'groups' must be a table of [groups.NAME] tables, got {_show(table)}",
                at=(), key="groups", section="top level",
            )  # fmt: skip
        return {
            name: self.layer(body, ("groups", name), f"[groups.{name}]", None)
            for name, body in table.items()
        }

    def hosts(
        self, items: object, defaults: _Layer, groups: Mapping[str, _Layer], ssh: _SSHConfig
    ) -> tuple[Host, ...]:
        if items is None or items == []:
            raise self.fail("no hosts: add at least one [[hosts]] table")
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise self.fail(
                f"'hosts' must be an array of [[hosts]] tables, got {_show(items)}",
                at=(), key="hosts", section="top level",
            )  # fmt: skip
        hosts: list[Host] = []
        owners: dict[str, tuple[str, str]] = {}  # casefolded name/alias -> (host, what)
        carrier = self.carriers(items)
        for index, table in enumerate(items):
            at: _Key = ("hosts", index)
            name = str(table["name"])
            own = self.layer(table, at, f"host {name}", name)
            chain = [defaults]
            for group in cast(tuple[str, ...], own.values.get("groups", ())):
                if group not in groups:
                    raise self.fail(
                        f"unknown group {group!r}" + (_hint(group, list(groups)) or
                                                      " (no [groups.NAME] tables are defined)"),
                        at=at, key="groups", section=own.label, host=name,
                    )  # fmt: skip
                chain.append(groups[group])
            host = self.cascade(name, at, [*chain, own], ssh, carrier.get(name))
            for label in (host.name, *host.aliases):
                what = "name" if label == host.name else "alias"
                if label.casefold() in owners and owners[label.casefold()][0] != name:
                    other, other_what = owners[label.casefold()]
                    key = "name" if what == "name" else "aliases"
                    raise self.fail(
                        f"{what} {label!r} is already the {other_what} of host {other}",
                        at=at, key=key, section=own.label, host=name,
                    )  # fmt: skip
                owners.setdefault(label.casefold(), (name, what))
            hosts.append(host)
        # A collected host's lines are read, and their stamps placed in time, on its log host.
        readers = {h.name: h for h in hosts if h.via is None}
        return tuple(
            dataclasses.replace(h, transport=readers[h.via].transport,
                                timezone=readers[h.via].timezone)
            if h.via is not None else h
            for h in hosts
        )  # fmt: skip

    def carriers(self, items: list[dict[str, Any]]) -> dict[str, str]:
        """Each collected host's log host (``collects``), checked before any host is built."""
        names: list[str] = []
        wanted: list[tuple[int, str, tuple[str, ...]]] = []
        for index, table in enumerate(items):
            at: _Key = ("hosts", index)
            if "name" not in table:
                raise self.fail("missing required key 'name'", at=at, section=f"host #{index + 1}")
            name = str(self.checked(_host_name, table["name"], at, "name", f"host #{index + 1}", None))
            names.append(name)
            if "collects" in table:
                label = f"host {name}"
                value = self.checked(_collects, table["collects"], at, "collects", label, name)
                wanted.append((index, name, cast(tuple[str, ...], value)))
        collectors = {name for _, name, _ in wanted}
        carrier: dict[str, str] = {}
        star: str | None = None
        for index, name, listed in wanted:
            def fail(problem: str) -> InventoryError:
                return self.fail(problem, at=("hosts", index), key="collects",
                                 section=f"host {name}", host=name)  # fmt: skip

            if COLLECT_ALL in listed:
                if len(listed) > 1:
                    raise fail('"*" collects every host: list names or "*", not both')
                if star is not None:
                    raise fail(f'only one host may collect "*" (host {star} does already)')
                star = name
                continue
            for other in listed:
                if other == name:
                    raise fail("a host cannot collect itself (its own lines are its own)")
                if other not in names:
                    raise fail(f"no host named {other!r}{_hint(other, names)}")
                if other in collectors:
                    raise fail(f"host {other} collects other hosts itself: a log host "
                               "cannot be collected")  # fmt: skip
                if other in carrier:
                    raise fail(f"host {other} is collected twice (host {carrier[other]} "
                               "collects it already)")  # fmt: skip
                carrier[other] = name
        if star is not None:
            for other in names:
                if other not in carrier and other not in collectors:
                    carrier[other] = star
        return carrier

    def cascade(
        self, name: str, at: _Key, chain: list[_Layer], ssh: _SSHConfig, via: str | None = None
    ) -> Host:
        merged: dict[str, tuple[object, _Layer]] = {}
        for layer in chain:
            for key, value in layer.values.items():
                merged[key] = (value, layer)
        own = chain[-1]
        if via is not None:
            return self.collected(name, at, own, merged, via)

        def fail(problem: str, key: str) -> InventoryError:
            where = merged[key][1] if key in merged else own
            return self.fail(
                problem, key=key, section=own.label, host=name, line=where.lines.get(key)
                or self.line(at, None),
            )  # fmt: skip

        def setin(key: str) -> str:
            layer = merged[key][1]
            return "" if layer is own else f" (set in {layer.label})"

        values = {key: value for key, (value, _) in merged.items()}
        transport = values.get("transport", TransportKind.SSH)
        if transport is TransportKind.LOCAL:
            if "root" not in values:
                raise fail("transport \"local\" needs 'root' (the directory that is its /)", "root")
            for key in _SSH_ONLY:
                if key in own.values:
                    raise fail(f'{key!r} is for ssh hosts; this host has transport "local"', key)
                # Inherited ssh settings simply do not apply to a directory.
                values.pop(key, None)
        elif "root" in values:
            raise fail(f"'root' is for transport \"local\" only{setin('root')}", "root")
        if values.get("logs") and values.get("source") is SourceMode.JOURNAL:
            raise fail(f"'logs' lists files but 'source' is \"journal\"{setin('source')}", "logs")
        if transport is TransportKind.SSH:
            self.apply_ssh_config(name, values, ssh)
        values["name"] = name
        return Host(**values)  # type: ignore[arg-type]

    def collected(
        self, name: str, at: _Key, own: _Layer, merged: Mapping[str, tuple[object, _Layer]],
        via: str,
    ) -> Host:
        """A host whose lines are read on its log host ``via``: never connected to.

        Only its names matter (``name``, ``aliases``, and ``address`` if it gives one: a name
        other hosts' logs may call it by); how to reach or read it is the log host's.
        """
        for key in _READ_KEYS:
            if key in own.values:
                raise self.fail(
                    f"{key!r} has no meaning here: host {name}'s lines are read on its log "
                    f"host {via}", key=key, section=own.label, host=name,
                    line=own.lines.get(key) or self.line(at, None),
                )  # fmt: skip
        values = {k: v for k, (v, _) in merged.items() if k in ("groups", "aliases")}
        if "address" in own.values:
            values["address"] = own.values["address"]
        return Host(name=name, via=via, **values)  # type: ignore[arg-type]

    def apply_ssh_config(self, name: str, values: dict[str, object], ssh: _SSHConfig) -> None:
        """Fill what the inventory leaves unset from ``~/.ssh/config``, as ``ssh NAME`` would."""
        found = ssh.lookup(name)
        if "address" not in values:
            values["address"] = found.get("hostname") or name
        if "user" not in values and found.get("user"):
            values["user"] = found["user"]
        if "port" not in values and "port" in found:
            values["port"] = self.ssh_port(ssh.path, name, found["port"])
        if "identity_file" not in values and found.get("identityfile"):
            files = [os.path.expanduser(f) for f in found["identityfile"]]
            # OpenSSH tries each IdentityFile in turn and skips missing ones.
            values["identity_file"] = next((f for f in files if os.path.isfile(f)), files[0])
        if "identities_only" not in values and "identitiesonly" in found:
            values["identities_only"] = str(found["identitiesonly"]).lower() == "yes"
        if "proxy_jump" not in values and found.get("proxyjump"):
            try:
                hops = parse_proxy_jump(found["proxyjump"])
            except ValueError as exc:
                raise InventoryError(ssh.path, f"host {name}: ProxyJump: {exc}") from None
            values["proxy_jump"] = ",".join(str(h) for h in hops) or None
        if values.get("proxy_jump"):
            values["proxy_jump"] = self.resolve_jumps(str(values["proxy_jump"]), ssh)

    def resolve_jumps(self, spec: str, ssh: _SSHConfig) -> str:
        # OpenSSH reaches each jump host as `ssh HOP`, so its HostName/User/Port apply too.
        hops = []
        for hop in parse_proxy_jump(spec):
            found = ssh.lookup(hop.host)
            port = hop.port
            if port is None and "port" in found:
                port = self.ssh_port(ssh.path, hop.host, found["port"])
            host = found.get("hostname") or hop.host
            hops.append(JumpHop(host=host, user=hop.user or found.get("user"), port=port))
        return ",".join(str(h) for h in hops)

    @staticmethod
    def ssh_port(path: str, name: str, value: object) -> int:
        try:
            port = int(str(value))
        except ValueError:
            port = 0
        if not 1 <= port <= 65535:
            raise InventoryError(path, f"host {name}: Port {value!r} is not a port number")
        return port

"""Where a host's Postfix lines are: main.cf / postconf, distro defaults, journald.

A pure core (main.cf parsing, ``$name`` expansion, rotation naming and ordering, the plan)
and a thin probe, :func:`discover`, that asks a :class:`FileSystemView` for the few files,
directory listings and ``postconf`` runs it needs. The view is the only I/O: the same probe
serves a local directory-as-host and an SSH session.
"""

from __future__ import annotations

import enum
import fnmatch
import posixpath
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from types import MappingProxyType
from typing import Protocol

from collector.models import (
    CommandResult,
    Compression,
    Coverage,
    Host,
    LogSource,
    Origin,
    SourceKind,
    SourceMode,
    Unread,
)

# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class FileInfo:
    """One directory entry as a view reports it; ``mtime`` is seconds since the epoch.

    ``target`` is the host path to read instead of ``path``: a directory host's symlink
    whose target the system would look for outside the root (see ``SessionView``).
    """

    path: str
    size: int | None = None
    mtime: float | None = None
    readable: bool = True
    is_dir: bool = False
    target: str | None = None
    sudo: bool = False  # readable only as root, through sudo (``readable`` says collector can)

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)


@dataclass(frozen=True, slots=True)
class PostfixConfig:
    """The logging-related parameters of one Postfix instance, ``$names`` expanded.

    ``origin`` says where the values came from: ``postconf``, ``main.cf`` or ``defaults``
    (no configuration found). ``maillog_file`` empty means the instance logs to syslog.
    """

    config_dir: str
    maillog_file: str = ""
    syslog_name: str = "postfix"
    syslog_facility: str = "mail"
    multi_instance_name: str = ""
    multi_instance_directories: tuple[str, ...] = ()
    multi_instance_enable: bool = False
    maillog_file_rotate_suffix: str = "%Y%m%d-%H%M%S"
    maillog_file_compressor: str = "gzip"
    enable_long_queue_ids: bool = False
    mail_version: str | None = None
    origin: str = "defaults"

    @property
    def instance(self) -> str:
        """The first component of the syslog tag, as parse reports it in ``Record.instance``."""
        return self.syslog_name.split("/", 1)[0] or "postfix"


@dataclass(frozen=True, slots=True)
class DiscoveryResult:
    """What discovery decided for one host, and why.

    ``sources`` are grouped per log family, each family oldest to newest. ``notes`` are
    one-line, human-readable reasons: what was used, skipped, ignored as stale, missing.
    """

    host: str
    sources: tuple[LogSource, ...]
    notes: tuple[str, ...] = ()
    postfix_version: str | None = None
    instances: tuple[PostfixConfig, ...] = ()
    #: A fetched copy's sources that were not read completely when it was fetched.
    recorded: tuple[Unread, ...] = ()
    #: When a fetched copy was made (its manifest says): its live logs end there.
    fetched_at: datetime | None = None
    #: What the fetch that made a copy saw of its window (see ``logs.coverage.recorded``).
    coverage: Coverage | None = None
    #: The selectors a filtered case was fetched with (None: a whole copy, or a live host).
    selected: Mapping[str, frozenset[str]] | None = None


class FileSystemView(Protocol):
    """The little a transport must offer discovery. Paths are the host's absolute paths."""

    def read_text(self, path: str) -> str | None:
        """The file's text, or None if it is missing or unreadable."""
        ...

    def list_dir(self, path: str) -> list[FileInfo] | None:
        """The directory's entries (symlinks followed), or None if missing or unreadable."""
        ...

    def run(self, argv: Sequence[str]) -> CommandResult | None:
        """Run a command on the host; None when this view cannot run commands at all."""
        ...


# --------------------------------------------------------------------------- main.cf


# Postfix's own defaults for the parameters discovery reads (postconf.proto). Read-only.
POSTFIX_DEFAULTS: Mapping[str, str] = MappingProxyType(
    {
        "config_directory": "/etc/postfix",
        "queue_directory": "/var/spool/postfix",
        "maillog_file": "",
        "maillog_file_rotate_suffix": "%Y%m%d-%H%M%S",
        "maillog_file_compressor": "gzip",
        "syslog_name": "${multi_instance_name?{$multi_instance_name}:{postfix}}",
        "syslog_facility": "mail",
        "multi_instance_name": "",
        "multi_instance_directories": "",
        "multi_instance_enable": "no",
        "enable_long_queue_ids": "no",
    }
)

# The parameters asked of postconf, by name (``postconf -h`` would print bare values in
# argument order, which breaks silently when an old Postfix skips an unknown name).
POSTCONF_NAMES: tuple[str, ...] = (
    "mail_version",
    "maillog_file",
    "maillog_file_rotate_suffix",
    "maillog_file_compressor",
    "syslog_name",
    "syslog_facility",
    "multi_instance_name",
    "multi_instance_directories",
    "multi_instance_enable",
    "enable_long_queue_ids",
)

_NAME = re.compile(r"[A-Za-z0-9_]+")
# Postfix gives up at 100 nested expansions ("unreasonable macro call nesting"); a loop
# like ``a = $b``, ``b = $a`` expands to empty here instead of failing discovery.
_MAX_DEPTH = 100
# A main.cf is host text: ``a = $b$b``, ``b = $c$c``, ... doubles at every level. One
# expansion looks up at most this many names; past that, names expand to empty.
_MAX_LOOKUPS = 10_000


def parse_main_cf(text: str) -> dict[str, str]:
    """``name = value`` pairs of a main.cf (or of ``postconf`` output), last one wins.

    Comment lines (first non-blank ``#``) are skipped even inside a continued value, as
    Postfix's readlline() does; a ``#`` later in a line is part of the value.
    """
    params: dict[str, str] = {}
    logical: list[str] = []

    def flush() -> None:
        if not logical:
            return
        name, sep, value = " ".join(logical).partition("=")
        name = name.strip()
        if sep and _NAME.fullmatch(name):
            params[name] = value.strip()
        logical.clear()

    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if raw[0].isspace():
            if logical:
                logical.append(stripped)
            continue
        flush()
        logical.append(stripped)
    flush()
    return params


def expand(params: Mapping[str, str], value: str) -> str:
    """Expand ``$name``, ``${name}``, ``$(name)``, ``${name?x}``, ``${name:x}``,
    ``${name?{x}:{y}}`` and ``$$`` the way Postfix does, recursively.

    Names missing from ``params`` take :data:`POSTFIX_DEFAULTS`, else the empty string.
    Postfix 3.x comparison forms (``${{$a} == {b}?...}``) are left as written.
    """
    return _expand(params, value, 0, [_MAX_LOOKUPS])


def _lookup(params: Mapping[str, str], name: str, depth: int, budget: list[int]) -> str:
    budget[0] -= 1
    if budget[0] < 0:
        return ""
    raw = params.get(name)
    if raw is None:
        raw = POSTFIX_DEFAULTS.get(name, "")
    return _expand(params, raw, depth + 1, budget)


def _matching(text: str, start: int, open_: str, close: str) -> int:
    """Index of the bracket closing the one at ``start``, or -1."""
    level = 0
    for i in range(start, len(text)):
        if text[i] == open_:
            level += 1
        elif text[i] == close:
            level -= 1
            if level == 0:
                return i
    return -1


def _braced(text: str) -> tuple[str, str] | None:
    """Split ``{inner}rest`` into (inner, rest), or None when ``text`` is not braced."""
    if not text.startswith("{"):
        return None
    end = _matching(text, 0, "{", "}")
    if end < 0:
        return None
    return text[1:end], text[end + 1 :]


def _conditional(
    params: Mapping[str, str], name: str, op: str, arg: str, depth: int, budget: list[int]
) -> str:
    value = _lookup(params, name, depth, budget)
    if op == "?":
        yes, no = arg, ""
        braced = _braced(arg)
        if braced is not None:
            yes, rest = braced
            rest = rest.strip()
            if rest.startswith(":"):
                other = _braced(rest[1:].strip())
                no = other[0] if other is not None else rest[1:]
        chosen = yes if value else no
    else:
        braced = _braced(arg)
        chosen = (braced[0] if braced is not None else arg) if not value else ""
    return _expand(params, chosen, depth + 1, budget)


def _expand(params: Mapping[str, str], text: str, depth: int, budget: list[int]) -> str:
    if depth > _MAX_DEPTH or "$" not in text:
        return "" if depth > _MAX_DEPTH else text
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        nxt = text[i + 1] if i + 1 < len(text) else ""
        if ch != "$":
            out.append(ch)
            i += 1
        elif nxt == "$":
            out.append("$")
            i += 2
        elif nxt in ("{", "("):
            close = "}" if nxt == "{" else ")"
            end = _matching(text, i + 1, nxt, close)
            inner = text[i + 2 : end] if end >= 0 else ""
            m = _NAME.match(inner)
            if end < 0 or m is None:
                out.append(text[i:] if end < 0 else text[i : end + 1])
                i = len(text) if end < 0 else end + 1
                continue
            rest = inner[m.end() :]
            if not rest:
                out.append(_lookup(params, m.group(), depth, budget))
            elif rest[0] in "?:" and nxt == "{":
                out.append(_conditional(params, m.group(), rest[0], rest[1:], depth, budget))
            else:
                out.append(text[i : end + 1])
            i = end + 1
        else:
            m = _NAME.match(text, i + 1)
            if m is None:
                out.append("$")
                i += 1
            else:
                out.append(_lookup(params, m.group(), depth, budget))
                i = m.end()
    return "".join(out)


def _yes(value: str) -> bool:
    return value.strip().lower() in ("yes", "true", "1")


def _config_from_params(
    params: Mapping[str, str], config_dir: str, origin: str, mail_version: str | None
) -> PostfixConfig:
    def get(name: str) -> str:
        return expand(params, "${" + name + "}").strip()

    return PostfixConfig(
        config_dir=config_dir,
        maillog_file=get("maillog_file"),
        syslog_name=get("syslog_name") or "postfix",
        syslog_facility=get("syslog_facility") or "mail",
        multi_instance_name=get("multi_instance_name"),
        multi_instance_directories=tuple(
            d for d in re.split(r"[\s,]+", get("multi_instance_directories")) if d
        ),
        multi_instance_enable=_yes(get("multi_instance_enable")),
        maillog_file_rotate_suffix=get("maillog_file_rotate_suffix"),
        maillog_file_compressor=get("maillog_file_compressor"),
        enable_long_queue_ids=_yes(get("enable_long_queue_ids")),
        mail_version=mail_version or params.get("mail_version") or None,
        origin=origin,
    )


def config_from_main_cf(text: str, config_dir: str) -> PostfixConfig:
    """The instance configured by this main.cf text, Postfix defaults filling the gaps."""
    return _config_from_params(parse_main_cf(text), config_dir, "main.cf", None)


def default_config(config_dir: str, mail_version: str | None = None) -> PostfixConfig:
    """What Postfix would do with no main.cf at all (log to syslog as ``postfix``)."""
    return _config_from_params({}, config_dir, "defaults", mail_version)


# --------------------------------------------------------------------------- postconf


class PostconfError(ValueError):
    """postconf printed no ``name = value`` line; the message is its first line of output."""


class PostconfStatus(enum.StrEnum):
    OK = "ok"
    NOT_FOUND = "not-found"  # no such binary here (non-root PATH lacks /usr/sbin)
    NO_MAIN_CF = "no-main-cf"  # "fatal: open /etc/postfix/main.cf: ..." (missing or unreadable)
    FAILED = "failed"


#: Exit code of :func:`postconf_argv`'s guard when ``DIR/main.cf`` cannot be read.
NO_MAIN_CF_EXIT = 66  # EX_NOINPUT
# Runs postconf only when DIR/main.cf is readable: postconf's fatal error ("fatal: open
# .../main.cf") sleeps a second before it exits (Postfix's msg_fatal), on every host without
# one. $1 = DIR, then postconf's argv. A constant: the inputs are arguments. printf, not
# echo: dash's echo reads backslashes in DIR (the host's own postconf -d names it) as escapes,
# and "\c" would cut the message that says why.
_GUARD = ('if [ -r "$1/main.cf" ]; then shift; exec "$@"; fi; '
          "printf 'not run: %s/main.cf is missing or unreadable\\n' \"$1\" >&2; "
          f"exit {NO_MAIN_CF_EXIT}")


def postconf_argv(
    postconf: str, config_dir: str | None, *, expand_values: bool = True
) -> list[str]:
    """``postconf [-c DIR] [-x] NAMES...``: with names, so the output cannot be misaligned.

    ``-x`` (Postfix 2.10+) lets Postfix expand ``$names`` itself. With ``DIR`` it runs only
    when ``DIR/main.cf`` is readable (else exit :data:`NO_MAIN_CF_EXIT`, a second sooner).
    """
    argv = [postconf]
    if config_dir is not None:
        argv += ["-c", config_dir]
    if expand_values:
        argv.append("-x")
    argv += POSTCONF_NAMES
    if config_dir is None:
        return argv
    return ["sh", "-c", _GUARD, "sh", config_dir, *argv]


def postconf_defaults_argv(postconf: str) -> list[str]:
    """``postconf -d config_directory mail_version``: works even when main.cf is missing."""
    return [postconf, "-d", "config_directory", "mail_version"]


def postconf_status(result: CommandResult) -> PostconfStatus:
    """Classify a postconf run by its exit code and messages."""
    err = result.stderr.decode("utf-8", "replace")
    out = result.stdout.decode("utf-8", "replace")
    # 127: the shell found no such command ("command not found", dash's "not found", or
    # "No such file or directory" for an absolute path); 126: found but not executable.
    if result.exit_code in (126, 127):
        return PostconfStatus.NOT_FOUND
    if re.search(r"fatal: open \S*main\.cf", err + out) or (
        result.exit_code == NO_MAIN_CF_EXIT and "main.cf is missing or unreadable" in err
    ):
        return PostconfStatus.NO_MAIN_CF
    if result.exit_code != 0 or not parse_main_cf(out):
        return PostconfStatus.FAILED
    return PostconfStatus.OK


def config_from_postconf(output: str, config_dir: str) -> PostfixConfig:
    """The instance described by ``postconf [-c DIR] [-x] name...`` output.

    Values are expanded again against the output and :data:`POSTFIX_DEFAULTS`, so output
    without ``-x`` works too; a literal ``$`` in an already expanded value is not supported.
    """
    params = parse_main_cf(output)
    if not params:
        first = next((ln.strip() for ln in output.splitlines() if ln.strip()), "no output")
        raise PostconfError(first)
    return _config_from_params(params, config_dir, "postconf", None)


def _first_line(result: CommandResult) -> str:
    text = (result.stderr or result.stdout).decode("utf-8", "replace")
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), f"exit {result.exit_code}")


# --------------------------------------------------------------------------- rotations

_COMPRESSION_BY_EXT: Mapping[str, Compression] = MappingProxyType(
    {
        ".gz": Compression.GZIP,
        ".bz2": Compression.BZIP2,
        ".xz": Compression.XZ,
        ".zst": Compression.ZSTD,
    }
)
_COMPRESSED = r"(?:\.(?:gz|bz2|xz|zst))?"
# Debian/FreeBSD numbered rotations (mail.log.1, maillog.0.bz2); 1-4 digits so that a
# date (8 digits) is never read as an index.
_NUMBERED = r"\.\d{1,4}"
# logrotate dateext: -YYYYMMDD (RHEL, SUSE), -YYYYMMDDHH (hourly), -YYYYMMDD-<epoch>
# (dateformat -%Y%m%d-%s); also .YYYYMMDD-HHMMSS, postfix logrotate's default suffix.
_DATED = r"[.-]\d{8}(?:\d{2})?(?:-\d+)?"
# What each strftime directive can print, as a regex of fixed width (a suffix is host text:
# the regex built from it must not backtrack). %% is a literal %.
_STRFTIME: Mapping[str, str] = MappingProxyType(
    {
        "Y": r"\d{4}", "G": r"\d{4}", "y": r"\d{2}", "g": r"\d{2}", "C": r"\d{2}",
        "m": r"\d{2}", "d": r"\d{2}", "e": r"[ \d]\d", "j": r"\d{3}",
        "H": r"\d{2}", "I": r"\d{2}", "k": r"[ \d]\d", "l": r"[ \d]\d", "M": r"\d{2}",
        "S": r"\d{2}", "u": r"\d", "w": r"\d", "U": r"\d{2}", "V": r"\d{2}", "W": r"\d{2}",
        "b": r"[A-Za-z]{3}", "h": r"[A-Za-z]{3}", "a": r"[A-Za-z]{3}", "p": r"[AP]M",
        "z": r"[+-]\d{4}", "F": r"\d{4}-\d{2}-\d{2}", "T": r"\d{2}:\d{2}:\d{2}",
        "R": r"\d{2}:\d{2}", "%": "%",
    }
)  # fmt: skip
# Directives of variable width (seconds since the epoch, names); anything else strftime may
# print as is or not at all.
_STRFTIME_VARIABLE: Mapping[str, str] = MappingProxyType(
    {"s": r"\d+", "A": "[A-Za-z]+", "B": "[A-Za-z]+", "Z": "[A-Za-z]+"}
)
#: The longest ``maillog_file_rotate_suffix`` looked at (Postfix's default has 14 characters).
MAX_ROTATE_SUFFIX = 64
#: Names in one directory that share a log's name and are checked as its rotations; a file
#: name is at most 255 bytes (NAME_MAX), a longer one is no rotation.
MAX_ROTATION_NAMES = 10_000
_NAME_MAX = 255


class SuffixError(ValueError):
    """A ``maillog_file_rotate_suffix`` that cannot be matched in linear time."""


def strftime_regex(pattern: str) -> str:
    """A regex for what ``strftime(pattern)`` can produce, linear by construction.

    Every directive has a fixed width but at most one (``%s``, a name, or a directive not
    known here, which may print anything): with one unbounded quantifier and fixed text
    around it a match costs at most (name length) x (pattern length). Raises
    :class:`SuffixError` for a longer pattern, or one with two directives of variable width.
    """
    if len(pattern) > MAX_ROTATE_SUFFIX:
        raise SuffixError(f"longer than {MAX_ROTATE_SUFFIX} characters")
    out: list[str] = []
    variable = ""
    i = 0
    while i < len(pattern):
        if pattern[i] == "%" and i + 1 < len(pattern):
            d = pattern[i + 1]
            fixed = _STRFTIME.get(d)
            if fixed is None:
                if variable:
                    raise SuffixError(f"%{variable} and %{d} both vary in width")
                variable = d
                fixed = _STRFTIME_VARIABLE.get(d, "[^/]+")
            out.append(fixed if d != "%" else re.escape("%"))
            i += 2
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


def compression_of(name: str) -> Compression:
    """Compression as told by the file name's extension."""
    return _COMPRESSION_BY_EXT.get(posixpath.splitext(name)[1], Compression.NONE)


def _rotation_key(name: str) -> tuple[int, int, int]:
    """Age order from the name alone: ``.3.gz`` < ``.1`` < ``-20240114`` < base."""
    stem = name
    if compression_of(stem) is not Compression.NONE:
        stem = posixpath.splitext(stem)[0]
    m = re.search(r"[.-](\d{8})(\d{2})?(?:-(\d+))?$", stem)
    if m:
        when, hour, extra = m.groups()
        if extra is not None and len(extra) == 6:
            stamp, tail = when + extra, 0  # YYYYMMDD-HHMMSS
        else:
            stamp, tail = when + (hour or ""), int(extra or 0)  # YYYYMMDD[HH][-epoch]
        return (1, int(stamp.ljust(14, "0")), tail)
    m = re.search(r"\.(\d{1,4})$", stem)
    if m:
        return (0, -int(m.group(1)), 0)
    return (2, 0, 0)


def rotation_stem(path: str) -> str:
    """The live file a file is (a rotation of): its path without a compression extension and
    a numbered or dated rotation suffix. Two files of one stem are one stream over time; files
    of different stems (one per host, on a log host) are written side by side."""
    stem = path
    if compression_of(stem) is not Compression.NONE:
        stem = posixpath.splitext(stem)[0]
    return re.sub(r"(?:[.-]\d{8}(?:\d{2})?(?:-\d+)?|\.\d{1,4})$", "", stem)


def rotation_candidates(
    base: str,
    names_in_dir: Iterable[str],
    rotate_suffix: str | None,
    notes: list[str] | None = None,
) -> list[str]:
    """The names among ``names_in_dir`` that are rotations of ``base``, oldest first by name.

    ``rotate_suffix`` is ``maillog_file_rotate_suffix`` (``postfix logrotate`` renames to
    ``base.SUFFIX`` and then compresses), or None for syslog files. The suffix, the names
    and their number come from the host: a suffix that cannot be matched in linear time is
    not used, and only :data:`MAX_ROTATION_NAMES` names are checked; ``notes`` says so.
    """
    name = posixpath.basename(base)
    forms = [_NUMBERED, _DATED]
    if rotate_suffix:
        try:
            forms.append(r"\." + strftime_regex(rotate_suffix))
        except SuffixError as exc:
            _note(notes, f"maillog_file_rotate_suffix {rotate_suffix[:40]!r}: {exc}; "
                  "its rotations are looked for by the usual names only")
    rx = re.compile(re.escape(name) + "(?:" + "|".join(forms) + ")" + _COMPRESSED)
    alike = [n for n in names_in_dir if n.startswith(name) and len(n) <= _NAME_MAX]
    if len(alike) > MAX_ROTATION_NAMES:
        _note(notes, f"{base}: {len(alike)} names alike, only the first "
              f"{MAX_ROTATION_NAMES} looked at as rotations")
        alike = alike[:MAX_ROTATION_NAMES]
    found = {n for n in alike if rx.fullmatch(n)}
    return sorted(found, key=lambda n: (_rotation_key(n), n))


def _note(notes: list[str] | None, text: str) -> None:
    if notes is not None and text not in notes:
        notes.append(text)


def order_sources(
    files: Iterable[FileInfo], *, origin: Origin = Origin.DEFAULT, instance: str | None = None
) -> list[LogSource]:
    """File sources oldest to newest: by mtime, ties (and unknown mtimes) by rotation name."""
    entries = list(files)
    by_mtime = all(f.mtime is not None for f in entries)

    def key(f: FileInfo) -> tuple[float, tuple[int, int, int], str]:
        return ((f.mtime or 0.0) if by_mtime else 0.0, _rotation_key(f.name), f.path)

    return [
        LogSource(
            path=f.target or f.path,
            kind=SourceKind.FILE,
            origin=origin,
            compression=compression_of(f.name),
            size=f.size,
            mtime=f.mtime,
            instance=instance,
            readable=f.readable,
            sudo=f.sudo,
        )
        for f in sorted(entries, key=key)
    ]


# --------------------------------------------------------------------------- plan

DEFAULT_LOGS: tuple[str, ...] = ("/var/log/maillog", "/var/log/mail.log", "/var/log/mail")
# Not read unless named in ``logs``: they mix all programs, but may be all a host has.
_CATCH_ALL_LOGS: tuple[str, ...] = ("/var/log/messages", "/var/log/syslog")
#: Where journald keeps its files (and a directory host its copy), in order.
JOURNAL_DIRS: tuple[str, ...] = ("/var/log/journal", "/run/log/journal")
_FACILITIES: Mapping[str, int] = MappingProxyType(
    {
        "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6,
        "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11,
        **{f"local{n}": 16 + n for n in range(8)},
    }
)  # fmt: skip


def directories_to_list(configs: Sequence[PostfixConfig], host: Host) -> list[str]:
    """The directories :func:`plan_sources` needs listed, in a stable order."""
    if host.logs:
        wanted = [posixpath.dirname(p) for p in host.logs if p.startswith("/")]
    else:
        wanted = [posixpath.dirname(c.maillog_file) for c in configs if _is_log_path(c)]
        wanted += [posixpath.dirname(p) for p in DEFAULT_LOGS + JOURNAL_DIRS]
    return list(dict.fromkeys(d for d in wanted if not glob_magic(d)))


def glob_magic(text: str) -> bool:
    return any(c in text for c in "*?[")


def _is_log_path(config: PostfixConfig) -> bool:
    path = config.maillog_file
    return path.startswith("/") and not path.startswith("/dev/")


def _entry(listing: Mapping[str, Sequence[FileInfo]], path: str) -> FileInfo | None:
    directory, name = posixpath.split(path)
    return next((e for e in listing.get(directory, ()) if e.name == name), None)


def _family(
    listing: Mapping[str, Sequence[FileInfo]],
    base: str,
    rotate_suffix: str | None,
    notes: list[str] | None = None,
) -> list[FileInfo]:
    """The base file and its rotations, files only."""
    directory, name = posixpath.split(base)
    entries = {e.name: e for e in listing.get(directory, ()) if not e.is_dir}
    names = rotation_candidates(base, entries, rotate_suffix, notes)
    if name in entries:
        names.append(name)
    return [entries[n] for n in names]


def _describe(base: str, family: Sequence[FileInfo]) -> str:
    rotated = len([f for f in family if f.path != base])
    has_base = any(f.path == base for f in family)
    what = base if has_base else f"{base} (missing; rotations only)"
    return what + (f" + {rotated} rotated" if rotated else "")


def _journal_sources(configs: Sequence[PostfixConfig], notes: list[str]) -> list[LogSource]:
    by_code: dict[int, list[str]] = {}
    for config in configs or (default_config("/etc/postfix"),):
        code = _FACILITIES.get(config.syslog_facility.lower())
        if code is None:
            notes.append(
                f"{config.instance}: unknown syslog_facility {config.syslog_facility!r}: "
                "reading the mail facility"
            )
            code = _FACILITIES["mail"]
        by_code.setdefault(code, []).append(config.instance)
    return [
        LogSource(
            path=f"journal:SYSLOG_FACILITY={code}",
            kind=SourceKind.JOURNAL,
            origin=Origin.JOURNAL,
            instance=names[0] if len(set(names)) == 1 else None,
        )
        for code, names in by_code.items()
    ]


def _journal_readable(
    listing: Mapping[str, Sequence[FileInfo]], host: Host, notes: list[str]
) -> bool:
    """A directory host (an offline case, a copy) has a journal only in its own root: never
    the journal of the machine collector runs on."""
    if host.is_directory and not _has_journal(listing):
        notes.append("no journal directory in this directory host: no journal is read")
        return False
    return True


def _has_journal(listing: Mapping[str, Sequence[FileInfo]]) -> bool:
    return any((e := _entry(listing, d)) is not None and e.is_dir for d in JOURNAL_DIRS)


def _plan_explicit(
    listing: Mapping[str, Sequence[FileInfo]], host: Host
) -> tuple[list[LogSource], list[str]]:
    chosen: dict[str, FileInfo] = {}
    notes: list[str] = []
    if host.source is not SourceMode.AUTO:
        notes.append(f"logs are given in the inventory: source = {host.source} is not used")
    journals: dict[str, list[FileInfo]] = {}
    for pattern in host.logs:
        directory, name = posixpath.split(pattern)
        if not pattern.startswith("/") or ".." in directory.split("/"):
            notes.append(f"logs: {pattern}: need an absolute path")
            continue
        dirs = [d for d in listing if glob_path_match(d, directory)]
        if not dirs:
            notes.append(f"logs: {pattern}: directory {directory} not found")
            continue
        matched = [
            e for d in sorted(dirs) for e in listing[d]
            if not e.is_dir and glob_name_match(e.name, name)
        ]  # fmt: skip
        if not matched:
            notes.append(f"logs: {pattern}: no file matches")
        for e in matched:
            if e.name.endswith(JOURNAL_FILE_SUFFIXES):
                journals.setdefault(posixpath.dirname(e.path), []).append(e)
            else:
                chosen[e.path] = e
        if matched:
            notes.append(f"logs: {pattern}: {len(matched)} file(s)")
    # One stream, oldest first, whatever the order of the patterns: a message whose lines
    # span two files (a rotation, a fetched case's copies) is assembled from both in order.
    sources = order_sources(chosen.values(), origin=Origin.INVENTORY)
    for directory, files in journals.items():
        # journal files (systemd-journal-remote's remote-HOST.journal, say): their
        # directory is one journal, read with journalctl -D.
        notes.append(f"logs: {directory}: {len(files)} journal file(s), read as one journal")
        sources.append(
            LogSource(
                path=directory, kind=SourceKind.JOURNAL, origin=Origin.INVENTORY,
                size=sum(f.size or 0 for f in files),
                mtime=max((f.mtime for f in files if f.mtime is not None), default=None),
                readable=all(f.readable for f in files),
            )
        )  # fmt: skip
    return sources, notes


#: Files ``logs`` may name that are journal files, read with ``journalctl -D`` (``~``: one
#: journald or systemd-journal-remote set aside, unclean).
JOURNAL_FILE_SUFFIXES = (".journal", ".journal~")
#: Directories a ``logs`` pattern with wildcards in its directories may list.
MAX_GLOB_DIRS = 4096


def glob_name_match(name: str, pattern: str) -> bool:
    """The shell's glob on one path component: a wildcard does not match a leading dot."""
    if glob_magic(pattern) and not pattern.startswith(".") and name.startswith("."):
        return False
    return fnmatch.fnmatchcase(name, pattern)


def glob_path_match(path: str, pattern: str) -> bool:
    """Whether a directory path matches a pattern component by component (``*`` never
    crosses a ``/``)."""
    parts, want = path.strip("/").split("/"), pattern.strip("/").split("/")
    return len(parts) == len(want) and all(glob_name_match(p, w) for p, w in zip(parts, want))


def glob_directories(list_dir: Callable[[str], Sequence[FileInfo] | None], pattern: str,
                     notes: list[str]) -> dict[str, list[FileInfo]]:
    """List the directories a pattern with wildcards in its directories stands for (``/var/
    log/remote/*``), one level at a time; at most :data:`MAX_GLOB_DIRS` are listed."""
    found: dict[str, list[FileInfo]] = {}
    current = ["/"]
    parts = [p for p in pattern.split("/") if p]
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        nxt: list[str] = []
        for d in current:
            if not glob_magic(part):
                nxt.append(posixpath.join(d, part))
                continue
            entries = found.get(d)
            if entries is None:
                entries = list(list_dir(d) or ())
                found[d] = entries
            nxt += [e.path for e in entries if e.is_dir and glob_name_match(e.name, part)]
        current = sorted(nxt)
        if len(current) + len(found) > MAX_GLOB_DIRS:
            notes.append(f"logs: {pattern}: more than {MAX_GLOB_DIRS} directories, the rest "
                         "not listed")  # fmt: skip
            current = current[: max(0, MAX_GLOB_DIRS - len(found))]
        if last:
            break
    for d in current:
        if d not in found:
            entries_or_none = list_dir(d)
            if entries_or_none is not None:
                found[d] = list(entries_or_none)
    return {d: found[d] for d in current if d in found}


def plan_sources(
    configs: Sequence[PostfixConfig],
    listing: Mapping[str, Sequence[FileInfo]],
    host: Host,
) -> DiscoveryResult:
    """Decide a host's log sources from its instances' configs and directory listings.

    ``configs`` starts with the primary instance. ``listing`` maps a directory to its
    entries; a directory missing from it does not exist (or could not be listed).
    """
    version = next((c.mail_version for c in configs if c.mail_version), None)
    notes: list[str] = []
    sources: list[LogSource] = []
    if host.logs:
        sources, notes = _plan_explicit(listing, host)
    elif host.source is SourceMode.JOURNAL:
        notes.append("source = journal: log files are not considered")
        sources = _journal_sources(configs, notes) if _journal_readable(listing, host, notes) else []
    else:
        sources = _plan_files(configs, listing, host, notes)
    first: dict[str, LogSource] = {}
    for source in sources:
        first.setdefault(source.path, source)
    unique = list(first.values())
    for source in unique:
        if not source.readable:
            notes.append(f"{source.path}: not readable by this user (sudo = true?)")
    return DiscoveryResult(
        host=host.name,
        sources=tuple(unique),
        notes=tuple(notes),
        postfix_version=version,
        instances=tuple(configs),
    )


def _plan_files(
    configs: Sequence[PostfixConfig],
    listing: Mapping[str, Sequence[FileInfo]],
    host: Host,
    notes: list[str],
) -> list[LogSource]:
    """Files first (maillog_file, then the syslog defaults), the journal when they lack some."""
    sources, to_syslog, named = _maillog_sources(configs, listing, notes)
    if not configs:
        to_syslog.append(default_config("/etc/postfix"))
    defaults = _default_sources(listing, to_syslog, named, notes)
    sources += defaults
    journal_for: list[PostfixConfig] = []
    if to_syslog and not defaults:
        names = ", ".join(sorted({c.instance for c in to_syslog}))
        notes.append(f"{names}: logs to syslog but no {', '.join(DEFAULT_LOGS)} found")
        journal_for = to_syslog
    elif not sources:
        journal_for = list(configs)
    if not sources:
        notes += _catch_all_hints(listing)
    if journal_for:
        sources += _journal_fallback(journal_for, listing, host, notes)
    return sources


def _maillog_sources(
    configs: Sequence[PostfixConfig],
    listing: Mapping[str, Sequence[FileInfo]],
    notes: list[str],
) -> tuple[list[LogSource], list[PostfixConfig], set[str]]:
    """The families of each instance's ``maillog_file``; the instances that log to syslog
    instead; and the paths that some ``maillog_file`` names (never read as syslog files)."""
    sources: list[LogSource] = []
    to_syslog: list[PostfixConfig] = []
    named: set[str] = set()
    writers: dict[str, set[str]] = {}
    for config in configs:
        writers.setdefault(config.maillog_file, set()).add(config.instance)
    for config in configs:
        path, who = config.maillog_file, config.instance
        if not path:
            to_syslog.append(config)
        elif path.startswith("/dev/"):
            notes.append(
                f"{who}: maillog_file = {path}: not a file (the container runtime or "
                "supervisor keeps these lines)"
            )
        elif not path.startswith("/"):
            notes.append(f"{who}: maillog_file = {path}: not an absolute path, skipped")
        elif path not in named:
            named.add(path)
            family = _family(listing, path, config.maillog_file_rotate_suffix, notes)
            owner = who if len(writers[path]) == 1 else None
            if family:
                notes.append(f"{who}: maillog_file {_describe(path, family)}")
                sources += order_sources(family, origin=Origin.MAILLOG_FILE, instance=owner)
            else:
                notes.append(f"{who}: maillog_file {path} not found")
    return sources, to_syslog, named


def _default_sources(
    listing: Mapping[str, Sequence[FileInfo]],
    to_syslog: Sequence[PostfixConfig],
    named: set[str],
    notes: list[str],
) -> list[LogSource]:
    """The distribution's syslog files, read only when some instance logs to syslog."""
    sources: list[LogSource] = []
    for path in DEFAULT_LOGS:
        entry = _entry(listing, path)
        if entry is not None and entry.is_dir:
            notes.append(f"{path} is a directory, skipped")
            continue
        family = _family(listing, path, None, notes)
        if not family or path in named:
            continue
        if not to_syslog:
            notes.append(
                f"ignored (stale): {_describe(path, family)}: main.cf names maillog_file, "
                "not this file"
            )
            continue
        owners = {c.instance for c in to_syslog}
        owner = owners.pop() if len(owners) == 1 else None
        notes.append(
            f"syslog ({', '.join(sorted({c.instance for c in to_syslog}))}): "
            f"{_describe(path, family)}"
        )
        sources += order_sources(family, origin=Origin.DEFAULT, instance=owner)
    return sources


def _journal_fallback(
    configs: Sequence[PostfixConfig],
    listing: Mapping[str, Sequence[FileInfo]],
    host: Host,
    notes: list[str],
) -> list[LogSource]:
    """The journal for the instances whose lines no file holds, unless ``source = files``."""
    if host.source is SourceMode.FILES:
        notes.append("source = files: the journal is not used")
        return []
    if not _journal_readable(listing, host, notes):
        return []
    if not _has_journal(listing):
        notes.append("no journal directory seen (/var/log/journal, /run/log/journal)")
    journal = _journal_sources(configs, notes)
    notes.append("journal fallback: " + ", ".join(s.path for s in journal))
    return journal


def _catch_all_hints(listing: Mapping[str, Sequence[FileInfo]]) -> list[str]:
    return [
        f"{path} exists and may hold mail lines: name it in logs to read it"
        for path in _CATCH_ALL_LOGS
        if (e := _entry(listing, path)) is not None and not e.is_dir
    ]


# --------------------------------------------------------------------------- probe

# A non-root user's PATH lacks /usr/sbin; FreeBSD ports install under /usr/local/sbin.
POSTCONF_PATHS: tuple[str, ...] = ("/usr/sbin/postconf", "postconf", "/usr/local/sbin/postconf")
CONFIG_DIRS: tuple[str, ...] = ("/etc/postfix", "/usr/local/etc/postfix")


@dataclass(frozen=True, slots=True)
class _Postconf:
    path: str
    config_dir: str
    version: str | None


def _find_postconf(view: FileSystemView, notes: list[str]) -> _Postconf | None:
    for path in POSTCONF_PATHS:
        result = view.run(postconf_defaults_argv(path))
        if result is None:
            notes.append("commands cannot run on this host: reading main.cf")
            return None
        status = postconf_status(result)
        if status is PostconfStatus.NOT_FOUND:
            continue
        if status is not PostconfStatus.OK:
            notes.append(f"{path} -d: {_first_line(result)}")
            continue
        params = parse_main_cf(result.stdout.decode("utf-8", "replace"))
        return _Postconf(
            path=path,
            config_dir=params.get("config_directory") or CONFIG_DIRS[0],
            version=params.get("mail_version") or None,
        )
    notes.append("postconf not found (" + ", ".join(POSTCONF_PATHS) + "): reading main.cf")
    return None


def _load_instance(
    view: FileSystemView, postconf: _Postconf | None, config_dir: str, notes: list[str]
) -> PostfixConfig | None:
    """One instance's config: postconf -c, else its main.cf; None if neither exists."""
    if postconf is not None:
        for expand_values in (True, False):
            result = view.run(postconf_argv(postconf.path, config_dir, expand_values=expand_values))
            if result is None:
                break
            status = postconf_status(result)
            if status is PostconfStatus.OK:
                config = config_from_postconf(result.stdout.decode("utf-8", "replace"), config_dir)
                return replace(config, mail_version=config.mail_version or postconf.version)
            notes.append(f"postconf -c {config_dir}: {_first_line(result)}")
            if status is PostconfStatus.NO_MAIN_CF:
                break  # without -x it would fail the same way
    text = view.read_text(posixpath.join(config_dir, "main.cf"))
    if text is None:
        return None
    config = config_from_main_cf(text, config_dir)
    return replace(config, mail_version=postconf.version if postconf else None)


def load_configs(view: FileSystemView) -> tuple[tuple[PostfixConfig, ...], tuple[str, ...]]:
    """The primary instance, then each of its ``multi_instance_directories``; plus notes."""
    notes: list[str] = []
    postconf = _find_postconf(view, notes)
    dirs = (postconf.config_dir,) if postconf is not None else CONFIG_DIRS
    primary: PostfixConfig | None = None
    for config_dir in dirs:
        primary = _load_instance(view, postconf, config_dir, notes)
        if primary is not None:
            notes.append(f"{primary.instance}: configuration from {primary.origin} in {config_dir}")
            break
    if primary is None:
        notes.append(f"no main.cf in {', '.join(dirs)}: assuming Postfix defaults")
        return (default_config(dirs[0], postconf.version if postconf else None),), tuple(notes)
    configs = [primary]
    for config_dir in primary.multi_instance_directories:
        config = _load_instance(view, postconf, config_dir, notes)
        if config is None:
            notes.append(f"instance {config_dir}: no main.cf, skipped")
            continue
        if not config.multi_instance_enable:
            notes.append(f"{config.instance}: multi_instance_enable = no; its logs are read anyway")
        notes.append(f"{config.instance}: configuration from {config.origin} in {config_dir}")
        configs.append(config)
    return tuple(configs), tuple(notes)


def first_questions(host: Host) -> tuple[list[list[str]], list[str]]:
    """What :func:`discover` will most likely ask a live host first: its postconf runs (the
    usual postconf, the usual configuration directory) and the directories to list, so that a
    view can ask them all in one round trip. A guess: a question discovery then does not ask
    is left unused, and one it asks otherwise is asked then."""
    runs: list[list[str]] = []
    if not host.logs:
        postconf = POSTCONF_PATHS[0]
        runs = [postconf_defaults_argv(postconf), postconf_argv(postconf, CONFIG_DIRS[0])]
    return runs, directories_to_list((), host)


def discover(view: FileSystemView, host: Host) -> DiscoveryResult:
    """Find a host's Postfix log sources through ``view`` (see the module docstring)."""
    notes: tuple[str, ...] = ()
    configs: tuple[PostfixConfig, ...] = ()
    if not host.logs:
        configs, notes = load_configs(view)
    listing: dict[str, list[FileInfo]] = {}
    for directory in directories_to_list(configs, host):
        entries = view.list_dir(directory)
        if entries is not None:
            listing[directory] = entries
    glob_notes: list[str] = []
    for pattern in dict.fromkeys(posixpath.dirname(p) for p in host.logs):
        if glob_magic(pattern) and ".." not in pattern.split("/"):
            listing.update(glob_directories(view.list_dir, pattern, glob_notes))
    result = plan_sources(configs, listing, host)
    result = replace(result, notes=(*glob_notes, *result.notes))
    # What the view skipped while listing (a symlink to nothing, ...), if it says.
    skipped = tuple(getattr(view, "notes", ()))
    return replace(result, notes=notes + skipped + result.notes)

"""Least privilege under ``sudo = true``: the few fixed programs that run as root.

Only four programs ever run through ``sudo -n``, each with fixed flags and a log's path (or a
journal match) as its only variable words: ``cat FILE`` (a log file, compressed or not: the
login user decompresses and filters what it prints), ``journalctl`` with fixed flags and a
time window (or ``-f`` for ``follow``), ``ls`` of a directory the login user cannot list, and
``tail -n0 -F -q -- FILE`` for ``follow``. Nothing that can spawn a
program or write (a shell, ``awk``, ``find``, ``timeout``, a pager) ever runs as root: the
filters, the decompressors and the scripts that join them run as the login user.

Everything here is pure: the words of those commands, the parsing of ``ls``'s listing and the
sudoers lines (:func:`sudoers_lines`) that allow exactly them.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

#: How every root command starts: never ask for a password (fail at once instead).
SUDO = ("sudo", "-n", "--")
#: Exit status of a login-user script whose root reader (``sudo -n PROGRAM ...``) failed:
#: sudo refused (its own words are on stderr) or the program could not read.
EXIT_ROOT_READ = 5
#: The programs that may run as root, by the name looked up on the host.
ROOT_PROGRAMS = ("cat", "journalctl", "ls", "tail")

#: ``ls`` flags for a directory the login user cannot list: every entry (``-A``), names in C
#: quotes (``-Q``: a name may hold any byte but ``/`` and NUL), symlinks followed (``-L``),
#: numeric owners (``-n``, long format), nanosecond mtimes with their zone (``--full-time``).
LS_FLAGS = ("-AQLn", "--full-time")
#: The window a root ``journalctl`` is given when the query has no bound of its own: one
#: fixed shape for every call, so one sudoers line allows them all.
JOURNAL_FIRST = "1970-01-02 00:00:00 UTC"
JOURNAL_LAST = "2999-12-31 23:59:59 UTC"
#: journalctl's fixed flags, as the scripts in ``collector.logs.commands`` pass them.
JOURNAL_FLAGS = ("--no-pager", "-q", "-o", "short-iso-precise")

# An absolute program path or log path that a sudoers line can name literally: no white space,
# none of sudoers' special characters (, : = \ #) and no wildcard characters.
_PLAIN = re.compile(r"/[A-Za-z0-9._+/-]{0,1023}")
_USER = re.compile(r"[A-Za-z_][A-Za-z0-9._-]{0,31}")
_JOURNAL_MATCH = re.compile(r"[A-Z_]{1,64}=[0-9A-Za-z._-]{1,64}")


@dataclass(frozen=True, slots=True)
class RootPrograms:
    """Where the root programs are on one host (sudoers wants absolute paths)."""

    cat: str = "/usr/bin/cat"
    journalctl: str = "/usr/bin/journalctl"
    ls: str = "/usr/bin/ls"
    tail: str = "/usr/bin/tail"


@dataclass(frozen=True, slots=True)
class LoginUser:
    """What the probe learnt of the login user: uid, name, and where the root programs are."""

    uid: int | None
    name: str
    programs: RootPrograms
    notes: tuple[str, ...] = ()

    @property
    def is_root(self) -> bool:
        return self.uid == 0


# $@ = program names: the login user's uid and name, then one line per program (its path, or -).
_PROBE = 'id -u; id -un; for p do command -v "$p" || echo -; done'


def probe_argv() -> list[str]:
    """The login user's uid and the paths of :data:`ROOT_PROGRAMS` (run as the login user)."""
    return ["sh", "-c", _PROBE, "sh", *ROOT_PROGRAMS]


def login_user_from(stdout: bytes) -> LoginUser:
    """Parse :func:`probe_argv`'s output. A program not found (or printed oddly) keeps its
    usual path, with a note: sudo then says it cannot run it."""
    lines = stdout.decode("ascii", "replace").splitlines()[: 2 + len(ROOT_PROGRAMS)]
    lines += [""] * (2 + len(ROOT_PROGRAMS) - len(lines))
    uid = int(lines[0]) if lines[0].isdigit() and len(lines[0]) < 12 else None
    login = lines[1].strip() if _USER.fullmatch(lines[1].strip()) else ""
    defaults = RootPrograms()
    found: dict[str, str] = {}
    notes: list[str] = []
    for i, name in enumerate(ROOT_PROGRAMS):
        path = lines[i + 2].strip()
        if _PLAIN.fullmatch(path) and posixpath.basename(path) == name:
            found[name] = path
        else:
            usual = getattr(defaults, name)
            notes.append(f"{name} not found in the login user's PATH: using {usual}")
            found[name] = usual
    return LoginUser(uid, login, RootPrograms(**found), tuple(notes))


# --------------------------------------------------------------------------- ls


def ls_argv(programs: RootPrograms, directory: str) -> list[str]:
    """``ls`` of one directory, to run with the transport's ``sudo``."""
    return [programs.ls, *LS_FLAGS, directory]


@dataclass(frozen=True, slots=True)
class Listed:
    """One entry of a root ``ls`` listing: type (``f``, ``d``, ``p``), name, size, mtime."""

    ftype: str
    name: str
    size: int
    mtime: float


# mode, links, uid, gid, size, "YYYY-MM-DD HH:MM:SS.NNNNNNNNN +ZZZZ", "name". Linear: the
# fields are separated by runs of spaces that no field contains.
_LS_LINE = re.compile(
    rb'([-dp])[^ ]* +\d+ +\d+ +\d+ +(\d{1,20}) '
    rb'(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d{1,9})?) ([+-]\d{4}) "(.*)"'
)
_TYPES = {b"-": "f", b"d": "d", b"p": "p"}
_C_ESCAPES = {ord(k): v for k, v in {
    "n": 10, "t": 9, "r": 13, "a": 7, "b": 8, "f": 12, "v": 11, "\\": 92, '"': 34, "?": 63,
    "'": 39, " ": 32,
}.items()}  # fmt: skip


def parse_ls(data: bytes) -> list[Listed]:
    """The regular files, FIFOs and directories of a :data:`LS_FLAGS` listing.

    Anything else (devices, sockets, a dangling symlink's ``l?????????``, ``total``) is left
    out, and so is a name that is not one path component.
    """
    out: list[Listed] = []
    for line in data.split(b"\n"):
        m = _LS_LINE.fullmatch(line)
        if m is None:
            continue
        kind, size, stamp, zone, quoted = m.groups()
        name = _unquote(quoted)
        if name is None or name in (b"", b".", b"..") or b"/" in name or b"\0" in name:
            continue
        try:
            when = datetime.fromisoformat(stamp.decode() + zone.decode())
        except ValueError:
            continue
        out.append(Listed(_TYPES[kind], name.decode("utf-8", "surrogateescape"), int(size),
                          when.timestamp()))
    return out


def _unquote(quoted: bytes) -> bytes | None:
    """``ls -Q``'s C-style quoting undone (None: not something ls writes)."""
    out = bytearray()
    i = 0
    while i < len(quoted):
        ch = quoted[i]
        if ch == 0x22:  # a bare quote: ls escapes every quote inside a name
            return None
        if ch != 0x5C:
            out.append(ch)
            i += 1
            continue
        nxt = quoted[i + 1 : i + 2]
        if not nxt:
            return None
        if nxt.isdigit():
            digits = re.match(rb"[0-7]{1,3}", quoted[i + 1 : i + 4])
            if digits is None:
                return None
            out.append(int(digits.group(), 8) & 0xFF)
            i += 1 + len(digits.group())
            continue
        code = _C_ESCAPES.get(nxt[0])
        if code is None:
            return None
        out.append(code)
        i += 2
    return bytes(out)


# --------------------------------------------------------------------------- sudoers


@dataclass(frozen=True, slots=True)
class RootNeeds:
    """What one host's login user needs root for: files to ``cat``, directories to ``ls``,
    journal matches to read (each with the journal directory, empty for the system's)."""

    files: tuple[str, ...] = ()
    directories: tuple[str, ...] = ()
    journals: tuple[tuple[str, str], ...] = ()


_DIGIT = "[0-9]"
# A stamp journalctl is given: "2024-11-28 13:40:00 UTC", each digit one [0-9].
_STAMP = "-".join(_DIGIT * n for n in (4, 2, 2)) + " " + "\\:".join(_DIGIT * 2 for _ in range(3))
_STAMP += " UTC"


def sudoers_lines(
    user: str, programs: RootPrograms, needs: RootNeeds, known_files: Sequence[str] = ()
) -> list[str]:
    """The sudoers lines (with a comment before each) that allow exactly ``needs``.

    Every argument is literal except ``[0-9]``, which matches one digit and nothing else: no
    line can be widened to another file or to more arguments (a ``*`` would match spaces, so
    ``cat /var/log/mail.log *`` would allow ``cat /var/log/mail.log /etc/shadow``). A file
    that is the rotation of another file listed (``mail.log.2.gz`` of ``mail.log``) is allowed
    with each digit after that name as ``[0-9]``, so the next rotations of the same shape are
    allowed too (``known_files``: all the host's log files, the ones it reads itself too).
    A path that sudoers cannot name literally is skipped, and said so.
    """
    if not _USER.fullmatch(user):
        return [f"# the login user {safe_path(user)} cannot be named in a sudoers line"]
    head = f"{user} ALL=(root) NOPASSWD: "
    lines: list[str] = []
    bases = sorted({*needs.files, *known_files}, key=len)
    written: set[str] = set()
    for path in sorted(needs.files, key=lambda p: _rotation_pattern(p, bases)[0]):
        if not _PLAIN.fullmatch(path):
            lines.append(f"# skipped {safe_path(path)}: a sudoers line cannot name it exactly")
            continue
        pattern, base = _rotation_pattern(path, bases)
        rule = head + programs.cat + " " + pattern
        if rule in written:
            continue
        written.add(rule)
        if base is None:
            lines.append(f"# read {path}")
            lines.append(rule)
            lines.append(f"# follow {path} as it grows (collector follow)")
            lines.append(head + f"{programs.tail} -n0 -F -q -- {pattern}")
            continue
        else:
            lines.append(f"# read {base}'s rotations named like {posixpath.basename(path)}"
                         " ([0-9]: one digit)")
        lines.append(rule)
    for directory in needs.directories:
        if not _PLAIN.fullmatch(directory):
            lines.append(f"# skipped {safe_path(directory)}: a sudoers line cannot name it "
                         "exactly")
            continue
        lines.append(f"# list {directory} (the login user cannot)")
        lines.append(head + " ".join((programs.ls, *LS_FLAGS, directory)))
    for match, directory in needs.journals:
        if not _JOURNAL_MATCH.fullmatch(match) or (directory and not _PLAIN.fullmatch(directory)):
            lines.append(f"# skipped the journal match {safe_path(match)}: a sudoers line "
                         "cannot name it")
            continue
        where = ("-D " + directory + " ") if directory else ""
        flags = " ".join(JOURNAL_FLAGS)
        field = _escape(match)
        lines.append(f"# read the journal's {match} lines between two times (UTC, [0-9]: one "
                     "digit)")
        lines.append(head + f"{programs.journalctl} {where}{flags} --since\\={_STAMP} "
                     f"--until\\={_STAMP} {field}")
        lines.append(f"# read the journal's last {match} line (hosts --check)")
        lines.append(head + f"{programs.journalctl} {where}{flags} -n 1 {field}")
        lines.append(f"# follow the journal's {match} lines (collector follow)")
        lines.append(head + f"{programs.journalctl} {where}{flags} -f -n 0 {field}")
    return lines


def _rotation_pattern(path: str, bases: Sequence[str]) -> tuple[str, str | None]:
    """``/var/log/mail.log.2.gz`` -> ``/var/log/mail.log.[0-9].gz`` when ``/var/log/mail.log``
    is listed too (the base), else the path itself."""
    for base in bases:
        if path != base and path.startswith(base) and posixpath.dirname(path) == \
                posixpath.dirname(base) and path[len(base)] in ".-_":
            return base + re.sub(r"[0-9]", _DIGIT, path[len(base) :]), base
    return path, None


def _escape(text: str) -> str:
    return re.sub(r"([,:=\\#*?\[\]])", r"\\\1", text)


def safe_path(text: str) -> str:
    """A host's path (or name) as it may be shown in a sudoers comment: as it is when it is
    printable ASCII, else Python's ASCII escape of it (a file name is the host's choice)."""
    if text and all(" " <= ch <= "~" and ch != "\\" for ch in text):
        return text
    return ascii(text)

"""Remote (or local) filtering of log sources: the commands, built by pure functions.

Every command is an argv list. User values (addresses, IDs, file names) only ever travel as
separate words: the transport quotes each word with ``shlex.quote`` (SSH) or passes the list to
``exec`` (local), and shell scripts here are constants that read their inputs from ``"$@"``.
Searches run in two passes: (1) the lines that carry a selector's fixed string, which name the
queue IDs of the matching messages; (2) every line of exactly those queue IDs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from collector.models import Compression, LogSource
from collector.query import Query, normalize_message_id

#: Above this many queue IDs, a field lookup in a hash (awk) beats grep's multi-literal
#: search, whose cost grows with the number of hex patterns (6.6 s/GB for ~570 IDs against
#: ~2.6 s/GB for awk whatever the count, measured on a 1 GB maillog).
GREP_MAX_IDS = 48

#: Largest number of IDs sent in one command (keeps the command line far below ARG_MAX and
#: the SSH packet size).
IDS_PER_COMMAND = 4000

_DECOMPRESS = {
    Compression.GZIP: "gzip -dc",
    Compression.BZIP2: "bzip2 -dc",
    Compression.XZ: "xz -dc",
    Compression.ZSTD: "zstd -dcq",
}

# Picks the decompressor for a rotated file ($f) into $d; a plain file runs $PLAIN instead.
_DECOMPRESSOR = (
    'case "$f" in *.gz) d="gzip -dc";; *.bz2) d="bzip2 -dc";; *.xz) d="xz -dc";; '
    '*.zst) d="zstd -dcq";; *) d="";; esac; '
)
# Runs "$d -- $f | $FILTER" and keeps both exit statuses (POSIX sh has no pipefail): a
# damaged archive must not pass for a short one. Exit 3 (with a message) when decompression
# failed, else the filter's status.
_PIPE_CHECKED = (
    'exec 4>&1; '
    's=$( { { $d -- "$f"; echo "d$?" >&3; } | FILTER >&4; echo "g$?" >&3; } 3>&1 ); '
    'case "$s" in *d0*) ;; *) echo "collector: cannot decompress $f completely: the lines '
    'after the damage are missing" >&2; exit 3;; esac; '
    'case "$s" in *g0*) exit 0;; *g1*) exit 1;; *) exit 2;; esac'
)

# $1 = file, the rest = grep arguments. A constant: inputs arrive only as "$@".
_FILTER_FILE = (
    'f=$1; shift; ' + _DECOMPRESSOR
    + 'if [ -z "$d" ]; then LC_ALL=C exec grep "$@" -- "$f"; fi; '
    + _PIPE_CHECKED.replace("FILTER", 'LC_ALL=C grep "$@"')
)

# $1 = file, $2 = space-separated queue IDs, $3 = the awk program. Prints lines whose
# queue-ID field (the word after the program tag, or after a severity word) is one of them.
# Field 4 is the ID in RFC 3339 and journal ISO envelopes, field 6 in BSD/postlogd ones; 5 and
# 7 cover "warning: ID:".
_AWK_IDS = (
    'BEGIN { n = split(ids, a, " "); for (i = 1; i <= n; i++) want[a[i] ":"] = 1 } '
    "{ for (i = 4; i <= 7 && i <= NF; i++) if ($i in want) { print; next } }"
)
_AWK_FILE = (
    'f=$1; ids=$2; prog=$3; ' + _DECOMPRESSOR
    + 'if [ -z "$d" ]; then LC_ALL=C exec awk -v ids="$ids" "$prog" < "$f"; fi; '
    + _PIPE_CHECKED.replace("FILTER", 'LC_ALL=C awk -v ids="$ids" "$prog"')
)

# The journal's mail lines, optionally filtered by grep. $1/$2 = since/until (may be empty),
# $3 = the journal match (e.g. SYSLOG_FACILITY=2), the rest = grep's words (none: no filter).
# journalctl's own --grep is a regex, so a fixed string goes through grep -F instead.
_JOURNAL = (
    'since=$1; until=$2; match=$3; shift 3; '
    'if [ "$#" -eq 0 ]; then exec journalctl --no-pager -q -o short-iso-precise '
    '${since:+"--since=$since"} ${until:+"--until=$until"} "$match"; fi; '
    'journalctl --no-pager -q -o short-iso-precise '
    '${since:+"--since=$since"} ${until:+"--until=$until"} "$match" '
    '| LC_ALL=C grep "$@"'
)
_JOURNAL_MATCH = re.compile(r"^[A-Z_]+=[0-9A-Za-z@._:/-]+$")
DEFAULT_JOURNAL_MATCH = "SYSLOG_FACILITY=2"


def journal_match(source: LogSource) -> str:
    """The journal field match a journal source stands for (``journal:SYSLOG_FACILITY=2``)."""
    _, _, match = source.path.partition(":")
    return match if _JOURNAL_MATCH.match(match) else DEFAULT_JOURNAL_MATCH


@dataclass(frozen=True, slots=True)
class Needles:
    """The fixed strings of pass 1 and whether they compare case-insensitively."""

    strings: tuple[str, ...]
    ignore_case: bool


def pass1_needles(query: Query) -> Needles | None:
    """Pick the most selective selector to search for; the others are checked after parsing.

    None means the query has no fixed string (only a time window): every line is read.
    """
    if query.terms:
        # A trace term may be a message-id, a queue ID or an address: search the bare text.
        terms = tuple(normalize_message_id(t) for t in query.terms)
        return Needles(terms, any("@" in t for t in terms))
    if query.message_ids:
        return Needles(tuple(normalize_message_id(m) for m in query.message_ids), False)
    if query.queue_ids:
        return Needles(tuple(f" {q}: " for q in query.queue_ids), False)
    if query.recipients:
        # "to=<B>" also matches "orig_to=<B>". Domains are case-insensitive, and admins
        # type local parts in any case, so addresses compare case-insensitively (LC_ALL=C
        # keeps -i cheap).
        return Needles(tuple(f"to=<{r}>" for r in query.recipients), True)
    if query.senders:
        return Needles(tuple(f"from=<{s}>" for s in query.senders), True)
    if query.clients:
        return Needles(tuple(query.clients), True)
    if query.statuses:
        return Needles(tuple(f"status={s}" for s in query.statuses if s != "rejected")
                       + (("reject: ",) if "rejected" in query.statuses else ()), False)
    return None


def _grep_words(needles: Needles) -> list[str]:
    words = ["-F", "-a"]
    if needles.ignore_case:
        words.append("-i")
    for s in needles.strings:
        words += ["-e", s]
    return words


def filter_file_command(path: str, needles: Needles | None) -> list[str]:
    """Pass 1 on one file: the lines carrying any needle (or every line with no needle)."""
    if needles is None:
        if path.endswith(tuple("." + c.value for c in _DECOMPRESS)):
            return ["sh", "-c", _FILTER_FILE, "sh", path, "-a", "-e", ""]
        return ["cat", "--", path]
    return ["sh", "-c", _FILTER_FILE, "sh", path, *_grep_words(needles)]


def ids_file_commands(path: str, queue_ids: Sequence[str]) -> list[list[str]]:
    """Pass 2 on one file: every line of exactly these queue IDs (in chunks)."""
    ids = sorted(set(queue_ids))
    commands: list[list[str]] = []
    for start in range(0, len(ids), IDS_PER_COMMAND):
        chunk = ids[start : start + IDS_PER_COMMAND]
        if len(chunk) <= GREP_MAX_IDS:
            needles = Needles(tuple(f" {q}: " for q in chunk), False)
            commands.append(["sh", "-c", _FILTER_FILE, "sh", path, *_grep_words(needles)])
        else:
            commands.append(["sh", "-c", _AWK_FILE, "sh", path, " ".join(chunk), _AWK_IDS])
    return commands


def journal_command(
    needles: Needles | None,
    *,
    since: datetime | None,
    until: datetime | None,
    match: str = DEFAULT_JOURNAL_MATCH,
) -> list[str]:
    """The journal's mail lines as ``short-iso-precise`` text, time window pushed down."""
    words = _grep_words(needles) if needles is not None else []
    return [
        "sh", "-c", _JOURNAL, "sh", _journal_time(since), _journal_time(until), match, *words
    ]


def journal_ids_command(
    queue_ids: Sequence[str],
    *,
    since: datetime | None,
    until: datetime | None,
    match: str = DEFAULT_JOURNAL_MATCH,
) -> list[str]:
    """Pass 2 on the journal: every line of these queue IDs."""
    needles = Needles(tuple(f" {q}: " for q in sorted(set(queue_ids))), False)
    return journal_command(needles, since=since, until=until, match=match)


def _journal_time(when: datetime | None) -> str:
    if when is None:
        return ""
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def source_in_window(
    source: LogSource, older: LogSource | None, since: datetime | None, until: datetime | None
) -> bool:
    """Whether a rotated file can hold lines inside [since, until].

    A file's mtime is (about) its last line; the next older file's mtime is (about) its first.
    A minute of slack covers writes that land just after a rotation.
    """
    if source.kind != "file":
        return True
    if since is not None and source.mtime is not None and source.mtime < since.timestamp() - 60:
        return False
    if (
        until is not None
        and older is not None
        and older.mtime is not None
        and older.mtime > until.timestamp() + 60
    ):
        return False
    return True


# $1 = file: its first and last line (decompressing rotated files).
_EDGES = (
    'f=$1; case "$f" in '
    '*.gz) gzip -dc -- "$f" | sed -n "1p;\\$p";; '
    '*.bz2) bzip2 -dc -- "$f" | sed -n "1p;\\$p";; '
    '*.xz) xz -dc -- "$f" | sed -n "1p;\\$p";; '
    '*.zst) zstd -dcq -- "$f" | sed -n "1p;\\$p";; '
    '*) head -n 1 -- "$f"; tail -n 1 -- "$f";; esac'
)


def edge_lines_command(source: LogSource, path: str) -> list[str]:
    """The first and the last line of a source (for ``hosts --check``)."""
    if source.kind == "journal":
        return [
            "sh",
            "-c",
            'journalctl --no-pager -q -o short-iso-precise "$1" | head -n 1; '
            'journalctl --no-pager -q -o short-iso-precise -n 1 "$1"',
            "sh",
            journal_match(source),
        ]
    return ["sh", "-c", _EDGES, "sh", path]


# --------------------------------------------------------------------------- windows
# Lines of one message sit close together in a log: a message usually lives a few seconds
# between its client= and removed lines. Pass 1 reports each hit's byte offset (grep -b), so
# pass 2 reads windows of the file around the hits instead of the whole file; any queue ID
# whose life is not complete inside its window is looked up in the whole file afterwards.

#: Bytes read before and after each pass-1 hit.
WINDOW_BEFORE = 128 * 1024
WINDOW_AFTER = 512 * 1024

#: A window larger than this share of the file is not worth it: read the whole file instead.
WINDOW_MAX_SHARE = 0.5

# $1 = file, $2 = queue IDs, $3 = awk program, then pairs START LENGTH|- (tail -c +START counts
# from 1). Marker lines frame each window; the awk filter drops the first line of a window that
# began mid-line (#collector-window) and the last line of one that ended mid-line
# (#collector-cut), and keeps both ends at the file's start and end.
_WINDOWS = (
    'f=$1; ids=$2; prog=$3; shift 3; '
    '{ while [ "$#" -ge 2 ]; do m=window; [ "$1" = 1 ] && m=start; '
    'printf "\\n#collector-%s\\n" "$m"; '
    'if [ "$2" = "-" ]; then tail -c +"$1" -- "$f"; printf "\\n#collector-eof\\n"; '
    'else tail -c +"$1" -- "$f" | head -c "$2"; printf "\\n#collector-cut\\n"; fi; '
    'shift 2; done; } | LC_ALL=C awk -v ids="$ids" "$prog"'
)
# The ID lookup of _AWK_IDS, applied to the complete lines between window markers.
_AWK_WINDOWS = (
    'BEGIN { n = split(ids, a, " "); for (i = 1; i <= n; i++) want[a[i] ":"] = 1 } '
    '$0 == "#collector-window" { held = 0; fresh = 1; next } '
    '$0 == "#collector-start" { held = 0; next } '
    '$0 == "#collector-cut" { held = 0; next } '
    '$0 == "#collector-eof" { if (held && keep) print prev; held = 0; next } '
    "fresh { fresh = 0; next } "
    # A line is printed one line late, once we know it was not cut by the window's end; the
    # ID test uses the fields awk has already split (a split() per line costs 3x).
    "{ if (held && keep) print prev; "
    "keep = 0; for (i = 4; i <= 7 && i <= NF; i++) if ($i in want) { keep = 1; break } "
    "prev = $0; held = 1 }"
)


@dataclass(frozen=True, slots=True)
class Window:
    start: int  # byte offset of the first byte read
    end: int | None  # one past the last byte read; None: to the end of the file


def windows_around(offsets: Sequence[int], size: int | None) -> list[Window]:
    """Merged windows around pass-1 hits (byte offsets of line starts)."""
    spans: list[list[int]] = []
    for off in sorted(set(offsets)):
        start = max(0, off - WINDOW_BEFORE)
        end = off + WINDOW_AFTER
        if spans and start <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([start, end])
    out: list[Window] = []
    for start, end in spans:
        out.append(Window(start, None if size is not None and end >= size else end))
    return out


def window_ids_commands(
    path: str, windows: Sequence[Window], queue_ids: Sequence[str]
) -> list[list[str]]:
    """Pass 2 inside windows, in chunks of IDs small enough for one argument (128 KiB)."""
    ids = sorted(set(queue_ids))
    return [
        window_ids_command(path, windows, ids[start : start + IDS_PER_COMMAND])
        for start in range(0, len(ids), IDS_PER_COMMAND)
    ]


def window_ids_command(path: str, windows: Sequence[Window], queue_ids: Sequence[str]) -> list[str]:
    """Pass 2 inside windows of a plain file: the complete lines of these queue IDs."""
    args: list[str] = []
    for w in windows:
        # tail -c +1 is the file's start: no partial first line there (the script says so).
        # Elsewhere read from one byte before the window, so that a window starting exactly
        # at a line start only loses the previous line's newline, never a whole line.
        first = w.start if w.start > 0 else 1  # 1-based: offset w.start - 1
        length = None if w.end is None else w.end - (first - 1)
        args += [str(first), "-" if length is None else str(length)]
    ids = " ".join(sorted(set(queue_ids)))
    return ["sh", "-c", _WINDOWS, "sh", path, ids, _AWK_WINDOWS, *args]


def windows_worth_it(windows: Sequence[Window], size: int | None) -> bool:
    """Whether reading these windows beats reading the whole file."""
    if not size:
        return False
    covered = sum((w.end if w.end is not None else size) - w.start for w in windows)
    return covered <= size * WINDOW_MAX_SHARE


def filter_offsets_command(path: str, needles: Needles) -> list[str]:
    """Pass 1 on a plain file with each line's byte offset (``OFFSET:line``)."""
    return ["sh", "-c", _FILTER_FILE, "sh", path, "-b", *_grep_words(needles)]


def split_offset(line: bytes) -> tuple[int | None, bytes]:
    """``b"1234:Nov 29 ..."`` -> (1234, b"Nov 29 ...")."""
    head, sep, rest = line.partition(b":")
    if sep and head.isdigit():
        return int(head), rest
    return None, line

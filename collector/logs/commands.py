"""Remote (or local) filtering of log sources: the commands, built by pure functions.

Every command is an argv list. User values (addresses, IDs, file names) only ever travel as
separate words: the transport quotes each word with ``shlex.quote`` (SSH) or passes the list to
``exec`` (local), and shell scripts here are constants that read their inputs from ``"$@"``.
Searches run in two passes: (1) the lines that carry a selector's fixed string, which name the
queue IDs of the matching messages; (2) every line of exactly those queue IDs.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import UTC, datetime

from collector.logs.select import fixed_part, normalize_message_id
from collector.models import Compression, LogSource, Query
from collector.transport.base import is_cut
from collector.transport.privilege import (
    EXIT_ROOT_READ,
    JOURNAL_FIRST,
    JOURNAL_LAST,
    RootPrograms,
)

#: Pass 2 sends its fixed strings on the command's standard input (``grep -F -f``), one a
#: line: any number of IDs in one command, no argument limit (Linux caps one argument at
#: 128 KiB, and over SSH the whole command line is one argument of the remote ``sh -c``).
#: The script keeps that input as fd 5 (``exec 5<&0``), so that grep reads it as
#: ``/dev/fd/5`` while its own stdin is a decompressor's, sudo's or journalctl's pipe.
PATTERNS_FROM_STDIN = ("-F", "-a", "-f", "/dev/fd/5")
_KEEP_STDIN = "exec 5<&0; "

_COMPRESSED = tuple("." + c.value for c in Compression if c.value)

#: Exit status of a file-reading command whose compressed file did not decompress to its end
#: (the lines read before the damage were printed).
EXIT_DAMAGED = 3
#: Exit status of a file-reading command whose file no longer exists (rotated away).
EXIT_VANISHED = 4


class CommandKind(enum.StrEnum):
    """What a remote command reads; each kind has its own constant script."""

    MATCH = "match"  # pass 1: the lines carrying a selector's fixed strings
    MATCH_OFFSETS = "match-offsets"  # pass 1 with each line's byte offset (grep -b)
    ALL = "all"  # every line of a source
    IDS = "ids"  # pass 2: every line of these queue IDs (grep -F, patterns on stdin)
    WINDOW_IDS = "window-ids"  # pass 2 inside byte windows of a plain file
    EDGES = "edges"  # a source's first and last line
    COPY = "copy"  # a whole file, byte for byte
    FOLLOW = "follow"  # the lines logged from now on (tail -F, journalctl -f)


@dataclass(frozen=True, slots=True)
class Command:
    """One read-only command for one source: what it reads, and the argv that does it.

    ``argv`` is ``sh -c SCRIPT sh WORDS...`` (a constant script, user values only as words)
    or a plain program. ``path`` is the host path (or journal match) it reads. ``stdin``:
    what the command reads on its standard input (pass 2's fixed strings, one a line).
    """

    kind: CommandKind
    argv: tuple[str, ...]
    path: str
    stdin: bytes | None = None

    @property
    def words(self) -> tuple[str, ...]:
        """The positional words after a constant script (the whole argv for a plain program)."""
        if self.argv[:2] == ("sh", "-c"):
            return self.argv[4:]
        return self.argv

    def describe(self) -> str:
        """The command in a person's words (never the script)."""
        what = {
            CommandKind.MATCH: "searching",
            CommandKind.MATCH_OFFSETS: "searching",
            CommandKind.ALL: "reading",
            CommandKind.IDS: "reading queue IDs from",
            CommandKind.WINDOW_IDS: "reading queue IDs from",
            CommandKind.EDGES: "reading the first and last line of",
            CommandKind.COPY: "copying",
            CommandKind.FOLLOW: "following",
        }[self.kind]
        return f"{what} {self.path}"

# Picks the decompressor for a rotated file ($f) into $d; empty for a plain file.
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

# A file that is gone (rotated away since discovery) must not pass for one without matches.
_EXISTS = (
    '[ -e "$f" ] || { echo "collector: $f: no such file" >&2; exit 4; }; '
)

# $1 = file, the rest = grep arguments. A constant: inputs arrive only as "$@".
_FILTER_FILE = (
    'f=$1; shift; ' + _EXISTS + _DECOMPRESSOR
    + 'if [ -z "$d" ]; then LC_ALL=C exec grep "$@" -- "$f"; fi; '
    + _PIPE_CHECKED.replace("FILTER", 'LC_ALL=C grep "$@"')
)

# $1 = file: every line (decompressed), with the same exit statuses as the filters.
_CAT_FILE = (
    'f=$1; ' + _EXISTS + _DECOMPRESSOR
    + 'if [ -z "$d" ]; then exec cat -- "$f"; fi; '
    + _PIPE_CHECKED.replace("FILTER", "cat")
)

# ---- the same reads for a source only root can read (``LogSource.sudo``). The file's bytes come
# from `sudo -n -- CAT FILE` ($c: cat's absolute path on the host); decompressing and filtering
# run as the login user on the other side of a pipe. Root runs nothing else: no shell, no
# filter, no `timeout` (the transport's `timeout` wraps the whole login-user script; when it
# fires, it signals the script's process group and sudo passes the signal on to cat, which also
# ends a cat blocked on a FIFO or a hung NFS read; a cat whose reader exits dies of SIGPIPE).

# Whether the file is gone: only a directory the login user can search says so (in one it
# cannot, a vanished file fails cat, which fails the read).
_ROOT_EXISTS = (
    '[ -e "$f" ] || [ ! -x "${f%/*}/" ] || { echo "collector: $f: no such file" >&2; exit 4; }; '
)
# The reader's, decompressor's and filter's statuses, in that order of blame: a reader that
# failed (sudo refused, cat could not read; 141 is SIGPIPE: the others stopped first) is exit
# 5; a damaged archive exit 3; else the filter's status (0, 1 "no match", or 2).
_ROOT_READ_STATUS = (
    'case "$s" in *r0*|*r141*) ;; *) echo "collector: sudo -n $c could not read $f" >&2; '
    'exit ' + str(EXIT_ROOT_READ) + ';; esac; '
    'case "$s" in *d[1-9]*) echo "collector: cannot decompress $f completely: the lines '
    'after the damage are missing" >&2; exit 3;; esac; '
)
_FILTER_STATUS = 'case "$s" in *g1*) exit 1;; *g[2-9]*) exit 2;; esac; exit 0'
_ROOT_STATUS = _ROOT_READ_STATUS + _FILTER_STATUS
_ROOT_READER = '{ sudo -n -- "$c" "$f"; echo "r$?" >&3; }'


def _root_pipe(filter_: str | None, status: str = _ROOT_STATUS) -> str:
    """``sudo cat FILE [| DECOMPRESSOR] [| FILTER]`` with every status kept (see above)."""
    decompress = '{ $d; echo "d$?" >&3; }'
    if filter_ is None:
        plain = '{ sudo -n -- "$c" "$f" >&4; echo "r$?" >&3; }'
        packed = _ROOT_READER + ' | { $d >&4; echo "d$?" >&3; }'
    else:
        tail = " | " + filter_ + ' >&4; echo "g$?" >&3; '
        plain = "{ " + _ROOT_READER + tail + "}"
        packed = "{ " + _ROOT_READER + " | " + decompress + tail + "}"
    return (
        'exec 4>&1; if [ -z "$d" ]; then s=$( ' + plain + ' 3>&1 ); '
        'else s=$( { ' + packed + '; } 3>&1 ); fi; ' + status
    )


# $1 = file, $2 = cat's path, the rest = grep arguments.
_ROOT_FILTER_FILE = (
    'f=$1; c=$2; shift 2; ' + _ROOT_EXISTS + _DECOMPRESSOR + _root_pipe('LC_ALL=C grep "$@"')
)
# $1 = file, $2 = cat's path: every line (decompressed).
_ROOT_CAT_FILE = 'f=$1; c=$2; ' + _ROOT_EXISTS + _DECOMPRESSOR + _root_pipe(None)
# $1 = file, $2 = cat's path: the file's bytes as they are (fetch --all).
_ROOT_COPY = (
    'f=$1; c=$2; ' + _ROOT_EXISTS + 'sudo -n -- "$c" "$f" || { echo "collector: sudo -n $c '
    'could not read $f" >&2; exit ' + str(EXIT_ROOT_READ) + '; }'
)

# The journal's mail lines, optionally filtered by grep. $1/$2 = since/until (may be empty),
# $3 = the journal match (e.g. SYSLOG_FACILITY=2), $4 = a journal directory to read instead of
# the system's (a directory host's own var/log/journal; empty: the system journal), the rest =
# grep's words (none: no filter).
# journalctl's own --grep is a regex, so a fixed string goes through grep -F instead.
_JOURNAL = (
    'since=$1; until=$2; match=$3; dir=$4; shift 4; '
    'if [ "$#" -eq 0 ]; then exec journalctl ${dir:+-D "$dir"} --no-pager -q '
    '-o short-iso-precise ${since:+"--since=$since"} ${until:+"--until=$until"} "$match"; fi; '
    'journalctl ${dir:+-D "$dir"} --no-pager -q -o short-iso-precise '
    '${since:+"--since=$since"} ${until:+"--until=$until"} "$match" '
    '| LC_ALL=C grep "$@"'
)
# The same as root: `sudo -n -- JOURNALCTL` ($5: its path) with fixed flags and both bounds always
# given (JOURNAL_FIRST/LAST when the query has none), so that one sudoers line allows every
# call; grep runs as the login user.
_ROOT_JOURNAL_READ = (
    'sudo -n -- "$j" ${dir:+-D "$dir"} --no-pager -q -o short-iso-precise '
    '"--since=$since" "--until=$until" "$match"'
)
_ROOT_JOURNAL_STATUS = (
    'case "$s" in *r0*|*r141*) ;; *) echo "collector: sudo -n $j could not read the journal" '
    '>&2; exit ' + str(EXIT_ROOT_READ) + ';; esac; '
)
_ROOT_JOURNAL = (
    'since=$1; until=$2; match=$3; dir=$4; j=$5; shift 5; exec 4>&1; '
    'if [ "$#" -eq 0 ]; then s=$( { ' + _ROOT_JOURNAL_READ + ' >&4; echo "r$?" >&3; } 3>&1 ); '
    'else s=$( { { ' + _ROOT_JOURNAL_READ + '; echo "r$?" >&3; } | LC_ALL=C grep "$@" >&4; '
    'echo "g$?" >&3; } 3>&1 ); fi; ' + _ROOT_JOURNAL_STATUS + _FILTER_STATUS
)

# ---- pass 1 through a prefilter (``Needles.prefilter``): a first grep for one fixed string per
# address (one string: GNU grep's fast path, about twice the speed of two) feeds the exact grep,
# whose fixed strings arrive as one word ($x, one a line: grep -e takes a newline-separated
# list); both run as the login user. The first grep's status is kept as "p": a read that failed
# is exit 2, never "no match". Pass 1 with offsets puts `-b` on the first grep (the offsets are
# the file's); the exact strings never start with a digit or ":", so they never match inside the
# `OFFSET:` prefix.
_PRE = '{ LC_ALL=C grep "$@"; echo "p$?/" >&3; } | LC_ALL=C grep -F -a -i -e "$x"'
# Pass 2 of ``search --to`` (``drop_deliveries``): the same chain, its second grep leaving out
# the lines that match the regex $x (:data:`DELIVERY_LINE`); the first grep's status is kept
# the same way, so a failed read stays exit 2 and "every line left out" is exit 1.
_DROP = _PRE.replace('grep -F -a -i -e "$x"', 'grep -v -E -a -e "$x"')
_PRE_STATUS = 'case "$s" in *p0/*|*p1/*) ;; *) exit 2;; esac; '
_EXACT_STATUS = 'case "$s" in *g0*) exit 0;; *g1*) exit 1;; *) exit 2;; esac'
# $1 = file, $2 = the exact strings, the rest = the first grep's words.
_PRE_FILTER_FILE = (
    'f=$1; x=$2; shift 2; ' + _EXISTS + _DECOMPRESSOR + 'exec 4>&1; '
    'if [ -z "$d" ]; then s=$( { ' + _PRE.replace('"$@"', '"$@" -- "$f"') + ' >&4; '
    'echo "g$?" >&3; } 3>&1 ); '
    'else s=$( { { $d -- "$f"; echo "d$?" >&3; } | ' + _PRE + ' >&4; echo "g$?" >&3; } 3>&1 ); '
    'case "$s" in *d0*) ;; *) echo "collector: cannot decompress $f completely: the lines '
    'after the damage are missing" >&2; exit 3;; esac; fi; ' + _PRE_STATUS + _EXACT_STATUS
)
# $1 = file, $2 = cat's path, $3 = the exact strings, the rest = the first grep's words.
_PRE_ROOT_FILTER_FILE = (
    'f=$1; c=$2; x=$3; shift 3; ' + _ROOT_EXISTS + _DECOMPRESSOR
    + _root_pipe(_PRE, _ROOT_READ_STATUS + _PRE_STATUS + _FILTER_STATUS)
)
# $1-$4 as in _JOURNAL, $5 = the exact strings, the rest = the first grep's words.
_PRE_JOURNAL = (
    'since=$1; until=$2; match=$3; dir=$4; x=$5; shift 5; exec 4>&1; '
    's=$( { journalctl ${dir:+-D "$dir"} --no-pager -q -o short-iso-precise '
    '${since:+"--since=$since"} ${until:+"--until=$until"} "$match" | ' + _PRE + ' >&4; '
    'echo "g$?" >&3; } 3>&1 ); ' + _PRE_STATUS + _EXACT_STATUS
)
# $1-$5 as in _ROOT_JOURNAL, $6 = the exact strings, the rest = the first grep's words.
_PRE_ROOT_JOURNAL = (
    'since=$1; until=$2; match=$3; dir=$4; j=$5; x=$6; shift 6; exec 4>&1; '
    's=$( { { ' + _ROOT_JOURNAL_READ + '; echo "r$?" >&3; } | ' + _PRE + ' >&4; '
    'echo "g$?" >&3; } 3>&1 ); ' + _ROOT_JOURNAL_STATUS + _PRE_STATUS + _FILTER_STATUS
)

# ---- pass 2 of ``search --to`` without the delivery lines (``drop_deliveries``). The regex a
# line is left out by: a syslog header exactly as ``logs.parse`` reads one (``_BSD_RE`` or
# ``_ISO_RE``, then ``_TAG``), then a queue ID (``_QID``) and ``: to=<`` right after it, with no
# severity between (``warning: ID: to=<`` is a diagnostic, kept). Log content cannot make a line
# match it: the host and the tag are the first two words after the stamp, and every value a
# client chooses (from=<...>, message-id=<...>, client=, helo=) comes after the queue ID's `: `,
# never in place of `to=<`. The same text is an ERE (grep -E under LC_ALL=C) and a Python regex:
# ASCII classes only ([0-9], never \d, which in Python also takes other digits), no \ inside a
# bracket (literal in POSIX), `[` not before `:` inside one (POSIX's `[:class:]`).
_QID_ERE = (
    "[0-9A-F]{6,}|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{10,}z[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-y]+"
)
_D2 = "[0-9][0-9]"
_BSD_ERE = f"[A-Z][a-z][a-z] [ 0-9]?[0-9] {_D2}:{_D2}:{_D2}(\\.[0-9]{{1,9}})?"
_ISO_ERE = (
    f"[0-9]{{4}}-{_D2}-{_D2}T{_D2}:{_D2}:{_D2}(\\.[0-9]{{1,9}})?(Z|[+-]{_D2}:?{_D2})"
)
#: A delivery line (``ID: to=<...``), as a regex that means the same to ``grep -E`` and ``re``.
DELIVERY_LINE = (
    f"^({_BSD_ERE}|{_ISO_ERE}) [^ ]+ [^ :[]+(\\[[0-9]+\\])?: ?({_QID_ERE}): to=<"
)
DELIVERY_LINE_RE = re.compile(DELIVERY_LINE)

# $1 = file, $2 = the regex, the rest = grep's words (pass 2's fixed strings on fd 5). The
# filters with a prefilter above, their second grep leaving lines out (_DROP) instead.
_DROP_IDS_FILE = _KEEP_STDIN + _PRE_FILTER_FILE.replace(_PRE, _DROP).replace(
    _PRE.replace('"$@"', '"$@" -- "$f"'), _DROP.replace('"$@"', '"$@" -- "$f"'))
# $1 = file, $2 = cat's path, $3 = the regex, the rest = grep's words.
_DROP_ROOT_IDS_FILE = _KEEP_STDIN + _PRE_ROOT_FILTER_FILE.replace(_PRE, _DROP)
# $1-$4 as in _JOURNAL, $5 = the regex, the rest = grep's words.
_DROP_JOURNAL = _KEEP_STDIN + _PRE_JOURNAL.replace(_PRE, _DROP)
# $1-$5 as in _ROOT_JOURNAL, $6 = the regex, the rest = grep's words.
_DROP_ROOT_JOURNAL = _KEEP_STDIN + _PRE_ROOT_JOURNAL.replace(_PRE, _DROP)
_JOURNAL_MATCH = re.compile(r"^[A-Z_]+=[0-9A-Za-z@._:/-]+$")
DEFAULT_JOURNAL_MATCH = "SYSLOG_FACILITY=2"


def journal_match(source: LogSource) -> str:
    """The journal field match a journal source stands for (``journal:SYSLOG_FACILITY=2``)."""
    _, _, match = source.path.partition(":")
    return match if _JOURNAL_MATCH.match(match) else DEFAULT_JOURNAL_MATCH


@dataclass(frozen=True, slots=True)
class Needles:
    """The fixed strings of pass 1 and whether they compare case-insensitively.

    Case-insensitive strings are what ``select`` compares with :func:`~collector.logs.select.
    fold`; grep gets the part of each that it can find under ``LC_ALL=C -i`` (all of an ASCII
    string, see :func:`~collector.logs.select.fixed_part`), so it never misses a line that the
    comparison accepts.
    """

    strings: tuple[str, ...]
    ignore_case: bool
    #: Fixed strings, ready for grep, one per address, compared case-insensitively: every line
    #: holding a needle holds one of them. When set, a first grep for them feeds the exact one
    #: (one string per address beats the two needles per address); empty: one grep.
    prefilter: tuple[str, ...] = ()
    #: The strings are the recipients' (``to=<ADDR>``, which also finds ``orig_to=<ADDR>``):
    #: pass 1 then holds every delivery line of the rows a query selects (see
    #: :data:`DELIVERY_LINE`).
    recipients: bool = False


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
        # `to=user@host,`: the address without brackets (Postfix always brackets it; some
        # rewritten logs do not).
        return Needles(_with_bare("to", query.recipients), True,
                       _prefilter("to", query.recipients), recipients=True)
    if query.senders:
        return Needles(_with_bare("from", query.senders), True, _prefilter("from", query.senders))
    if query.subjects:
        # header_checks logs `header Subject: TEXT from client; ...`: the text itself is the
        # fixed string (anywhere in the Subject), compared case-insensitively like addresses.
        return Needles(tuple(query.subjects), True)
    if query.clients:
        return Needles(tuple(query.clients), True)
    if query.statuses:
        return Needles(tuple(f"status={s}" for s in query.statuses if s != "rejected")
                       + (("reject: ",) if "rejected" in query.statuses else ()), False)
    return None


def _with_bare(key: str, addresses: Sequence[str]) -> tuple[str, ...]:
    """``key=<a>`` and, for a non-empty address, ``key=a,`` (logged without brackets)."""
    return tuple(n for a in addresses for n in (f"{key}=<{a}>", *((f"{key}={a},",) if a else ())))


def _prefilter(key: str, addresses: Sequence[str]) -> tuple[str, ...]:
    """The bare address (its grep-ready part) for each address, when it is inside the grep-ready
    part of each of that address's needles; none at all when one address has no such string
    (the empty address: ``from=<>``) or a needle's part starts with a digit or ":" (it could
    then match inside grep -b's ``OFFSET:`` prefix)."""
    out: list[str] = []
    for a in addresses:
        bare = fixed_part(a)
        parts = [fixed_part(n) for n in _with_bare(key, (a,))]
        if not bare or any(bare not in p or p[:1] in "0123456789:" for p in parts):
            return ()
        out.append(bare)
    return tuple(dict.fromkeys(out))


def _exact_word(needles: Needles) -> str:
    """The exact grep's fixed strings as one word, one a line (after a prefilter)."""
    return "\n".join(dict.fromkeys(fixed_part(s) for s in needles.strings))


def _prefilter_words(needles: Needles, *flags: str) -> list[str]:
    words = [*flags, "-F", "-a", "-i"]
    for s in needles.prefilter:
        words += ["-e", s]
    return words


def _grep_words(needles: Needles) -> list[str]:
    words = ["-F", "-a"]
    strings = needles.strings
    if needles.ignore_case:
        words.append("-i")
        strings = tuple(dict.fromkeys(fixed_part(s) for s in strings))
    for s in strings:
        words += ["-e", s]
    return words


def _script(kind: CommandKind, script: str, path: str, words: Sequence[str], shown: str) -> Command:
    return Command(kind, ("sh", "-c", script, "sh", path, *words), shown or path)


def _file_script(
    kind: CommandKind,
    scripts: tuple[str, str],
    path: str,
    words: Sequence[str],
    shown: str,
    root: RootPrograms | None,
) -> Command:
    """``scripts``: the login user's own read, and the one through ``sudo -n cat``."""
    if root is None:
        return _script(kind, scripts[0], path, words, shown)
    return _script(kind, scripts[1], path, (root.cat, *words), shown)


def filter_file_command(
    path: str, needles: Needles | None, *, shown: str = "", root: RootPrograms | None = None
) -> Command:
    """Pass 1 on one file: the lines carrying any needle (or every line with no needle).

    ``path`` is the path the command uses, ``shown`` the host path a person knows it by;
    ``root``: the file is read as root (``sudo -n cat``), everything else as the login user.
    """
    if needles is None:
        return _file_script(CommandKind.ALL, (_CAT_FILE, _ROOT_CAT_FILE), path, (), shown, root)
    if needles.prefilter:
        return _file_script(CommandKind.MATCH, (_PRE_FILTER_FILE, _PRE_ROOT_FILTER_FILE), path,
                            (_exact_word(needles), *_prefilter_words(needles)), shown, root)
    return _file_script(CommandKind.MATCH, (_FILTER_FILE, _ROOT_FILTER_FILE), path,
                        _grep_words(needles), shown, root)


_ID_WORD = re.compile(r"[0-9A-Za-z]+")


def _id_words(queue_ids: Iterable[str]) -> list[str]:
    """The IDs a fixed string is made of, sorted and once each: words of letters and digits."""
    return sorted({q for q in queue_ids if _ID_WORD.fullmatch(q)})


def id_patterns(queue_ids: Sequence[str]) -> tuple[str, ...]:
    """The fixed strings of pass 2 for these IDs: the ID as a Postfix line carries it after
    its program tag or severity (``]: ID: ``, ``tag: ID: ``, ``warning: ID: ``), inside
    rsyslog's ``message repeated N times: [ ID: ...]``, and a content filter's verdict
    ``Queue-ID: ID,`` (amavis). Only a word of letters and digits is an ID here: one line
    is one pattern, and an empty one would match every line."""
    ids = _id_words(queue_ids)
    return (*(f": {q}: " for q in ids), *(f"[ {q}: " for q in ids),
            *(f"Queue-ID: {q}," for q in ids))


# Every place where one of id_patterns' strings starts (a lookahead: they may overlap).
_ID_PLACES = re.compile(r"(?=(?:: |\[ )([0-9A-Za-z]+): |Queue-ID: ([0-9A-Za-z]+),)")


def carries_id(line: str, queue_ids: AbstractSet[str]) -> bool:
    """Whether pass 2 for these IDs prints this line: it holds one of their
    :func:`id_patterns` (the same test in Python, for lines pass 1 read instead)."""
    for m in _ID_PLACES.finditer(line):
        if (m.group(1) or m.group(2)) in queue_ids:
            return True
    return False


def pattern_lines(patterns: Sequence[str]) -> bytes:
    """Fixed strings as ``grep -f`` reads them: one a line."""
    return "".join(p + "\n" for p in patterns).encode()


# The pass-2 scripts: the filters above with grep's fixed strings read from fd 5 (the
# script's stdin, see PATTERNS_FROM_STDIN).
_IDS_FILE = _KEEP_STDIN + _FILTER_FILE
_ROOT_IDS_FILE = _KEEP_STDIN + _ROOT_FILTER_FILE


def ids_file_commands(
    path: str,
    queue_ids: Sequence[str],
    *,
    shown: str = "",
    root: RootPrograms | None = None,
    drop_deliveries: bool = False,
) -> list[Command]:
    """Pass 2 on one file: every line of exactly these queue IDs, in one read of the file
    (one ``grep -F`` with every ID at once, its fixed strings on stdin).

    ``drop_deliveries``: leave out the delivery lines (:data:`DELIVERY_LINE`), for a search
    whose pass 1 read this file for the recipients and holds theirs."""
    if drop_deliveries:
        command = _file_script(CommandKind.IDS, (_DROP_IDS_FILE, _DROP_ROOT_IDS_FILE), path,
                               (DELIVERY_LINE, *PATTERNS_FROM_STDIN), shown, root)
    else:
        command = _file_script(CommandKind.IDS, (_IDS_FILE, _ROOT_IDS_FILE), path,
                               PATTERNS_FROM_STDIN, shown, root)
    return [dataclasses.replace(command, stdin=pattern_lines(id_patterns(queue_ids)))]


def copy_file_command(
    path: str, *, shown: str = "", root: RootPrograms | None = None
) -> Command:
    """A whole file, byte for byte (a rotated file stays compressed)."""
    if root is not None:
        return _script(CommandKind.COPY, _ROOT_COPY, path, (root.cat,), shown)
    return Command(CommandKind.COPY, ("cat", "--", path), shown or path)


def journal_command(
    needles: Needles | None,
    *,
    since: datetime | None,
    until: datetime | None,
    match: str = DEFAULT_JOURNAL_MATCH,
    kind: CommandKind | None = None,
    directory: str = "",
    root: RootPrograms | None = None,
) -> Command:
    """The journal's mail lines as ``short-iso-precise`` text, time window pushed down.

    ``directory``: read that journal directory (``journalctl -D``), not the system's.
    ``root``: read it as root, ``journalctl`` through ``sudo -n`` (see ``_ROOT_JOURNAL``).
    """
    words = _grep_words(needles) if needles is not None else []
    chosen = kind or (CommandKind.ALL if needles is None else CommandKind.MATCH)
    if needles is not None and needles.prefilter:
        words = _prefilter_words(needles)
        if root is not None:
            argv_pre: tuple[str, ...] = (
                "sh", "-c", _PRE_ROOT_JOURNAL, "sh", _journal_time(since) or JOURNAL_FIRST,
                _journal_time(until) or JOURNAL_LAST, match, directory, root.journalctl,
                _exact_word(needles), *words,
            )
        else:
            argv_pre = ("sh", "-c", _PRE_JOURNAL, "sh", _journal_time(since),
                        _journal_time(until), match, directory, _exact_word(needles), *words)
        return Command(chosen, argv_pre, f"journal:{match}")
    if root is not None:
        argv: tuple[str, ...] = (
            "sh", "-c", _ROOT_JOURNAL, "sh", _journal_time(since) or JOURNAL_FIRST,
            _journal_time(until) or JOURNAL_LAST, match, directory, root.journalctl, *words,
        )
    else:
        argv = ("sh", "-c", _JOURNAL, "sh", _journal_time(since), _journal_time(until), match,
                directory, *words)
    return Command(chosen, argv, f"journal:{match}")


def journal_ids_command(
    queue_ids: Sequence[str],
    *,
    since: datetime | None,
    until: datetime | None,
    match: str = DEFAULT_JOURNAL_MATCH,
    directory: str = "",
    root: RootPrograms | None = None,
    drop_deliveries: bool = False,
) -> Command:
    """Pass 2 on the journal: every line of these queue IDs (fixed strings on stdin);
    ``drop_deliveries`` as in :func:`ids_file_commands`."""
    if drop_deliveries:
        if root is not None:
            words: tuple[str, ...] = (
                _journal_time(since) or JOURNAL_FIRST, _journal_time(until) or JOURNAL_LAST,
                match, directory, root.journalctl, DELIVERY_LINE,
            )
            script = _DROP_ROOT_JOURNAL
        else:
            words = (_journal_time(since), _journal_time(until), match, directory,
                     DELIVERY_LINE)
            script = _DROP_JOURNAL
        return Command(CommandKind.IDS, ("sh", "-c", script, "sh", *words,
                                         *PATTERNS_FROM_STDIN),
                       f"journal:{match}", pattern_lines(id_patterns(queue_ids)))
    if root is not None:
        argv: tuple[str, ...] = (
            "sh", "-c", _KEEP_STDIN + _ROOT_JOURNAL, "sh", _journal_time(since) or JOURNAL_FIRST,
            _journal_time(until) or JOURNAL_LAST, match, directory, root.journalctl,
            *PATTERNS_FROM_STDIN,
        )
    else:
        argv = ("sh", "-c", _KEEP_STDIN + _JOURNAL, "sh", _journal_time(since),
                _journal_time(until), match, directory, *PATTERNS_FROM_STDIN)
    return Command(CommandKind.IDS, argv, f"journal:{match}",
                   pattern_lines(id_patterns(queue_ids)))


def match_command(
    source: LogSource,
    path: str,
    needles: Needles | None,
    query: Query,
    root: RootPrograms | None = None,
) -> Command:
    """Pass 1 on any source (``path``: the path a command uses for a file source; for a
    journal, the journal directory to read, or empty for the system's). ``root``: the
    source is read as root, with these programs (``LogSource.sudo``)."""
    if source.kind == "journal":
        return journal_command(
            needles, since=query.since, until=query.until, match=journal_match(source),
            directory=path, root=root,
        )
    return filter_file_command(path, needles, shown=source.path, root=root)


def ids_commands(
    source: LogSource,
    path: str,
    queue_ids: Sequence[str],
    query: Query,
    root: RootPrograms | None = None,
    *,
    drop_deliveries: bool = False,
) -> list[Command]:
    """Pass 2 on any source: every line of these queue IDs (``drop_deliveries``: but the
    delivery lines, see :func:`ids_file_commands`)."""
    if source.kind == "journal":
        return [
            journal_ids_command(
                queue_ids, since=query.since, until=query.until, match=journal_match(source),
                directory=path, root=root, drop_deliveries=drop_deliveries,
            )
        ]
    return ids_file_commands(path, queue_ids, shown=source.path, root=root,
                             drop_deliveries=drop_deliveries)


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


_JOURNAL_EDGES = (
    'dir=$2; journalctl ${dir:+-D "$dir"} --no-pager -q -o short-iso-precise "$1" | head -n 1; '
    'journalctl ${dir:+-D "$dir"} --no-pager -q -o short-iso-precise -n 1 "$1"'
)


# $1 = match, $2 = directory, $3 = journalctl's path: the same two lines read as root, in the
# two shapes the sudoers lines allow (the first line: the whole window; the last: -n 1).
_ROOT_JOURNAL_EDGES = (
    'dir=$2; sudo -n -- "$3" ${dir:+-D "$dir"} --no-pager -q -o short-iso-precise '
    '"--since=$4" "--until=$5" "$1" | head -n 1; '
    'sudo -n -- "$3" ${dir:+-D "$dir"} --no-pager -q -o short-iso-precise -n 1 "$1" '
    '|| exit ' + str(EXIT_ROOT_READ)
)


def edge_lines_command(
    source: LogSource, path: str, root: RootPrograms | None = None
) -> Command:
    """The first and the last line of a source (for ``hosts --check``); only a journal has a
    root form here (``hostcheck`` reads a file's two ends itself)."""
    if source.kind == "journal":
        if root is not None:
            return _script(CommandKind.EDGES, _ROOT_JOURNAL_EDGES, journal_match(source),
                           (path, root.journalctl, JOURNAL_FIRST, JOURNAL_LAST), source.path)
        return _script(CommandKind.EDGES, _JOURNAL_EDGES, journal_match(source), (path,),
                       source.path)
    return _script(CommandKind.EDGES, _EDGES, path, (), source.path)


# --------------------------------------------------------------------------- coverage
# $1 = bytes, then (file, reader, end) triples: for each file exactly two lines, its first
# line and (when end is "last") its last, each cut to $1 bytes and never more than one line
# (tr drops the newline a line ends with; echo writes one), empty when unknown. reader: empty
# for the login user, else cat's path under `sudo -n` (only cat runs as root; a root file's
# last line is not read: `tail` of a pipe would read it whole). A constant: inputs are words.
_EDGES_ALL = (
    'n=$1; shift; while [ "$#" -ge 3 ]; do f=$1; c=$2; e=$3; shift 3; '
    'case "$f" in *.gz) d="gzip -dc";; *.bz2) d="bzip2 -dc";; *.xz) d="xz -dc";; '
    '*.zst) d="zstd -dcq";; *) d=cat;; esac; '
    'if [ -z "$c" ]; then $d -- "$f" 2>/dev/null; '
    'else sudo -n -- "$c" "$f" 2>/dev/null | $d 2>/dev/null; fi '
    '| head -c "$n" | head -n 1 | tr -d "\\n"; echo; '
    'if [ "$e" = last ] && [ -z "$c" ]; then tail -c "$n" -- "$f" 2>/dev/null '
    '| tail -n 1 | tr -d "\\n"; fi; echo; done'
)
#: The bytes of one line kept at each end of a file (a longer line is cut: its stamp is first).
EDGE_BYTES = 4096


def edges_command(files: Sequence[tuple[str, str | None, bool]]) -> Command:
    """The first and last lines of many files in one command: (path the command uses, cat's
    path when read as root, whether to read the last line). Two lines out per file."""
    words: list[str] = [str(EDGE_BYTES)]
    for path, cat, last in files:
        words += [path, cat or "", "last" if last else "first"]
    return Command(CommandKind.EDGES, ("sh", "-c", _EDGES_ALL, "sh", *words),
                   files[0][0] if files else "")


# --------------------------------------------------------------------------- windows
# Lines of one message sit close together in a log: a message usually lives a few seconds
# between its client= and removed lines. Pass 1 reports each hit's byte offset (grep -b), so
# pass 2 reads windows of the file around the hits instead of the whole file; any queue ID
# whose life is not complete inside its window is looked up in the whole file afterwards.

#: Bytes read before and after each pass-1 hit.
WINDOW_BEFORE = 64 * 1024
WINDOW_AFTER = 192 * 1024

#: Windows whose cost (see ``WINDOW_COST_BYTES``) is more than this share of a whole-file
#: pass 2 are not worth it: the IDs a window cuts are then read in the whole file as well.
WINDOW_MAX_SHARE = 0.6

#: What one window costs, in bytes of the whole file that one ``grep -F`` pass 2 reads in
#: the same time: each window is one ``dd`` process (~1 ms), and pass 2's grep for a few
#: hundred IDs' fixed strings reads a file at ~1.2 GB/s (measured on a 277 MB log: 98 windows
#: read in 0.10-0.14 s, one grep of the whole file for the same 648 strings 0.22-0.27 s).
#: Windows closer than this are read as one (reading the gap costs less than a window).
WINDOW_COST_BYTES = 3 * 512 * 1024

#: Windows are read in blocks of this many bytes (``dd bs=``: POSIX dd counts in blocks), so
#: a window is widened to whole blocks; the lines it gains are lines of the file all the same.
WINDOW_BLOCK = 4096

#: Printed after each window of pass 2 (grep passes it as one more fixed pattern, with its
#: byte offset in the stream like every line), so that each line is known by the window it
#: came from and each window's length is checked. An empty line goes first: it ends a last
#: line cut by the window (or written without its newline).
WINDOW_MARK = "@@collector-window-end@@"
#: Printed when a window's ``dd`` failed (a read error, no ``dd``): none of the windows is used.
WINDOW_FAILED = "@@collector-window-failed@@"

# $1 = file, $2 = block size, $3 = the windows as FIRST_BLOCK:BLOCKS words (numbers we
# generate; BLOCKS "-": to the end of the file), the rest = grep's words (-b: every line with
# its byte offset in the stream, which is how the reader finds the lines a window cut in two
# and checks that each window is as long as planned; see :func:`window_lines`).
_WINDOWS = (
    'f=$1; bs=$2; wins=$3; shift 3; ' + _EXISTS
    + 'for w in $wins; do k=${w%%:*}; n=${w#*:}; '
    'if [ "$n" = - ]; then dd if="$f" bs="$bs" skip="$k" 2>/dev/null; '
    'else dd if="$f" bs="$bs" skip="$k" count="$n" 2>/dev/null; fi '
    '|| { echo; echo ' + WINDOW_FAILED + '; }; echo; echo ' + WINDOW_MARK + '; '
    'done | LC_ALL=C grep "$@"'
)
# Pass 2 in windows for ``search --to`` (``drop_deliveries``): $4 = the regex of the lines left
# out (:data:`DELIVERY_LINE` after grep -b's `OFFSET:`), the rest as above. The marks always
# pass, so the last grep never finds "nothing"; a window that lost lines is caught by them.
_DROP_WINDOWS = _WINDOWS.replace("shift 3; ", "x=$4; shift 4; ").replace(
    'grep "$@"', 'grep "$@" | LC_ALL=C grep -v -E -a -e "$x"')
#: :data:`DELIVERY_LINE` on a line that ``grep -b`` prints (``OFFSET:`` first).
DELIVERY_LINE_AT = "^[0-9]+:" + DELIVERY_LINE.removeprefix("^")


@dataclass(frozen=True, slots=True)
class Window:
    start: int  # byte offset of the first byte wanted
    end: int | None  # one past the last byte wanted; None: to the end of the file


@dataclass(frozen=True, slots=True)
class WindowRead:
    """What pass 2 reads for one window: whole blocks from ``first`` (a byte offset), and
    ``length`` bytes of them (None: to the end of the file)."""

    first: int
    length: int | None

    @property
    def cut_start(self) -> bool:
        """Whether the read may begin inside a line (its first line is then dropped)."""
        return self.first > 0


def windows_around(
    offsets: Sequence[int], size: int | None, *, merge_gap: int = 0
) -> list[Window]:
    """Merged windows around pass-1 hits (byte offsets of line starts); windows less than
    ``merge_gap`` bytes apart are one."""
    spans: list[list[int]] = []
    for off in sorted(set(offsets)):
        start = max(0, off - WINDOW_BEFORE)
        end = off + WINDOW_AFTER
        if spans and start - spans[-1][1] <= merge_gap:
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([start, end])
    out: list[Window] = []
    for start, end in spans:
        out.append(Window(start, None if size is not None and end >= size else end))
        if out[-1].end is None:
            break  # it reads to the end of the file: hits past it (the file grew) are in it
    return out


def plan_windows(offsets: Sequence[int], size: int | None) -> list[Window]:
    """Pass 2's windows around these hits: closer than a window costs, they are one."""
    return windows_around(offsets, size, merge_gap=WINDOW_COST_BYTES)


def window_reads(windows: Sequence[Window], size: int | None) -> list[WindowRead]:
    """The block-aligned reads of these windows. Each read begins one byte before its
    window, so a line that starts exactly at the window is whole (the partial line the read
    begins with is dropped); a read that would pass the end of the file reads to its end."""
    block = WINDOW_BLOCK
    out: list[WindowRead] = []
    for w in windows:
        first = max(0, w.start - 1) // block * block
        last = None if w.end is None else -(-w.end // block) * block
        if last is not None and size is not None and last >= size:
            last = None
        out.append(WindowRead(first, None if last is None else last - first))
    return out


def window_ids_command(
    path: str,
    windows: Sequence[Window],
    queue_ids: Sequence[str],
    *,
    size: int | None = None,
    shown: str = "",
    drop_deliveries: bool = False,
) -> Command:
    """Pass 2 inside windows of a plain file of ``size`` bytes, in one command whatever the
    number of IDs (fixed strings on stdin): the lines of these queue IDs, each with its offset (read them with :func:`window_lines`); ``drop_deliveries``:
    but the delivery lines, as :func:`ids_file_commands`."""
    words = [
        f"{r.first // WINDOW_BLOCK}:{'-' if r.length is None else r.length // WINDOW_BLOCK}"
        for r in window_reads(windows, size)
    ]
    script, drop = (_DROP_WINDOWS, (DELIVERY_LINE_AT,)) if drop_deliveries else (_WINDOWS, ())
    command = _script(
        CommandKind.WINDOW_IDS, _KEEP_STDIN + script, path,
        (str(WINDOW_BLOCK), " ".join(words), *drop, "-b", *PATTERNS_FROM_STDIN), shown,
    )
    # A notification's life starts with cleanup's line and no client: its parent's bounce
    # line (``PARENT: sender non-delivery notification: ID``) is what proves it started, so
    # the windows bring that line too (a line of the parent, never kept for it here).
    notices = tuple(f"notification: {q}" for q in _id_words(queue_ids))
    return dataclasses.replace(
        command,
        stdin=pattern_lines((*id_patterns(queue_ids), *notices, WINDOW_MARK, WINDOW_FAILED)),
    )


class WindowsUnread(Exception):
    """Pass 2's windows did not come back as planned (a window shorter than planned: the
    file changed; a line out of place; a line too long to place): none of them is used."""


def window_lines(
    lines: Iterable[bytes], reads: Sequence[WindowRead]
) -> Iterator[tuple[int, bytes]]:
    """The whole lines of :func:`window_ids_command`'s output, each with its window's index.

    Every line comes with its byte offset in the stream of windows (each window's bytes, a
    newline, the mark); so a line that starts where a read starts (mid-line, unless the read
    starts the file) and one that ends where a read ends (cut by it, unless the read reaches
    the end of the file) are dropped, and each mark must sit exactly where its window's
    planned length puts it. Anything else raises :class:`WindowsUnread`: a window's lines are
    used only when the window is known to be one contiguous stretch of the file.
    """
    mark = WINDOW_MARK.encode()
    failed = WINDOW_FAILED.encode()
    index = 0
    pos = 0  # the stream offset of the current window's first byte
    prev = -1  # the offset of the line before (each line takes at least its newline)
    for raw in lines:
        off, line = split_offset(raw)
        if index >= len(reads) or off is None or off < pos or off <= prev:
            raise WindowsUnread("a line out of place")
        prev = off
        read = reads[index]
        end = None if read.length is None else pos + read.length
        if line == failed:
            raise WindowsUnread("a window could not be read")
        if line == mark:
            if end is not None and off != end + 1:
                raise WindowsUnread("a window shorter than planned")
            index += 1
            pos = off + len(mark) + 1
            continue
        if is_cut(line) or (end is not None and off + len(line) > end):
            raise WindowsUnread("a line out of place")
        if read.cut_start and off == pos:
            continue  # the read began inside this line
        if end is not None and off + len(line) == end:
            continue  # the read ended inside this line (the newline after it is ours)
        yield index, line
    if index != len(reads):
        raise WindowsUnread("fewer windows than planned")


def windows_worth_it(windows: Sequence[Window], size: int | None) -> bool:
    """Whether reading these windows beats reading the whole file: what they cost (the bytes
    they cover, and ``WINDOW_COST_BYTES`` each) is a small enough share of it."""
    if not size or not windows:
        return False
    covered = sum(max(0, (w.end if w.end is not None else size) - w.start) for w in windows)
    return len(windows) * WINDOW_COST_BYTES + covered <= size * WINDOW_MAX_SHARE


def filter_offsets_command(path: str, needles: Needles, *, shown: str = "") -> Command:
    """Pass 1 on a plain file with each line's byte offset (``OFFSET:line``)."""
    if needles.prefilter:
        return _script(CommandKind.MATCH_OFFSETS, _PRE_FILTER_FILE, path,
                       (_exact_word(needles), *_prefilter_words(needles, "-b")), shown)
    return _script(
        CommandKind.MATCH_OFFSETS, _FILTER_FILE, path, ("-b", *_grep_words(needles)), shown
    )


def split_offset(line: bytes) -> tuple[int | None, bytes]:
    """``b"1234:Nov 29 ..."`` -> (1234, b"Nov 29 ...")."""
    head, sep, rest = line.partition(b":")
    if sep and head.isdigit():
        return int(head), rest
    return None, line


# --------------------------------------------------------------------------- follow

#: A line the follow command prints every :data:`FOLLOW_BEAT` seconds: proof that the host is
#: still there when it logs nothing, and the way the command learns that nobody reads it any
#: more. A log line never is exactly this (it starts with a timestamp).
FOLLOW_MARK = "@@collector-alive@@"
FOLLOW_BEAT = 10

# New lines of every file and the journal, filtered on the host: only the lines of Postfix's
# syslog names leave it. $1 = heartbeat seconds, $2 = the heartbeat line, $3 = grep's fixed
# strings (one per line: grep -F takes a newline-separated list), $4 = journal match (empty: no
# journal), $5 = journal directory (empty: the system's), $6 = journalctl's path as root (empty:
# the login user reads the journal), $7 = tail's path as root, $8 = the number of files read as
# root; then those files (`sudo -n -- TAIL -n0 -F -q -- FILE`, one each: one sudoers line names
# one file), then the files the login user reads. A constant: every input is a word.
#
# No deadline guards it (no `timeout`: it runs until stopped). It ends itself: the heartbeat
# `echo` fails once its output is closed (collector stopped, the channel or the connection
# went away), and `kill 0` then ends its whole process group (sshd and a local run give it a
# group of its own), tail, journalctl and grep with it; under sudo, sudo passes the signal on.
_FOLLOW = (
    'beat=$1; mark=$2; pats=$3; match=$4; dir=$5; j=$6; t=$7; r=$8; shift 8; '
    '{ while [ "$r" -gt 0 ]; do sudo -n -- "$t" -n0 -F -q -- "$1" & shift; r=$((r - 1)); done; '
    'if [ -n "$match" ]; then ${j:+sudo -n -- "$j"} ${j:-journalctl} ${dir:+-D "$dir"} '
    '--no-pager -q -o short-iso-precise -f -n 0 "$match" & fi; '
    'if [ "$#" -gt 0 ]; then tail -n0 -F -q -- "$@" & fi; wait; } '
    '| LC_ALL=C grep --line-buffered -F -a -e "$pats" & '
    "trap '' PIPE; "
    'while echo "$mark" 2>/dev/null; do sleep "$beat"; done; kill 0'
)


def follow_command(
    files: Sequence[str],
    *,
    patterns: Sequence[str],
    journal: str = "",
    journal_dir: str = "",
    root_files: Sequence[str] = (),
    root: RootPrograms | None = None,
    journal_as_root: bool = False,
    beat: int = FOLLOW_BEAT,
) -> Command:
    """``follow``: the lines logged from now on in ``files`` (rotation followed: ``tail -F``)
    and in the journal (``journal``: its match, empty for none), only those that carry one of
    ``patterns`` (Postfix's syslog names: ``postfix/``), with a heartbeat line
    (:data:`FOLLOW_MARK`) every ``beat`` seconds. ``root_files`` are read as root through
    ``sudo -n -- tail -n0 -F -q -- FILE`` (the journal through ``sudo -n -- journalctl``);
    run it with no deadline."""
    programs = root or RootPrograms()
    pats = "\n".join(p for p in patterns if p and "\n" not in p) or "postfix/"
    shown = ", ".join([*root_files, *files, *([f"journal:{journal}"] if journal else [])])
    return Command(
        CommandKind.FOLLOW,
        ("sh", "-c", _FOLLOW, "sh", str(beat), FOLLOW_MARK, pats, journal, journal_dir,
         programs.journalctl if journal and journal_as_root else "", programs.tail,
         str(len(root_files)), *root_files, *files),
        shown,
    )

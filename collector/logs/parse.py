"""Postfix log lines -> Records.

Pure: a line and a :class:`TimeContext` in, a :class:`~collector.models.Record` out. Every
envelope of ``postfix-log-format.md`` section 1 is detected per line, so one stream may mix
them. Bodies are dispatched on cheap prefix checks; regexes run only for the few shapes that
need them.

:func:`parse_line` turns every understood Postfix line into a Record, including lines
without tracing meaning (``Kind.OTHER``: TLS, postscreen, anvil, ...). :class:`LineParser`,
the bulk path, counts the lines that carry neither a queue ID nor NOQUEUE but builds no
Record for them unless asked (``keep_all``): on a busy MX that is half of the lines.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

from collector.models import NO_FIELDS, Kind, ParseStats, Record, RejectAction, fast_constructor

# Enum attribute lookup goes through the metaclass (about 0.2 us in 3.11); the hot paths
# compare against these module constants instead.
_ACTION = Kind.ACTION
_CLIENT = Kind.CLIENT
_CONNECT = Kind.CONNECT
_DELIVERY = Kind.DELIVERY
_DIAGNOSTIC = Kind.DIAGNOSTIC
_DISCONNECT = Kind.DISCONNECT
_EXPIRED = Kind.EXPIRED
_MESSAGE_ID = Kind.MESSAGE_ID
_NOTIFICATION = Kind.NOTIFICATION
_OTHER = Kind.OTHER
_PICKUP = Kind.PICKUP
_POSTSUPER = Kind.POSTSUPER
_QUEUED = Kind.QUEUED
_REJECT = Kind.REJECT
_REMOVED = Kind.REMOVED
_RESENT_MESSAGE_ID = Kind.RESENT_MESSAGE_ID
_VERDICT = Kind.VERDICT

__all__ = ["QUEUE_ID_RE", "LineParser", "TimeContext", "line_time", "parse_line"]


@dataclass(frozen=True, slots=True)
class TimeContext:
    """How to place year-less and zone-less stamps in time.

    ``tz`` is the zone of the host, used for stamps without an offset (BSD, postlogd, journal
    ``short``/``short-precise``). ``reference`` (aware) is the source's mtime: a year-less
    stamp gets the latest year in which it is <= ``reference`` + 1 day, so a Dec 31 line in a
    file written in January lands in the previous year.
    """

    tz: tzinfo
    reference: datetime


_EMPTY = NO_FIELDS

_MONTHS = {
    m: i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}

# Short IDs are uppercase hex; long IDs are base-52 without vowels and the last `z` separates
# the inode part. `\w+` would also take NOQUEUE, so the alphabets are spelled out.
_B51 = "[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-y]"
# The seconds and microseconds digits are base 52 (``z`` included: ``4jcvDj3dCzzC5v1``); only
# the inode part is base 51, so the *last* ``z`` is the separator.
_B52 = "[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]"
_QID = rf"[0-9A-F]{{6,}}|{_B52}{{10,}}z{_B51}+"
QUEUE_ID_RE = re.compile(_QID)

# What follows `tag[pid]: `: an optional severity (info has none), then an optional queue ID or
# NOQUEUE, also after the severity (`warning: ID: ...`). Folded into the envelope regexes so one
# C-level match does the whole head of the line.
_HEAD = rf"(?:(warning|error|fatal|panic): )?(?:(NOQUEUE|{_QID}): )?"
_TAG = r"([^ ]+) ([^ \[:]+)(?:\[(\d+)\])?: ?"
# BSD syslog pads the day with a space (`Jan  5`), postlogd and journalctl `short` with a zero
# (`Jan 05`); journalctl `short-precise` adds a fraction. No year, no zone. The stamp stays one
# group: it is the key of the stamp cache.
_BSD_RE = re.compile(r"([A-Z][a-z][a-z] [ \d]?\d \d\d:\d\d:\d\d)(?:\.(\d{1,9}))? " + _TAG + _HEAD)
# rsyslog RFC 3339 (`+01:00`, `Z`, fraction optional) and journalctl `short-iso[-precise]`
# (systemd <= 254 writes `+0000` without a colon).
_ISO_RE = re.compile(
    r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:?\d\d) " + _TAG + _HEAD
)
_BSD_MATCH = _BSD_RE.match
_ISO_MATCH = _ISO_RE.match
_HEAD_RE = re.compile(_HEAD)
# rsyslog's RepeatedMsgReduction wraps a line: `message repeated 2 times: [ ID: client=...]`.
_REPEATED_RE = re.compile(r"message repeated (\d{1,6}) times: \[ ?(.*?) ?\]$")

# An address between `<` and `>` as any Postfix line logs it: since 3.5
# (info_log_address_format = external) a local part with a space or one of `<>()[],;:@\"` is a
# quoted string, `"` and `\` escaped inside (quote_822_local.c), so a `>`, `, status=` or
# `; from=<` inside it is part of the address. The alternatives start with different
# characters (unrolled: runs of plain characters, then a quoted string): the match is unique
# and cannot backtrack.
_QUOTED = r'"[^"\\]*(?:\\.[^"\\]*)*"'
_ADDR = rf'[^">]*(?:{_QUOTED}[^">]*)*'
ADDRESS_RE = re.compile(_ADDR)

# The delivery line as Postfix 2.9-3.12 write it (log_adhoc.c); anything else falls back to
# the key=value scanner. `(.*)\)` is greedy: the status text ends at the LAST `)`.
_DELIVERY_RE = re.compile(
    rf"to=<({_ADDR})>(?:, orig_to=<({_ADDR})>)?, relay=([^,]*)(?:, conn_use=(\d+))?, "
    r"delay=([^,]*), delays=([^,]*)(?:, tls=([^,]*))?, dsn=([^,]*), status=(\S+)(?: \((.*)\))?$"
)
_DELIVERY_PLAIN_RE = re.compile(_DELIVERY_RE.pattern.replace(_ADDR, "[^>]*"))
# One `key=value` of a list separated by `, ` (delivery, qmgr, client=), read in order from
# the left: a value in <...> is an address (above) and loses the brackets; any other value
# ends at the next comma.
_KV_RE = re.compile(rf"([a-z_-]+)=(?:<({_ADDR})>|([^,]*))(?:, |$)")
# client= lists (smtpd.c): the client, then SASL and XFORWARD attributes, none an address.
_CLIENT_KV_RE = re.compile(r"([a-z_-]+)=([^,]*)")
# qmgr (opened.c): `from=<s>, size=N, nrcpt=N (queue active)`; and qmgr's expiry line.
_QUEUED_RE = re.compile(rf"from=<({_ADDR})>, size=(\d+), nrcpt=(\d+)(?: \((.*)\))?$")
_EXPIRED_RE = re.compile(rf"from=<({_ADDR})>, status=([^,]*)(?:, (.*))?$")
# Postfix brackets every logged address (log_adhoc.c, opened.c); some rewritten logs and
# other MTAs' look-alikes do not (`from=user@host, size=...`, `to=user@host, relay=...`).
_QUEUED_BARE_RE = re.compile(r"from=([^<>,\s]*), size=(\d+), nrcpt=(\d+)(?: \((.*)\))?$")

# The remote reply is free text; only a Postfix-shaped ID at its very end is taken (amavis
# wraps Postfix's reply as `from MTA(smtp:[...]:10025): 250 2.0.0 Ok: queued as ID`; BDAT
# adds `N bytes`).
_QUEUED_AS_RE = re.compile(
    r"queued as ([0-9A-F]{6,}|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{10,})\)?$"
)
_FORWARDED_AS_RE = re.compile(r"^forwarded as ([0-9A-Za-z]{6,})")
# pickup separates with spaces, not commas; a quoted sender may itself contain spaces.
_PICKUP_RE = re.compile(r"uid=(\d+) from=<(.*)>(?: orig_id=(\S+))?$")
# The trailer Postfix appends to an smtpd, postscreen or cleanup action (log_whatsup() in
# smtpd_check.c, cleanup_act_log(), cleanup_milter.c): `;` then each field it knows, in this
# order. An SMTP client chooses the sender, the recipients and the HELO name, and the reply
# before the trailer may quote them, so the trailer is found by its grammar, never by
# searching for `; from=`: an address is a dot-string or a quoted string, then @domain (smtpd
# has checked the domain); HELO is one word smtpd neutered of ` <>()\";@`; no value but a
# quoted local part holds a space or a `;`, so every alternative is bounded by the next `;`,
# space or quote and a line is read in linear time.
_T_ADDR = rf'(?:{_QUOTED}|[^\s"\\<>()\[\],;:@]+)?(?:@[^\s"\\<>(),;@]+)?'
_T_FIELDS = (
    rf"(?: from=<({_T_ADDR})>)?(?: to=<({_T_ADDR})>)?(?: proto=([^\s\"<>;]+))?"
    r'(?: helo=<([^\s"<>;]*)>)?'
)
_T_SASL = (
    r'(?: sasl_method=([^\s"<>;]*))?(?: sasl_username=([^"<>;]*?))?'
    r'(?: sasl_sender=([^\s"<>;]*))?'
)
# smtpd and cleanup's milter-reject: the trailer ends the line (3.10+ smtpd adds sasl_*).
_TRAILER_RE = re.compile(";" + _T_FIELDS + r"\Z")
_TRAILER_SASL_RE = re.compile(";" + _T_FIELDS + _T_SASL + r"\Z")
# cleanup's header/body checks: the action's optional text follows as `: text`.
_TRAILER_TEXT_RE = re.compile(";" + _T_FIELDS + r"(?=: |\Z)")
# postscreen: commas between the fields, all four always there, HELO not neutered.
_TRAILER_PSC_RE = re.compile(
    rf"; from=<({_T_ADDR})>, to=<({_T_ADDR})>, proto=([^\s\"<>,;]+), helo=<(\S*)>\Z"
)
_SASL_KEYS = ("sasl_method", "sasl_username", "sasl_sender")
# A Postfix message is at most 2000 bytes (msg_syslog.c); a longer body was not written by
# Postfix, and its trailer is not looked for.
_MAX_TRAILER_BODY = 4096
_NOTIFICATION_RE = re.compile(r"^((?:sender|postmaster) [a-z -]*notification): (\S+)$")

# Actions that refuse the message (Kind.REJECT); other action words are Kind.ACTION. smtpd
# logs a before-queue filter's (smtpd_proxy_filter) refusal as `proxy-reject: STAGE: REPLY;`
# with the same trailer (smtpd.c, smtpd_whatsup()).
_PROXY_REJECT = "proxy-reject"
_REJECT_ACTIONS = frozenset(a.value for a in RejectAction) | {_PROXY_REJECT}
_ACTIONS = _REJECT_ACTIONS | frozenset(
    {
        "hold", "discard", "filter", "redirect", "bcc", "delay", "warn", "warning", "info",
        "hangup", "prepend", "replace", "strip", "pass", "milter-hold", "milter-discard",
        "reject_warning", "defer", "defer_if_permit", "defer_if_reject",
    }
)
_CLEANUP_CONTEXTS = ("header ", "body ", "content ", "mime-error ")
_POSTSUPER_ACTIONS = frozenset(
    {"removed", "requeued", "placed on hold", "released from hold", "expired"}
)
# Programs of a Postfix installation; lets a custom syslog_name (`mail/smtpd`) through.
_PROGRAMS = frozenset(
    {
        "smtpd", "smtp", "lmtp", "qmgr", "oqmgr", "cleanup", "pickup", "local", "virtual",
        "pipe", "error", "discard", "bounce", "postscreen", "dnsblog", "tlsproxy", "anvil",
        "scache", "master", "postsuper", "postqueue", "postdrop", "sendmail", "postlogd",
        "verify", "trivial-rewrite", "tlsmgr", "showq", "flush", "proxymap", "spawn",
        "postfix", "postmap", "postalias", "postmulti", "qmqpd", "postconf",
        "postcat", "postlog", "postfix-script", "postfix-tls-script", "postfix-wrapper",
        "post-install",
    }
)

# Content filters whose verdict lines name the Postfix queue ID they judged, by syslog tag.
_FILTER_TAGS = {"amavis": "amavis", "amavisd": "amavis", "amavisd-new": "amavis"}
_AMAVIS = "amavis"
# amavisd-new's main log line (log_templ): `(PID-N) Passed CLEAN {RelayedInbound}, [ip]:port
# [ip] <from> -> <to>,<to>, Queue-ID: ID, Message-ID: <..>, mail_id: .., Hits: 0.05, size:
# 2888, queued_as: ID2, 2342 ms`. The verdict is amavis's word (`Blocked INFECTED (name)`).
_AMAVIS_RE = re.compile(
    r"\((?:[0-9]+-[0-9]+(?:-[0-9]+)*|!+)\) ((?:Passed|Blocked|Not-Delivered) [A-Z][A-Z0-9-]*)"
    r"(?: \(([^()]{0,200})\))? \{([^{}]{0,200})\}"
)
# The addresses and the Message-ID before and after `Queue-ID:` are the sender's choice: a
# field is taken only when the line holds it once (a forged second one makes it ambiguous).
_AMAVIS_QID_RE = re.compile(rf", Queue-ID: ({_QID}), ")
_AMAVIS_QUEUED_AS_RE = re.compile(rf", queued_as: ({_QID})(?:/[0-9A-Za-z/]+)?, ")
_AMAVIS_HITS_RE = re.compile(r", Hits: (-|-?[0-9]{1,6}(?:\.[0-9]{1,6})?), ")
_AMAVIS_MSGID_RE = re.compile(r", Message-ID: (<[^<>\s]{1,500}>), ")
# Where any of the four may start: one scan of the line finds them all (the reference
# reading).
_AMAVIS_FIELD_RE = re.compile(r", (Queue-ID|queued_as|Hits|Message-ID): ")
_AMAVIS_FIELDS = {
    "Queue-ID": _AMAVIS_QID_RE, "queued_as": _AMAVIS_QUEUED_AS_RE, "Hits": _AMAVIS_HITS_RE,
    "Message-ID": _AMAVIS_MSGID_RE,
}
# The four fields in one scan (the fast reading): the same texts as the four above, the
# `, ` that ends each left to the next field (a lookahead). No value holds a `, `, so no
# field starts inside another's value and the scan misses none.
_AMAVIS_ANY_RE = re.compile(
    rf", (?:Queue-ID: ({_QID})|queued_as: ({_QID})(?:/[0-9A-Za-z/]+)?"
    r"|Hits: (-|-?[0-9]{1,6}(?:\.[0-9]{1,6})?)|Message-ID: (<[^<>\s]{1,500}>))(?=, )"
)
_AMAVIS_KEYS = ("", "Queue-ID", "queued_as", "Hits", "Message-ID")  # by group number

_MAX_LINE = 100_000
#: What ``bytes.strip()`` strips (ASCII whitespace; ``str.strip()`` strips more).
_BYTES_SPACE = " \t\n\r\x0b\x0c"
_CACHE_MAX = 4096
#: Numbers the reads: every LineParser is one (see Record.read).
_READS = itertools.count(1)


def _strip_angle(value: str) -> str:
    if value[:1] == "<" and value[-1:] == ">":
        return value[1:-1]
    return value


# One Record per kept line: the frozen __init__ would cost as much as the envelope regex.
_make_record = fast_constructor(Record)

# (kind, fields, text, child): what a body says, before it becomes a Record.
_Body = tuple[Kind, Mapping[str, str], str, "str | None"]


class _Core:
    """The per-source parsing state: stamp and tag caches (lines repeat both).

    ``read`` goes into every Record (see :attr:`Record.read`). ``extra`` is set after a line
    that stands for more (rsyslog's ``message repeated N times``): that many more copies.
    """

    __slots__ = ("_iso_first", "_read", "_slack", "_stamps", "_tags", "_tz", "_years", "extra")

    def __init__(self, ctx: TimeContext, read: int = 0) -> None:
        self._read = read
        self.extra = 0
        self._tz = ctx.tz
        self._stamps: dict[str, datetime] = {}
        self._tags: dict[str, tuple[str, str, str] | None] = {}
        self._iso_first = False  # the envelope that matched last is tried first
        self._slack = ctx.reference + timedelta(days=1)
        self._years: dict[tuple[int, int], int] = {}  # (month, day) -> year (_bsd_time)

    def _bsd_time(self, stamp: str) -> datetime:
        month = _MONTHS.get(stamp[:3], 0)
        day, hms = stamp[4:].split()
        d = int(day)
        h, mi, s = int(hms[0:2]), int(hms[3:5]), int(hms[6:8])
        # A new second every few lines: the year of a date is worked out once (at most 366
        # dates a source), when it is the same for every time of that date.
        year = self._years.get((month, d))
        if year is not None:
            return datetime(year, month, d, h, mi, s, tzinfo=self._tz)
        dt = self._bsd_time_reference(month, d, h, mi, s, stamp)
        self._remember_year(month, d, dt.year)
        return dt

    def _remember_year(self, month: int, d: int, year: int) -> None:
        """Keep ``year`` for the date when every time of it gets that year: all of the date
        in ``year`` is not after the reference, and the same date a year later (if that is
        the reference's year) starts after it."""
        tz, slack = self._tz, self._slack
        try:
            if datetime(year, month, d, 23, 59, 59, tzinfo=tz) > slack:
                return
            if year != slack.year and (
                year + 1 != slack.year or datetime(year + 1, month, d, tzinfo=tz) <= slack
            ):
                return
        except ValueError:  # Feb 29 a year later: the loop decides each time
            return
        self._years[month, d] = year

    def _bsd_time_reference(self, month: int, d: int, h: int, mi: int, s: int,
                            stamp: str) -> datetime:
        """The year of a BSD stamp worked out for this one time (tests compare the
        remembered years with it)."""
        year = self._slack.year
        dt = None
        # The latest year in which the stamp is not after the reference; Feb 29 exists only in
        # leap years, so keep stepping back until the date is valid.
        for _ in range(9):
            try:
                dt = datetime(year, month, d, h, mi, s, tzinfo=self._tz)
            except ValueError:
                dt = None
            if dt is not None and dt <= self._slack:
                break
            year -= 1
        if dt is None:
            raise ValueError(stamp)
        return dt

    def _split_tag(self, tag: str) -> tuple[str, str, str] | None:
        """:func:`_split_tag`, remembered (a log has a handful of tags)."""
        names = _split_tag(tag)
        if len(self._tags) < _CACHE_MAX:
            self._tags[tag] = names
        return names

    def parse(self, line: str, keep_all: bool = True) -> Record | None:
        """One line -> Record; None if not understood; ``_SKIPPED`` (with ``keep_all`` off)
        for a Postfix line that carries nothing for tracing: no queue ID, not NOQUEUE."""
        # The hot loop of a search (once per log line): kept in one piece on purpose, since a
        # helper call per line costs more than the envelope regex saves; only rare shapes
        # (rsyslog's `message repeated`) and the bodies go to helpers.
        iso = self._iso_first
        m = (_ISO_MATCH if iso else _BSD_MATCH)(line)
        if m is None:
            iso = not iso
            m = (_ISO_MATCH if iso else _BSD_MATCH)(line)
            if m is None:
                return None
            self._iso_first = iso  # the envelope that matched last is tried first
        end = m.end()
        # Decided before any datetime or Record is built: about half of a busy MX's lines
        # (postscreen, TLS, connect/disconnect) end here. The queue ID is the last group of
        # either envelope, so `lastindex` says whether it matched, without all the groups.
        if not keep_all and m.lastindex != (8 if iso else 7):
            tag = m.group(5 if iso else 4)
            names = self._tags.get(tag, _UNSEEN)
            if names is _UNSEEN:
                names = self._split_tag(tag)
            if names is None:
                return None
            c = line[end : end + 6]
            if c != "messag" and c != "proxy-" and names[2] != _AMAVIS:
                return _SKIPPED
        if iso:
            secs, frac, off, host, tag, pid, severity, queue_id = m.groups()
            stamp = secs + off
        else:
            stamp, frac, host, tag, pid, severity, queue_id = m.groups()
        names = self._tags.get(tag, _UNSEEN)
        if names is _UNSEEN:
            names = self._split_tag(tag)
        if names is None:
            return None
        dt = self._stamps.get(stamp)
        if dt is None:
            try:
                dt = datetime.fromisoformat(stamp) if iso else self._bsd_time(stamp)
            except ValueError:  # the shape of a stamp but not a date (`Feb 31`, month 13)
                return None
            if len(self._stamps) >= _CACHE_MAX:
                self._stamps.clear()
            self._stamps[stamp] = dt
        if frac:
            dt = dt.replace(microsecond=int(frac[:6].ljust(6, "0")))
        instance, service, program = names
        rest = line[end:]
        if queue_id is None and severity is None and rest[:9] == "message r":
            severity, queue_id, rest, self.extra = _unwrap_repeated(rest)
        if severity is not None:
            body: _Body = (_DIAGNOSTIC, _EMPTY, rest, None)
        elif queue_id is None:
            if program == _AMAVIS:
                verdict = _parse_amavis(rest)
                if verdict is None:
                    return None
                queue_id, body = verdict
            else:
                body = _parse_plain(rest)
        elif queue_id == "NOQUEUE":
            queue_id = None
            body = _parse_action(rest, program) or (_OTHER, _EMPTY, rest, None)
        else:
            body = _parse_queue_line(rest, program)
        kind, fields, text, child = body
        return _make_record(
            dt, host, instance, service, program, int(pid) if pid else None, queue_id, kind,
            fields, text, child, severity or "", line, self._read,
        )


_UNSEEN: tuple[str, str, str] = ("", "", "")
#: Returned by ``_Core.parse`` for a recognised line that is not worth a Record.
_SKIPPED = Record(
    datetime(1970, 1, 1, tzinfo=UTC), "", "", "", "", None, None, _OTHER, _EMPTY
)


def _unwrap_repeated(rest: str) -> tuple[str | None, str | None, str, int]:
    """rsyslog's ``message repeated N times: [ ID: text]`` -> (severity, queue ID, text, N).

    rsyslog logs the first of identical messages, then this one for the N it held back: it
    stands for N logged lines, and every one counts.
    """
    r = _REPEATED_RE.match(rest)
    if r is None:
        return None, None, rest, 0
    inner = r.group(2)
    h = _HEAD_RE.match(inner)
    assert h is not None  # every part of _HEAD is optional
    severity, queue_id = h.groups()
    return severity, queue_id, inner[h.end() :], max(0, int(r.group(1)) - 1)


def _split_tag(tag: str) -> tuple[str, str, str] | None:
    """``postfix/relay/smtp`` -> (``postfix``, ``relay``, ``smtp``); None if not Postfix.

    An empty syslog_name (Zimbra's scripts log as ``/postfix-script``) leaves the instance
    empty: taken only for one Postfix program after the ``/``, so ``/usr/sbin/cron`` stays out.
    """
    instance, sep, rest = tag.partition("/")
    if not sep or not rest:
        program = _FILTER_TAGS.get(tag)
        return ("", "", program) if program is not None else None
    if not instance:
        return ("", "", rest) if rest in _PROGRAMS else None
    service, _, program = rest.rpartition("/")
    if not program:
        return None
    if not instance.startswith("postfix") and program not in _PROGRAMS:
        return None
    return instance, service, program


# ---------------------------------------------------------------------- bodies


def _parse_plain(rest: str) -> _Body:
    """A line without a queue ID (and not NOQUEUE)."""
    c = rest[:1]
    if c == "c" and rest.startswith("connect from "):
        return _CONNECT, {"client": rest[13:]}, "", None
    if c == "d" and rest.startswith("disconnect from "):
        client, _, counts = rest[16:].partition(" ")
        return _DISCONNECT, {"client": client}, counts, None
    if c == "p" and rest.startswith("proxy-"):
        if rest.startswith("proxy-reject: "):
            return _parse_action(rest) or (_OTHER, _EMPTY, rest, None)
        # before-queue filter: `proxy-accept: END-OF-MESSAGE: 250 2.0.0 Ok: queued as ID; ...`
        m = _QUEUED_AS_RE.search(rest.partition(";")[0])
        return _OTHER, _EMPTY, rest, m.group(1) if m else None
    return _OTHER, _EMPTY, rest, None


def _amavis_fields(text: str) -> dict[str, str | None]:
    """Each of amavis's ``, Queue-ID: X, ``-style fields in ``text``: its value, or None when
    the line holds two different values for it (a forged address can hold the text).

    One scan finds what :func:`_amavis_fields_reference` finds with five, at half the cost.
    """
    found: dict[str, str | None] = {}
    for m in _AMAVIS_ANY_RE.finditer(text):
        i = m.lastindex or 0  # the one group of the four that took part
        key = _AMAVIS_KEYS[i]
        value = m.group(i)
        if key not in found:
            found[key] = value
        elif found[key] != value:
            found[key] = None
    return found


def _amavis_fields_reference(text: str) -> dict[str, str | None]:
    """:func:`_amavis_fields`, read the straightforward way: one scan for every key's start,
    in line order. Kept as the reference the fast reading is tested against."""
    found: dict[str, str | None] = {}
    for m in _AMAVIS_FIELD_RE.finditer(text):
        key = m.group(1)
        full = _AMAVIS_FIELDS[key].match(text, m.start())
        if full is None:
            continue
        value = full.group(1)
        if key not in found:
            found[key] = value
        elif found[key] != value:
            found[key] = None
    return found


def _parse_amavis(rest: str) -> tuple[str, _Body] | None:
    """An amavis verdict line -> (the queue ID it judged, body); None for any other line."""
    m = _AMAVIS_RE.match(rest)
    if m is None or len(rest) > _MAX_TRAILER_BODY:
        return None
    found = _amavis_fields(rest)
    queue_id = found.get("Queue-ID")
    if queue_id is None:
        return None  # older templates omit Queue-ID: nothing to join the verdict to
    verdict, reason, tags = m.groups()
    fields = {"filter": _AMAVIS, "verdict": verdict, "tags": tags}
    if reason:
        fields["reason"] = reason
    hits = found.get("Hits")
    if hits is not None:
        fields["hits"] = hits
    msgid = found.get("Message-ID")
    if msgid is not None:
        fields["message-id"] = msgid
    child = found.get("queued_as")
    return queue_id, (_VERDICT, fields, rest, child)


def _parse_queue_line(rest: str, program: str) -> _Body:
    """What follows ``ID: ``."""
    c = rest[:1]
    if c == "t" and rest.startswith("to="):
        return _parse_delivery(rest)
    if c == "f" and rest.startswith("from="):
        return _parse_qmgr_from(rest)
    if c == "c" and rest.startswith("client="):
        return _CLIENT, dict(_CLIENT_KV_RE.findall(rest)), "", None
    if c == "m" and rest.startswith("message-id="):
        return _MESSAGE_ID, {"message-id": rest[11:]}, "", None
    if c == "r":
        if rest.startswith("removed"):
            if program == "postsuper":
                return _POSTSUPER, {"action": "removed"}, "", None
            # cleanup 3.10+: `removed (canceled)` / `removed (discarded)`
            reason = rest[9:-1] if rest.startswith("removed (") else ""
            return _REMOVED, ({"reason": reason} if reason else _EMPTY), "", None
        if rest.startswith("resent-message-id="):
            return _RESENT_MESSAGE_ID, {"resent-message-id": rest[18:]}, "", None
    if c == "u" and rest.startswith("uid="):
        m = _PICKUP_RE.match(rest)
        if m is not None:
            fields = {"uid": m.group(1), "from": m.group(2)}
            if m.group(3):
                fields["orig_id"] = m.group(3)
            return _PICKUP, fields, "", None
    if program == "postsuper" and rest in _POSTSUPER_ACTIONS:
        return _POSTSUPER, {"action": rest}, "", None
    if "notification: " in rest:
        m = _NOTIFICATION_RE.match(rest)
        if m is not None:
            return _NOTIFICATION, {"notification": m.group(1)}, m.group(1), m.group(2)
    return _parse_action(rest, program) or (_OTHER, _EMPTY, rest, None)


def _parse_delivery(rest: str) -> _Body:
    # Without a quote anywhere no address can hold a `>`: the simpler regex says the same.
    d = (_DELIVERY_RE if '"' in rest else _DELIVERY_PLAIN_RE).match(rest)
    if d is not None:
        to, orig_to, relay, conn_use, delay, delays, tls, dsn, status, text = d.groups()
        fields = {
            "to": to, "relay": relay, "delay": delay, "delays": delays, "dsn": dsn,
            "status": status,
        }
        if orig_to is not None:
            fields["orig_to"] = orig_to
        if conn_use is not None:
            fields["conn_use"] = conn_use
        if tls is not None:
            fields["tls"] = tls
        if text is None:
            text = ""
    else:
        found = _delivery_fields(rest)
        if found is None:
            return _OTHER, _EMPTY, rest, None
        fields, text = found
    child = None
    k = text.rfind("queued as ")
    if k >= 0:
        m = _QUEUED_AS_RE.match(text, k)
        if m is not None:
            child = m.group(1)
    elif text[:13] == "forwarded as ":
        m = _FORWARDED_AS_RE.match(text)
        if m is not None:
            child = m.group(1)
    return _DELIVERY, fields, text, child


def _key_values(rest: str, pos: int = 0, stop: str = "") -> tuple[dict[str, str], int] | None:
    """``key=value, key=<address>, ...`` read in order from ``pos``, up to the key ``stop``
    (its position is returned) or the end; None when the text is not such a list.

    Read from the left, one pair after the other: an address may itself hold `, status=`.
    """
    fields: dict[str, str] = {}
    n = len(rest)
    while pos < n:
        m = _KV_RE.match(rest, pos)
        if m is None:
            return None
        key = m.group(1)
        if key == stop:
            return fields, pos
        value = m.group(2)
        fields[key] = value if value is not None else m.group(3)
        pos = m.end()
    return (fields, pos) if not stop else None


def _delivery_fields(rest: str) -> tuple[dict[str, str], str] | None:
    """A delivery line of a shape _DELIVERY_RE does not know (fields are added over time)."""
    found = _key_values(rest, 0, "status")
    if found is None:
        return None
    fields, i = found
    # The status text is free (remote replies) and may hold `)`, `=` and `,`: it runs from
    # `status=WORD (` to the last `)`.
    status, _, text = rest[i + 7 :].partition(" ")
    if text[:1] == "(":
        j = text.rfind(")")
        text = text[1:j] if j > 0 else text[1:]
    fields["status"] = status
    return fields, text


def _parse_qmgr_from(rest: str) -> _Body:
    m = _QUEUED_RE.match(rest)
    if m is None and rest[5:6] != "<":
        m = _QUEUED_BARE_RE.match(rest)
    if m is not None:
        # `from=<s>, size=N, nrcpt=N (queue active)`
        sender, size, nrcpt, text = m.groups()
        return _QUEUED, {"from": sender, "size": size, "nrcpt": nrcpt}, text or "", None
    m = _EXPIRED_RE.match(rest)
    if m is not None:
        # `from=<s>, status=expired, returned to sender` (also `force-expired`).
        sender, status, text = m.groups()
        return _EXPIRED, {"from": sender, "status": status}, text or "", None
    return _OTHER, _EMPTY, rest, None


def _trailer(body: str, start: int, rx: re.Pattern[str]) -> re.Match[str] | None:
    """The trailer Postfix appended to ``body``: of the places where ``rx`` matches at a
    `;`, the one whose fields end last, and of those the rightmost.

    A `;` inside an address, the reply or the content (all chosen by the client) may start a
    look-alike. None ends its fields after the real trailer's: it would need an unescaped
    quote there, and Postfix escapes every quote inside a quoted local part. A look-alike in
    the reply ends at the end of the line only by taking in the real trailer, whose spaces
    and quotes no value but a quoted string holds, so a look-alike that reaches that far sits
    to the left of the real one; the rightmost wins.
    """
    best: re.Match[str] | None = None
    i = body.find(";", start)
    while i >= 0:
        m = rx.match(body, i)
        if m is not None and (best is None or m.end() >= best.end()):
            best = m
        i = body.find(";", i + 1)
    return best


def _trailer_fields(fields: dict[str, str], m: re.Match[str]) -> None:
    g = m.groups()
    if g[0] is not None:
        fields["from"] = g[0]
    if g[1] is not None:
        fields["to"] = g[1]
    if g[2] is not None:
        fields["proto"] = g[2]
    if g[3] is not None:
        fields["helo"] = g[3]
    if len(g) > 4:
        for key, value in zip(_SASL_KEYS, g[4:]):
            if value is not None:
                fields[key] = value


def _parse_action(rest: str, program: str = "") -> _Body | None:
    """smtpd/postscreen/cleanup ``ACTION: STAGE from CLIENT: REPLY; from=<> to=<> ...``."""
    i = rest.find(": ")
    if i < 0:
        return None
    action = rest[:i]
    if action not in _ACTIONS:
        return None
    body = rest[i + 2 :]
    fields: dict[str, str] = {"action": action}
    kind = _REJECT if action in _REJECT_ACTIONS else _ACTION
    cleanup = body.startswith(_CLEANUP_CONTEXTS)
    m: re.Match[str] | None = None
    if len(body) <= _MAX_TRAILER_BODY:
        if program == "postscreen":
            # postscreen's reply is its own text (`Service unavailable; client [...] blocked
            # using ...`): the trailer starts at the first `; from=<`.
            k = body.find("; from=<")
            m = _TRAILER_PSC_RE.match(body, k) if k >= 0 else None
        else:
            if cleanup:
                rx = _TRAILER_TEXT_RE
            else:
                rx = _TRAILER_SASL_RE if " sasl_" in body else _TRAILER_RE
            m = _trailer(body, 0, rx)
    if m is not None:
        head = body[: m.start()]
        _trailer_fields(fields, m)
        after = body[m.end() + 2 :]  # cleanup: `: text`
    else:
        head, after = body, ""
    if cleanup:
        # cleanup: `header Subject: x from client; from=<a> to=<b> proto=P helo=<h>: text`
        stage, _, what = head.partition(" ")
        what, _, client = what.rpartition(" from ")
        fields["stage"] = stage
        fields["what"] = what
        if client:
            fields["client"] = client
        text = after
    elif action == _PROXY_REJECT:
        # before-queue filter: `END-OF-MESSAGE: 554 5.7.1 text` (no client; the reply may be
        # empty: `END-OF-MESSAGE: ; from=<...`)
        stage, _, text = head.partition(":")
        fields["stage"] = stage
        text = text.strip()
    else:
        # smtpd/postscreen: `RCPT from name[ip]: 550 5.1.1 <x>: text`
        j = head.find(" from ")
        if j < 0:
            return None
        fields["stage"] = head[:j]
        client, _, text = head[j + 6 :].partition(": ")
        fields["client"] = client
    return kind, fields, text, None


# ---------------------------------------------------------------------- public API


_BSD_STAMP_RE = re.compile(r"([A-Z][a-z][a-z] [ \d]?\d \d\d:\d\d:\d\d)(?:\.(\d{1,9}))? ")
_ISO_STAMP_RE = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:?\d\d) ")


def line_time(line: str, ctx: TimeContext) -> datetime | None:
    """The time a syslog line was logged, whatever program wrote it (a log's first line is
    often not Postfix's); None when it starts with no stamp collector knows."""
    core = _Core(ctx)
    try:
        if (m := _ISO_STAMP_RE.match(line)) is not None:
            dt = datetime.fromisoformat(m.group(1) + m.group(3))
        elif (m := _BSD_STAMP_RE.match(line)) is not None:
            dt = core._bsd_time(m.group(1))
        else:
            return None
    except ValueError:
        return None
    frac = m.group(2)
    return dt.replace(microsecond=int(frac[:6].ljust(6, "0"))) if frac else dt


def parse_line(line: str, ctx: TimeContext) -> Record | None:
    """Parse one log line (without its newline); None if it is not a Postfix line."""
    return _Core(ctx).parse(line)


class LineParser:
    """Parses the lines of one source, counting what it cannot use; never raises.

    Unless ``keep_all`` is set, recognised Postfix lines that carry nothing for tracing
    (neither a queue ID nor NOQUEUE: connect/disconnect, TLS, postscreen, ID-less warnings)
    are counted as parsed but yield no Record; that halves the work on a busy MX.
    :func:`parse_line` always returns the full Record.

    Counting: every line counts in ``lines`` and in one of ``blank``, ``parsed``,
    ``unknown`` (clean text, not understood) or ``bad`` (over-long, binary junk, damaged and
    not understood). A damaged line that still parses after repair (undecodable bytes
    replaced by U+FFFD, NULs dropped) counts in both ``parsed`` and ``bad``.
    """

    def __init__(self, ctx: TimeContext, samples: int = 5, *, keep_all: bool = False) -> None:
        self._core = _Core(ctx, next(_READS))
        self._keep_all = keep_all
        self._samples_max = samples
        self._samples: list[str] = []
        self._lines = 0
        self._parsed = 0
        self._unknown = 0
        self._bad = 0
        self._blank = 0

    def feed(self, raw: bytes) -> Record | None:
        """Parse one raw line (its line ending, if any, is stripped).

        A line that stands for several (rsyslog's ``message repeated N times``) gives its
        first Record only: :meth:`feed_all` gives all of them.
        """
        records = self.feed_all(raw)
        return records[0] if records else None

    def feed_all(self, raw: bytes) -> list[Record]:
        """Parse one raw line: its Records (none, one, or the N of a repeated message)."""
        record = self._feed_one(raw)
        if record is None:
            self._core.extra = 0
            return []
        return self._with_copies(record)

    def _with_copies(self, record: Record) -> list[Record]:
        """``record`` and the copies a repeated message stands for (see ``_Core.extra``)."""
        n, self._core.extra = self._core.extra, 0
        return [record] * (n + 1)

    def _feed_one(self, raw: bytes) -> Record | None:
        self._lines += 1
        raw = raw.rstrip(b"\r\n")
        if len(raw) <= _MAX_LINE and b"\x00" not in raw:
            try:
                line = raw.decode()
            except UnicodeDecodeError:
                pass
            else:
                record = self._core.parse(line, self._keep_all)
                if record is not None:
                    self._parsed += 1
                    return None if record is _SKIPPED else record
        return self._feed_slow(raw)

    def _feed_slow(self, raw: bytes) -> Record | None:
        """The rare lines: blank, over-long, NULs, undecodable bytes, not understood."""
        if not raw.strip():
            self._blank += 1
            return None
        if len(raw) > _MAX_LINE:
            # Postfix caps a message at 2000 bytes: this is not one of its lines.
            self._bad += 1
            return None
        repaired = False
        if b"\x00" in raw:
            # A crash can leave a run of NULs before the next line; Postfix never writes NUL.
            raw = raw.replace(b"\x00", b"")
            repaired = True
        try:
            line = raw.decode()
        except UnicodeDecodeError:
            line = raw.decode("utf-8", "replace")
            repaired = True
        if repaired:
            self._bad += 1
            record = self._core.parse(line, self._keep_all)
            if record is None:
                self._core.extra = 0
                return None
            self._parsed += 1
            return None if record is _SKIPPED else record
        if not line.isprintable() and "\t" not in line:
            self._bad += 1  # binary junk
            return None
        self._unknown += 1
        if len(self._samples) < self._samples_max:
            self._samples.append(line[:200])
        return None

    def _count_unparsed(self, line: str) -> None:
        """:meth:`_feed_slow` for a clean ASCII line (no NUL, not over-long) that was not
        understood, without encoding it again: blank, binary junk or unknown (another
        program's line: on a mailbox host every dovecot line ends here)."""
        if not line.strip(_BYTES_SPACE):
            self._blank += 1
        elif not line.isprintable() and "\t" not in line:
            self._bad += 1
        else:
            self._unknown += 1
            if len(self._samples) < self._samples_max:
                self._samples.append(line[:200])

    def parse(self, lines: Iterable[bytes]) -> Iterator[Record]:
        """Yield a Record for every understood line of ``lines``."""
        # feed() inlined: this loop runs once per log line.
        state = self._core
        core = state.parse
        keep_all = self._keep_all
        slow = self._feed_slow
        n = parsed = 0
        try:
            for raw in lines:
                n += 1
                raw = raw.rstrip(b"\r\n")
                if len(raw) <= _MAX_LINE and b"\x00" not in raw:
                    try:
                        line = raw.decode()
                    except UnicodeDecodeError:
                        pass
                    else:
                        record = core(line, keep_all)
                        if record is not None:
                            parsed += 1
                            if record is not _SKIPPED:
                                yield record
                                if state.extra:
                                    yield from self._with_copies(record)[1:]
                            continue
                record = slow(raw)
                if record is not None:
                    yield record
                    if state.extra:
                        yield from self._with_copies(record)[1:]
        finally:
            self._lines += n
            self._parsed += parsed

    def parse_blocks(self, blocks: Iterable[bytes]) -> Iterator[Record]:
        """Like :meth:`parse` for a byte stream cut anywhere (file or channel reads).

        Decoding and splitting a whole block at once is cheaper than per line; a block with
        damage (NUL, bad UTF-8, an over-long line) falls back to the per-line path.
        """
        carry = b""
        skipping = False  # inside an over-long line, already counted as bad
        for block in blocks:
            if skipping:
                end = block.find(b"\n")
                if end < 0:
                    continue
                block = block[end + 1 :]
                skipping = False
            elif carry:
                block = carry + block
            cut = block.rfind(b"\n") + 1
            if cut == 0:
                carry = block
                if len(carry) > _MAX_LINE:
                    self._lines += 1
                    self._bad += 1
                    carry = b""
                    skipping = True
                continue
            carry = block[cut:]
            yield from self._parse_block(block[:cut])
        if carry:
            yield from self._parse_block(carry)  # the last line had no newline

    def _parse_block(self, data: bytes) -> Iterator[Record]:
        if b"\x00" in data:
            yield from self.parse(data.splitlines(keepends=True))
            return
        try:
            text = data.decode()
        except UnicodeDecodeError:
            yield from self.parse(data.splitlines(keepends=True))
            return
        if "\r" in text:
            text = text.replace("\r\n", "\n")
        lines = text.split("\n")  # not splitlines(): it also cuts at \f, \x1c, U+2028...
        if lines[-1] == "":
            lines.pop()
        if max(map(len, lines), default=0) > _MAX_LINE:
            yield from self.parse(data.splitlines(keepends=True))
            return
        state = self._core
        core = state.parse
        keep_all = self._keep_all
        parsed = 0
        try:
            for line in lines:
                record = core(line, keep_all)
                if record is not None:
                    parsed += 1
                    if record is not _SKIPPED:
                        yield record
                        if state.extra:
                            yield from self._with_copies(record)[1:]
                    continue
                if line.isascii():  # its bytes are its characters: no repair, not over-long
                    self._count_unparsed(line)
                    continue
                record = self._feed_slow(line.encode())
                if record is not None:
                    yield record
                    if state.extra:
                        yield from self._with_copies(record)[1:]
        finally:
            self._lines += len(lines)
            self._parsed += parsed

    @property
    def stats(self) -> ParseStats:
        return ParseStats(
            lines=self._lines,
            parsed=self._parsed,
            unknown=self._unknown,
            bad=self._bad,
            blank=self._blank,
            unknown_samples=tuple(self._samples),
        )

"""Logged text made safe to show a person, and JSON that a terminal or viewer cannot reorder.

Log content is chosen by others: any SMTP client picks its HELO, MAIL FROM, RCPT TO and
Message-ID, and a compromised server picks its file names, replies, stderr and SSH banner.
Written raw, an ESC/CSI/OSC sequence retitles or clears the terminal (or hides a line), ``\\r``
and backspace overwrite what was printed, and a bidi control (U+202E, which real Postfix logs
raw for an SMTPUTF8 sender) shows an address reversed. So every text meant for a person goes
through :func:`printable` once, before it is clipped or fitted (widths are measured on what is
shown, and a cut can never leave half a raw sequence).

The escaped form is that of a Python string literal: ``\\t``, ``\\n``, ``\\r``, ``\\xNN``,
``\\uNNNN``, ``\\UNNNNNNNN``. A backslash in the text is doubled (``\\\\``) exactly where it
would otherwise read as the start of such an escape (before ``\\``, ``t``, ``n``, ``r``, ``x``
and two hex digits, ``u`` and four, ``U`` and eight, before any character outside printable
ASCII, and at the end of the text, so that joining two shown texts cannot make one); every
other backslash is shown as it is, so that ``"a\\"b"@example.org`` reads as logged. The escaped
form is unambiguous: it decodes back to the logged text.

JSON, NDJSON and CSV carry the data exactly. The JSON writers escape, as ``\\uXXXX``, the
characters a terminal or a viewer acts on inside a string (bidi controls, line and paragraph
separators, DEL, C1 controls), which leaves every parsed value unchanged. CSV is data for a
program, not text for a terminal: :class:`CsvWriter` only makes sure that a field holding a
``\\r`` is quoted, so that no logged value can end a row early (or forge one).
"""

from __future__ import annotations

import csv
import itertools
import json
import re
from collections.abc import Iterable, Sequence
from typing import IO, Any

# A backslash that would start an escape, or any character outside printable ASCII (whether
# it is escaped is decided per character: most non-ASCII text is printable and stays).
_CANDIDATE = re.compile(
    r"\\(?=[\\tnr]|x[0-9A-Fa-f]{2}|u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8}|[^ -~]|\Z)|[^ -~]"
)


class Escaped(str):
    """Text :func:`printable` already made safe, perhaps cut since: shown as it is.

    For a producer that must cut a shown text to a length (a table cell, a sample) before a
    sink that escapes everything (a table renderer, ``err``): wrapping the cut text keeps its
    backslashes from being doubled twice. Never wrap text that did not come from printable().
    """

    __slots__ = ()


def _shown(match: re.Match[str]) -> str:
    c = match.group()
    if c == "\\":
        return "\\\\"
    if c.isprintable():
        return c
    # repr() writes exactly the Python literal escapes (\t, \xNN, \uNNNN, \UNNNNNNNN).
    return repr(c)[1:-1]


def printable(text: str) -> str:
    """``text`` with every character a terminal could act on shown escaped (see the module).

    Escaped are the characters ``str.isprintable`` refuses other than the space: C0 controls
    (ESC, ``\\r``, backspace, ``\\t``, ``\\n``), DEL, C1 controls (U+0080-U+009F, CSI for some
    terminals), bidi and other format characters (U+061C, U+200B-U+200F, U+202A-U+202E,
    U+2066-U+2069, U+FEFF, ...), line and paragraph separators, other spaces than the ASCII
    one (they pass for it), private-use, unassigned and surrogate code points.

    Runs on every cell of a big table: clean text (the rule) is two C-speed scans.
    """
    if (text.isprintable() and "\\" not in text) or type(text) is Escaped:
        return text
    return _CANDIDATE.sub(_shown, text)


# --------------------------------------------------------------------------- JSON

# What json.dumps(ensure_ascii=False) leaves raw and a terminal or a viewer acts on: DEL and
# C1 controls, the bidi controls, and the line and paragraph separators (C0 is always escaped).
_JSON_RAW = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def _json_safe(text: str) -> str:
    """JSON text with the characters of ``_JSON_RAW`` as ``\\uXXXX``.

    They only ever occur inside string literals (JSON's syntax is ASCII), never after an
    unfinished backslash (json writes a raw character for them), so the escape is exact.
    """
    if text.isascii():  # O(1) for a str: the rule
        return text
    return _JSON_RAW.sub(_json_escape, text)


_SCALARS = (str, int, float, type(None))


def _flat_records(value: Any) -> bool:
    """A list of non-empty dicts whose values are all strings, numbers, booleans or None."""
    return isinstance(value, list) and all(
        type(d) is dict and d and all(isinstance(v, _SCALARS) for v in d.values())
        for d in value
    )


def _indented_records(records: list[dict[str, Any]], level: int) -> str:
    """What ``json.dumps(records, indent=2, ensure_ascii=False)`` writes for
    :func:`_flat_records` at nesting ``level``, byte for byte, made by the C encoder.

    ``indent`` makes json take its pure-Python encoder (about twice as slow); the C one writes
    the same tokens with a separator of our choosing. Each newline of the result is
    structural (JSON writes a newline inside a string as ``\\n``), and since every value is
    a scalar, ``}`` then the separator then ``{"`` only ever stands between two records,
    and ``{"`` (a quote in a string is ``\\"``) only ever opens one: the indentation of
    the outer list is put in with plain replacements.
    """
    if not records:
        return "[]"
    outer, inner = "\n" + "  " * (level + 1), "\n" + "  " * (level + 2)
    sep = "," + inner
    text = json.JSONEncoder(ensure_ascii=False, separators=(sep, ": ")).encode(records)
    text = text.replace("}" + sep + '{"', outer + "}," + outer + "{" + inner + '"')
    return "[" + outer + "{" + inner + text[2:-2] + outer + "}" + "\n" + "  " * level + "]"


def _indented(payload: Any) -> str:
    """``json.dumps(payload, indent=2, ensure_ascii=False)``, its lists of flat records
    (the rows of a search: most of the output) made at C speed."""
    if not (type(payload) is dict and payload and any(map(_flat_records, payload.values()))):
        return json.dumps(payload, ensure_ascii=False, indent=2)
    parts = []
    for key, value in payload.items():
        if _flat_records(value):
            text = _indented_records(value, 1)
        else:
            text = json.dumps(value, ensure_ascii=False, indent=2).replace("\n", "\n  ")
        parts.append("  " + json.dumps(key if isinstance(key, str) else str(key),
                                       ensure_ascii=False) + ": " + text)
    return "{\n" + ",\n".join(parts) + "\n}"


def write_json(payload: Any, out: IO[str]) -> None:
    """``payload`` as indented JSON and a newline: the bytes ``json.dump(indent=2)`` writes.

    The one JSON writer of the CLI (with :func:`write_ndjson`): non-ASCII text stays UTF-8,
    except the characters of ``_JSON_RAW``. A dict holding lists of flat records (a search's
    rows) is made by the C encoder (see :func:`_indented_records`).
    """
    if type(payload) is dict and any(map(_flat_records, payload.values())):
        out.write(_json_safe(_indented(payload)))
        out.write("\n")
        return
    chunks = json.JSONEncoder(ensure_ascii=False, indent=2).iterencode(payload)
    # In batches: the encoder yields a piece per token, and a write (and a check) per token
    # would double the time json.dump takes.
    while batch := list(itertools.islice(chunks, 4096)):
        out.write(_json_safe("".join(batch)))
    out.write("\n")


def write_ndjson(items: Iterable[Any], out: IO[str]) -> None:
    """One JSON object per line (NDJSON), escaped like :func:`write_json`."""
    for item in items:
        out.write(_json_safe(json.dumps(item, ensure_ascii=False)))
        out.write("\n")


# --------------------------------------------------------------------------- CSV


class CsvWriter:
    """``csv.writer`` with ``\\n`` line ends, and a row with a ``\\r`` in a field quoted whole.

    ``csv`` quotes a field holding the delimiter, a quote or a character of the line
    terminator: with ``\\n`` ends, a raw ``\\r`` (a hostile RCPT TO) would stay bare and a
    reader would end the row there, the rest of the field read as a row of its own. Rows
    without one (the rule) are written as ``csv`` writes them.
    """

    def __init__(self, out: IO[str]) -> None:
        self._minimal = csv.writer(out, lineterminator="\n")
        self._quoted = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)

    def writerow(self, row: Sequence[Any]) -> None:
        for value in row:  # a loop, not any(): this runs once per row of a big search
            if isinstance(value, str) and "\r" in value:
                self._quoted.writerow(row)
                return
        self._minimal.writerow(row)

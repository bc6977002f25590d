"""A reply's template: the reply with what varies between messages replaced by placeholders.

``connect to mx.example.net[192.0.2.7]:25: Connection refused`` and the same refusal of
another MX are one problem: both become ``connect to HOST[IP]:N: Connection refused``. What a
reply says about the problem stays: the SMTP reply code (``550``), the enhanced status code
(``5.1.1``) and every word.

Replies are a remote server's (or an SMTP client's) text. Every pattern here is bounded per
position (no nested repetition, no unbounded scan that can fail late), so a template costs time
linear in the text, and the text is cut to :data:`MAX_REPLY` characters first.
"""

from __future__ import annotations

import re

#: Characters of a reply a template is made of (Postfix's own lines are far shorter).
MAX_REPLY = 600

_HEX4 = "[0-9A-Fa-f]{1,4}"
_PATTERN = re.compile(
    r"(?P<addr><[^<>\s]{0,256}@[^<>\s]{0,256}>|[^\s<>@\"'()\[\],;:]{1,64}@[A-Za-z0-9.-]{1,255})"
    r"|(?P<peer>[A-Za-z0-9][A-Za-z0-9.-]{0,254}\[[^\]\s]{1,64}\])"
    r"|(?P<brk>\[[^\]\s]{1,64}\])"
    r"|(?P<named>\b(?:name|domain|host)=)[^\s:;,()]{1,255}"
    r"|(?P<when>\b\d{4}-\d\d-\d\d[T ]\d\d:\d\d(?::\d\d(?:\.\d{1,9})?)?(?:Z|[+-]\d\d:?\d\d)?)"
    r"|(?P<ip4>\b\d{1,3}(?:\.\d{1,3}){3}\b)"
    # IPv6: the full form, or any form with "::" (a clock time has neither)
    rf"|(?P<ip6>(?<![\w:])(?:(?:{_HEX4}:){{7}}{_HEX4}"
    rf"|(?:{_HEX4}(?::{_HEX4}){{0,6}})?::{_HEX4}(?::{_HEX4}){{0,6}}"
    rf"|{_HEX4}(?::{_HEX4}){{0,6}}::)(?![\w:]))"
    r"|(?P<dsn>\b[245]\.\d{1,3}\.\d{1,3}\b)"
    r"|(?P<tok>\b[A-Za-z0-9]{8,64}\b)"
    r"|(?P<num>\b\d+\b)"
)
# An SMTP reply code: three digits, 2/4/5 first, followed by a space or a dash and an enhanced
# status code, or where a reply starts (the text's start, after "said: ").
_REPLY_CODE = re.compile(r"[245]\d\d")
_CODE_AFTER = re.compile(r"[ -][245]\.\d")


def reply_template(text: str) -> str:
    """The shape of a reply: see the module docstring. Whitespace runs become one space."""
    text = " ".join(text[:MAX_REPLY].split())

    def place(m: re.Match[str]) -> str:
        kind = m.lastgroup
        word = m.group()
        if kind == "addr":
            return "<ADDR>" if word.startswith("<") else "ADDR"
        if kind == "peer":
            return "HOST[IP]"
        if kind == "brk":
            return "[IP]"
        if kind == "named":
            return m.group("named") + "HOST"
        if kind == "dsn":
            return word
        if kind in ("ip4", "ip6"):
            return "IP"
        if kind == "when":
            return "TIME"
        if kind == "tok":
            # a queue ID, a session or a hash: letters and digits both; a word stays
            has_digit = any(c.isdigit() for c in word)
            return "ID" if has_digit and not word.isdigit() else (word if not has_digit else "N")
        # a number: an SMTP reply code stays (it says what kind of refusal it is)
        start, end = m.span()
        if len(word) == 3 and _REPLY_CODE.fullmatch(word) and (
            _CODE_AFTER.match(text, end) or start == 0 or text.endswith("said: ", 0, start)
        ):
            return word
        return "N"

    return _PATTERN.sub(place, text)[:MAX_REPLY]

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

_PATTERN = re.compile(
    r"(?P<addr><[^<>\s]{0,256}@[^<>\s]{0,256}>|[^\s<>@\"'()\[\],;:]{1,64}@[A-Za-z0-9.-]{1,255})"
    r"|(?P<peer>[A-Za-z0-9][A-Za-z0-9.-]{0,254}\[[^\]\s]{1,64}\])"
    r"|(?P<brk>\[[^\]\s]{1,64}\])"
    r"|(?P<named>\b(?:name|domain|host)=)[^\s:;,()]{1,255}"
    r"|(?P<dsn>\b[245]\.\d{1,3}\.\d{1,3}\b)"
    r"|(?P<ip4>\b\d{1,3}(?:\.\d{1,3}){3}\b)"
    r"|(?P<tok>\b[A-Za-z0-9]{8,64}\b)"
    r"|(?P<num>\b\d+\b)"
)
# An SMTP reply code: three digits, 2/4/5 first, before a space, a dash or an enhanced code.
_REPLY_CODE = re.compile(r"[245]\d\d")


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
        if kind == "ip4":
            return "IP"
        if kind == "tok":
            # a queue ID, a session or a hash: letters and digits both; a word stays
            has_digit = any(c.isdigit() for c in word)
            return "ID" if has_digit and not word.isdigit() else (word if not has_digit else "N")
        # a number: an SMTP reply code stays (it says what kind of refusal it is)
        end = m.end()
        if len(word) == 3 and _REPLY_CODE.fullmatch(word) and (
            end == len(text) or text[end] in " -"
        ):
            return word
        return "N"

    return _PATTERN.sub(place, text)[:MAX_REPLY]

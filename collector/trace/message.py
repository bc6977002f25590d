"""Where to start a trace, read from the message in hand: a forwarded mail or a bounce.

Pure: bytes in, clues out. Postfix's ``Received:`` header names the host and the queue ID the
message had there (``by mx1.example.com (Postfix) with ESMTP id 4F2A81C0; Tue, 15 Jan 2026
10:00:00 +0000``); a bounce's delivery-status part names the reporting host, the queue ID
and the arrival time (``Reporting-MTA``, ``X-Postfix-Queue-ID``, ``Arrival-Date``) and each
recipient (``Final-Recipient``, ``Original-Recipient``). The message is the sender's (or an
attacker's) text: it is read with size limits, and nothing in it is run or trusted beyond
naming where to look.
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass
from datetime import datetime
from email.message import Message
from email.utils import parsedate_to_datetime

MAX_BYTES = 10 * 1024 * 1024  # a message larger than this is read only this far
MAX_HEADER = 8192  # characters of one header considered
MAX_PARTS = 64

# "by HOST (Postfix) with PROTO id QUEUEID": Postfix's own Received line (smtpd, cleanup's
# pickup path writes "by HOST (Postfix, from userid N) id QUEUEID"). No nested quantifiers.
_RECEIVED = re.compile(
    r"\bby\s+([A-Za-z0-9._-]{1,253})\s+\(Postfix[^)]{0,80}\)(?:\s+with\s+[A-Za-z0-9]{1,32})?"
    r"\s+id\s+([0-9A-Za-z]{5,20})\b"
)
_QUEUE_ID = re.compile(r"[0-9A-Za-z]{5,20}")


@dataclass(frozen=True, slots=True)
class Clue:
    """One place the message was: a host as the header names it, its queue ID there."""

    host: str
    queue_id: str
    time: datetime | None
    source: str  # "received" or "dsn"


@dataclass(frozen=True, slots=True)
class MessageClues:
    clues: tuple[Clue, ...]  # oldest first: the first is where the message entered
    message_id: str | None
    recipients: tuple[str, ...]  # a bounce's Final-/Original-Recipient addresses


def read_message(data: bytes) -> MessageClues:
    """The clues of a message (a bounce: of its report and of the message it returns)."""
    msg = email.message_from_bytes(data[:MAX_BYTES], policy=email.policy.compat32)
    clues: list[Clue] = []
    recipients: list[str] = []
    message_id = _header(msg, "Message-ID")
    parts = list(msg.walk())[:MAX_PARTS]
    for part in parts:
        kind = part.get_content_type()
        if kind == "message/delivery-status":
            dsn, rcpts = _delivery_status(part)
            clues.extend(dsn)
            recipients.extend(rcpts)
        elif kind in ("text/rfc822-headers", "message/rfc822"):
            returned = _returned(part)
            if returned is not None:
                clues[:0] = _received(returned)  # the original's hops come first
                message_id = _header(returned, "Message-ID") or message_id
    if not any(c.source == "dsn" for c in clues):
        clues[:0] = _received(msg)
    return MessageClues(tuple(clues), message_id, tuple(dict.fromkeys(recipients)))


def _header(msg: Message, name: str) -> str | None:
    value = msg.get(name)
    return None if value is None else " ".join(str(value)[:MAX_HEADER].split()) or None


def _received(msg: Message) -> list[Clue]:
    """Postfix hops of the Received headers, oldest first (headers are added on top)."""
    out: list[Clue] = []
    for value in reversed((msg.get_all("Received") or [])[:200]):
        text = " ".join(str(value)[:MAX_HEADER].split())
        m = _RECEIVED.search(text)
        if m is None:
            continue
        when = _date(text.rpartition(";")[2]) if ";" in text else None
        out.append(Clue(m.group(1).rstrip(".").lower(), m.group(2), when, "received"))
    return out


def _returned(part: Message) -> Message | None:
    """The returned message (or its headers) inside a bounce."""
    if part.get_content_type() == "message/rfc822":
        inner = part.get_payload()
        if isinstance(inner, list) and inner and isinstance(inner[0], Message):
            return inner[0]
        return None
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return None
    return email.message_from_bytes(payload[:MAX_BYTES], policy=email.policy.compat32)


def _delivery_status(part: Message) -> tuple[list[Clue], list[str]]:
    """RFC 3464 fields: the per-message group, then one group per recipient."""
    groups = part.get_payload()
    blocks: list[Message] = [g for g in groups if isinstance(g, Message)] if isinstance(
        groups, list
    ) else []
    if not blocks:
        return [], []
    head = blocks[0]
    mta = _typed(_header(head, "Reporting-MTA"))
    qid = _header(head, "X-Postfix-Queue-ID")
    clues = []
    if mta and qid and _QUEUE_ID.fullmatch(qid):
        when = _date(_header(head, "Arrival-Date") or "")
        clues.append(Clue(mta.rstrip(".").lower(), qid, when, "dsn"))
    rcpts = [
        addr
        for block in blocks[1:]
        for name in ("Original-Recipient", "Final-Recipient")
        if (addr := _typed(_header(block, name)))
    ]
    return clues, rcpts


def _typed(value: str | None) -> str | None:
    """``dns; mx1.example.com`` / ``rfc822; bob@example.com`` -> the value."""
    if not value:
        return None
    _, sep, rest = value.partition(";")
    return (rest if sep else value).strip() or None


def _date(text: str) -> datetime | None:
    try:
        when = parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return when if when.tzinfo is not None else None

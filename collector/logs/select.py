"""The rows a query selects from assembled groups, and per-host tallies (pure)."""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Iterable, Sequence

from collector.logs.fields import dsn_of, parse_endpoint
from collector.models import (
    HostLog,
    MessageCount,
    Query,
    QueueGroup,
    Reject,
    Row,
    Status,
    fast_constructor,
)

# One Row per recipient of every selected group (tens of thousands for a heavy recipient):
# built without the frozen __init__ (see fast_constructor).
_new_row = fast_constructor(Row)

# --------------------------------------------------------------------------- case folding
# Addresses, host names and message-ids compare case-insensitively, and the remote filter
# (grep -F -i under LC_ALL=C, which folds ASCII letters only) must find every line that the
# comparison here accepts. So the fold maps ASCII to ASCII and everything else to non-ASCII:
# Unicode case folding (``Ö`` = ``ö``, ``Σ`` = ``ς`` = ``σ``, ``ẞ`` = ``ß``) except where it
# would produce ASCII: ``ß`` is not ``ss``, the Kelvin sign is not ``k``, ``ﬁ`` is not
# ``fi``, ``İ`` is not ``i``. No Unicode normalization either (Postfix compares code points
# too): a composed and a decomposed ``ö`` are different addresses.


def _plain(text: str) -> bool:
    return not any(c.isascii() for c in text)


@functools.lru_cache(maxsize=4096)
def _fold_char(c: str) -> str:
    if c.isascii():
        return c.lower()
    folded = c.casefold()
    if _plain(folded):
        return folded
    lowered = c.lower()
    return lowered if _plain(lowered) else c


def fold(text: str) -> str:
    """``text`` as it compares case-insensitively (see above)."""
    if text.isascii():
        return text.lower()
    return "".join(map(_fold_char, text))


# Characters without case that no other character folds into: a line that compares equal
# holds exactly them. (tests/test_hostile_logs checks the claim against the whole of Unicode.)
_CASELESS = frozenset({"Lo", "Nd", "Nl", "No", "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po",
                       "Sm", "Sc", "Sk", "So", "Zs"})  # fmt: skip


@functools.lru_cache(maxsize=4096)
def _exact(c: str) -> bool:
    """Whether ``c`` stands for itself in any text that folds equal (ASCII: up to case)."""
    if c.isascii():
        return True
    return (
        unicodedata.category(c) in _CASELESS
        and c.casefold() == c
        and c.lower() == c
        and c.upper() == c
    )


def fixed_part(needle: str) -> str:
    """The longest piece of ``needle`` that every line holding a text that folds equal to
    it holds too, up to the case of ASCII letters: ``needle`` itself when it is ASCII.

    Folding keeps ASCII runs in place (ASCII folds to ASCII, anything else to non-ASCII),
    and a caseless character can only come from itself, so a run of those is in the line;
    ``grep -F -i`` under ``LC_ALL=C`` then finds it.
    """
    if needle.isascii():
        return needle
    runs: list[str] = []
    run: list[str] = []
    for c in needle:
        if _exact(c):
            run.append(c)
        else:
            runs.append("".join(run))
            run = []
    runs.append("".join(run))
    return max(runs, key=lambda r: len(r.encode()))


def normalize_message_id(value: str) -> str:
    """Message-IDs compare without their angle brackets."""
    value = value.strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1]
    return value


def _addr_in(address: str | None, wanted: Sequence[str]) -> bool:
    if address is None:
        return False
    folded = fold(address)
    return any(folded == fold(w) for w in wanted)


def _client_matches(client: str | None, wanted: Sequence[str]) -> bool:
    """A client selector matches the name or the IP of ``name[ip]``, or all of it."""
    if not client:
        return False
    peer = parse_endpoint(client)
    folded = {fold(peer.name), fold(peer.address or ""), fold(client)}
    return any(fold(w) in folded for w in wanted)


def _term_matches(group: QueueGroup, terms: Sequence[str]) -> bool:
    for term in terms:
        folded = fold(normalize_message_id(term))
        if group.queue_id == term:
            return True
        if group.message_id and fold(normalize_message_id(group.message_id)) == folded:
            return True
        if group.sender is not None and fold(group.sender) == folded:
            return True
        for r in group.recipients:
            if fold(r.address) == folded or fold(r.orig_address or "") == folded:
                return True
        for rej in group.rejects:
            if fold(rej.recipient or "") == folded:
                return True
    return False


def group_matches(group: QueueGroup, query: Query) -> bool:
    """Group-level selectors (sender, message-id, queue ID, client, trace terms)."""
    if query.terms and not _term_matches(group, query.terms):
        return False
    if query.senders and not _addr_in(group.sender, query.senders):
        return False
    if query.message_ids:
        mid = normalize_message_id(group.message_id or "")
        if mid not in {normalize_message_id(m) for m in query.message_ids}:
            return False
    if query.queue_ids and group.queue_id not in query.queue_ids:
        return False
    if query.clients and not (
        _client_matches(group.client, query.clients)
        or _client_matches(group.orig_client, query.clients)
    ):
        return False
    if query.subjects and not subject_matches(group.subject, query.subjects):
        return False
    return True


def subject_matches(subject: str | None, wanted: Sequence[str]) -> bool:
    """``--subject``: a fixed string anywhere in the logged Subject, compared as addresses
    are (:func:`fold`), so the server-side ``grep -F -i`` finds every line it accepts."""
    if subject is None:
        return False
    folded = fold(subject)
    return any(fold(w) in folded for w in wanted)


def rows_of_group(group: QueueGroup) -> list[Row]:
    """One row per recipient (last status), plus one per reject logged with the queue ID."""
    # Once per selected group: the group's own fields are read once, and each Row is built
    # positionally (Row's field order) by the fast constructor.
    host, queue_id, sender = group.host, group.queue_id, group.sender
    message_id, client = group.message_id, group.client
    rows = [
        _new_row(last.time, host, queue_id, sender, rcpt.address, rcpt.orig_address,
                 last.status, last.dsn, last.relay, last.delay, message_id, last.response,
                 client)
        for rcpt in group.recipients
        for last in (rcpt.attempts[-1],)
    ]
    for rej in group.rejects:
        rows.append(_reject_row(rej, group))
    if not rows:
        rows.append(
            _new_row(group.first_time, host, queue_id, sender, None, None,
                     _status_without_recipients(group), None, None, None, message_id, "",
                     client)
        )
    return rows


def _status_without_recipients(group: QueueGroup) -> Status:
    """The one row of a group that logged no recipient and no reject says what became of it."""
    if group.discarded:
        return Status.DISCARDED
    return Status.EXPIRED if group.expired else Status.UNKNOWN


def _reject_row(rej: Reject, group: QueueGroup | None) -> Row:
    return _new_row(
        time=rej.time,
        host=rej.host,
        queue_id=rej.queue_id,
        sender=rej.sender if rej.sender is not None else (group.sender if group else None),
        recipient=rej.recipient,
        orig_recipient=None,
        status=Status.REJECTED if rej.action.endswith("reject") else rej.action,
        dsn=dsn_of(rej.response),
        relay=None,
        delay=None,
        message_id=group.message_id if group else None,
        response=rej.response,
        client=rej.client if rej.client is not None else (group.client if group else None),
    )


def row_matches(row: Row, query: Query) -> bool:
    """Row-level selectors (recipient, status, time window)."""
    if query.recipients and not (
        _addr_in(row.recipient, query.recipients) or _addr_in(row.orig_recipient, query.recipients)
    ):
        return False
    if query.statuses and row.status not in query.statuses:
        return False
    if query.since is not None and row.time < query.since:
        return False
    if query.until is not None and row.time > query.until:
        return False
    return True


def reject_matches(rej: Reject, query: Query) -> bool:
    """A NOQUEUE reject has no group: check what it carries."""
    if query.message_ids or query.queue_ids or query.subjects:
        return False  # no queue file, no Subject logged
    if query.terms and not any(
        fold(t) in (fold(rej.sender or ""), fold(rej.recipient or ""))
        for t in query.terms
    ):
        return False
    if query.senders and not _addr_in(rej.sender, query.senders):
        return False
    if query.clients and not _client_matches(rej.client, query.clients):
        return False
    return True


def select_rows(logs: Iterable[HostLog], query: Query) -> list[Row]:
    """Every row of every host that the query selects, in time order, then inventory order."""
    return merge_rows([(log.host, host_rows(log, query)) for log in logs])


def host_rows(log: HostLog, query: Query) -> list[Row]:
    """The rows of one host's log that the query selects (in no particular order)."""
    rows: list[Row] = []
    for group in log.groups:
        if not group_matches(group, query):
            continue
        rows.extend(r for r in rows_of_group(group) if row_matches(r, query))
    for rej in log.rejects:
        if reject_matches(rej, query):
            row = _reject_row(rej, None)
            if row_matches(row, query):
                rows.append(row)
    return rows


def merge_rows(per_host: Iterable[tuple[str, Sequence[Row]]]) -> list[Row]:
    """Each host's rows (its name and :func:`host_rows`, hosts in inventory order) as one
    answer: in time order, then inventory order (:func:`select_rows` of the same logs)."""
    rows: list[Row] = []
    rank: dict[str, int] = {}
    for host, part in per_host:
        rank.setdefault(host, len(rank))
        rows.extend(part)
    # Same-second lines of different hosts (syslog stamps have no fraction) keep inventory
    # order, which is usually the order mail flows in.
    rows.sort(key=lambda r: (r.time, rank.get(r.host, 0), r.queue_id or "", r.recipient or ""))
    return rows


def group_selected(group: QueueGroup, query: Query) -> bool:
    """A group is selected when it matches and at least one of its rows does."""
    return group_matches(group, query) and any(row_matches(r, query) for r in rows_of_group(group))


def message_count(group: QueueGroup) -> MessageCount:
    """What ``summary`` counts of one group (see :class:`~collector.models.MessageCount`)."""
    return MessageCount(group.host, group.first_time, group.last_time,
                        tuple(r.status for r in group.recipients), len(group.rejects),
                        group.discarded)


def tally(group: QueueGroup, counts: dict[str, int], query: Query) -> None:
    """Add one group to per-host counts: messages, recipients by final status, rejects."""
    tally_count(message_count(group), counts, query)


def tally_count(count: MessageCount, counts: dict[str, int], query: Query) -> None:
    """Add one message's count to per-host counts (the lines ``summary`` never keeps)."""
    if query.since is not None and count.last_time < query.since:
        return
    if query.until is not None and count.first_time > query.until:
        return
    counts["messages"] = counts.get("messages", 0) + 1
    for status in count.statuses:
        counts[status] = counts.get(status, 0) + 1
    if count.rejects:
        counts[Status.REJECTED] = counts.get(Status.REJECTED, 0) + count.rejects
    if count.discarded:
        counts[Status.DISCARDED] = counts.get(Status.DISCARDED, 0) + 1


def reject_selected(rej: Reject, query: Query) -> bool:
    """A NOQUEUE reject is selected when it matches and so does its row."""
    return reject_matches(rej, query) and row_matches(_reject_row(rej, None), query)

"""Records of one host -> QueueGroups, one per life of a queue ID.

Pure and streaming: :class:`Assembler` takes records in log order and hands back each group
as soon as Postfix says it is finished (qmgr/postsuper ``removed``, a cleanup reject or
``removed (discarded|canceled)``), so memory stays flat on big logs. Log order is not causal
order, so nothing here relies on adjacency: groups are keyed by (instance, queue ID), and a
child's lines may come before its parent's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from collector.models import (
    Attempt,
    Child,
    ChildVia,
    HostLog,
    Kind,
    MessageCount,
    ParseStats,
    QueueGroup,
    Recipient,
    Record,
    Reject,
    RejectAction,
    Status,
    Verdict,
    fast_constructor,
)

__all__ = ["CLOSE_GRACE", "Assembler", "Counter", "assemble", "client_ip", "distinct_lines"]

# Enum attribute lookup goes through the metaclass (about 0.2 us in 3.11); the hot paths
# compare against these module constants instead.
_ACTION = Kind.ACTION
_CLIENT = Kind.CLIENT
_DELIVERY = Kind.DELIVERY
_EXPIRED = Kind.EXPIRED
_PICKUP = Kind.PICKUP
_POSTSUPER = Kind.POSTSUPER
_REJECT = Kind.REJECT
_REMOVED = Kind.REMOVED
_VERDICT = Kind.VERDICT
_DEFERRED = Status.DEFERRED
_EXPIRED_STATUS = Status.EXPIRED
_QUEUED_AS = ChildVia.QUEUED_AS
_FORWARDED_AS = ChildVia.FORWARDED_AS
_NOTIFICATION_VIA = ChildVia.NOTIFICATION

# Postfix's status word -> its Status; a word outside the vocabulary (SOFTBOUNCE) stays a str.
_STATUS_OF: Mapping[str, Status] = {s.value: s for s in Status}
_REJECT_ACTION_OF: Mapping[str, RejectAction] = {a.value: a for a in RejectAction}

# One Attempt per delivery line and one group per queue file: built without the frozen
# __init__ (see fast_constructor).
_new_attempt = fast_constructor(Attempt)
_new_child = fast_constructor(Child)
_new_recipient = fast_constructor(Recipient)
_new_group = fast_constructor(QueueGroup)
_new_reject = fast_constructor(Reject)
_new_verdict = fast_constructor(Verdict)
_new_count = fast_constructor(MessageCount)
# A milter's action on a message is its verdict on it (cleanup logs it with the queue ID).
_MILTER_ACTIONS = frozenset({"milter-reject", "milter-discard", "milter-hold",
                             "milter-header-reject"})


def client_ip(client: str) -> str | None:
    """``name[addr]`` or ``name[addr]:port`` -> ``addr`` (see :func:`collector.logs.fields.parse_endpoint`)."""
    # parse_endpoint's reading of the address alone: once per group, without its tuple.
    i = client.rfind("[")
    if i < 0:
        return None
    j = client.find("]", i + 1)
    return client[i + 1 : j] if j >= 0 else None


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _reject(host: str, record: Record) -> Reject:
    f = record.fields
    return _new_reject(
        time=record.time,
        host=host,
        program=record.program,
        queue_id=record.queue_id,
        stage=f.get("stage", ""),
        client=f.get("client"),
        sender=f.get("from"),
        recipient=f.get("to"),
        response=record.text,
        # parse makes a Kind.REJECT only of these words; anything else is still a refusal
        action=_REJECT_ACTION_OF.get(f.get("action", ""), RejectAction.REJECT),
        line=record.line,
    )


class _Life:
    """One life of a queue ID while it is open (mutable, private to the assemblers)."""

    __slots__ = ("instance", "queue_id", "started")

    def __init__(self, instance: str, queue_id: str) -> None:
        self.instance = instance
        self.queue_id = queue_id
        self.started: Record | None = None  # the client=/uid= line that opened this life

    # No bound method is kept on the instance: that would make every life a reference cycle,
    # freed only by the cyclic collector (hundreds of MB of garbage between its runs).
    def add(self, record: Record) -> None:
        """Take the next record of this life (log order)."""
        raise NotImplementedError

    def held(self) -> int:
        """What this life holds in memory, in records (or recipients) kept."""
        raise NotImplementedError


class _Open(_Life):
    """A group being built: its records, folded by :func:`_build` when it is finished."""

    __slots__ = ("records",)

    def __init__(self, instance: str, queue_id: str) -> None:
        super().__init__(instance, queue_id)
        self.records: list[Record] = []

    def add(self, record: Record) -> None:
        self.records.append(record)

    def held(self) -> int:
        return len(self.records)


class _Fold:
    """What the lines of one life have said so far, while :func:`_build` folds them.

    One per group built: the immutable starting values are class attributes (an instance
    writes only what its lines say), so making one costs five stores, not 23.
    """

    client: str | None = None
    client_ip: str | None = None
    origin = ""
    sender: str | None = None
    size: int | None = None
    nrcpt: int | None = None
    uid: int | None = None
    message_id: str | None = None
    resent: str | None = None
    orig_queue_id: str | None = None
    orig_client: str | None = None
    requeued_from: str | None = None
    removed = expired = held = discarded = False
    expired_by: Record | None = None
    subject: str | None = None

    def __init__(self, host: str) -> None:
        self.host = host
        # (orig_to, to) -> attempts, in first-seen order: the same address can be reached
        # through several aliases, and each one gets its own delivery lines.
        self.rcpts: dict[tuple[str | None, str], list[Attempt]] = {}
        self.children: dict[tuple[str, ChildVia], Child] = {}
        self.rejects: list[Reject] = []
        self.verdicts: list[Verdict] = []


def _note_header(a: _Fold, r: Record) -> None:
    """cleanup's header_checks line (``info: header Subject: text from ...``) and milter
    actions: the group's Subject and verdicts."""
    f = r.fields
    action = f.get("action", "")
    if action in _MILTER_ACTIONS:
        a.verdicts.append(_new_verdict(r.time, "milter", action, r.text, None, None))
    if a.subject is None and f.get("stage") == "header":
        what = f.get("what", "")
        if what[:8].lower() == "subject:":
            a.subject = what[8:].strip()


def _fold_verdict(a: _Fold, r: Record) -> None:
    f = r.fields
    detail = "{" + f.get("tags", "") + "}"
    if "reason" in f:
        detail = f"({f['reason']}) {detail}"
    if "hits" in f:
        detail += f", Hits: {f['hits']}"
    a.verdicts.append(
        _new_verdict(r.time, f.get("filter", ""), f.get("verdict", ""), detail, r.child,
                     f.get("message-id"))
    )


# One function per Kind that says something about the group: each folds one record in.


def _fold_delivery(a: _Fold, r: Record) -> None:
    # Once per delivery line (the most common line of a relay): _float inlined.
    f = r.fields
    to = f.get("to", "")
    relay = f.get("relay")
    word = f.get("status", "")
    delay: str | float | None = f.get("delay")
    if delay is not None:
        try:
            delay = float(delay)
        except ValueError:
            delay = None
    child = r.child
    attempt = _new_attempt(
        r.time, r.program, _STATUS_OF.get(word, word), relay, delay, f.get("delays"),
        f.get("dsn"), r.text, child,
    )
    key = (f.get("orig_to"), to)
    attempts = a.rcpts.get(key)
    if attempts is None:
        a.rcpts[key] = [attempt]
    else:
        attempts.append(attempt)
    if child is not None:
        via = _FORWARDED_AS if r.text.startswith("forwarded as ") else _QUEUED_AS
        if (child, via) not in a.children:
            a.children[child, via] = _new_child(child, via, to, relay, r.time, "")


def _fold_queued(a: _Fold, r: Record) -> None:
    f = r.fields
    a.sender = f.get("from", a.sender)
    a.size = _int(f.get("size"))
    a.nrcpt = _int(f.get("nrcpt"))


def _fold_client(a: _Fold, r: Record) -> None:
    f = r.fields
    a.client = client = f.get("client")
    if client is not None:
        a.client_ip = client_ip(client)
    a.origin = "smtp"
    a.orig_queue_id = f.get("orig_queue_id", a.orig_queue_id)
    a.orig_client = f.get("orig_client", a.orig_client)


def _fold_message_id(a: _Fold, r: Record) -> None:
    a.message_id = r.fields.get("message-id")


def _fold_resent_message_id(a: _Fold, r: Record) -> None:
    a.resent = r.fields.get("resent-message-id")


def _fold_removed(a: _Fold, r: Record) -> None:
    a.removed = True
    if r.fields.get("reason") == "discarded":
        a.discarded = True


def _fold_pickup(a: _Fold, r: Record) -> None:
    f = r.fields
    a.origin = "pickup"
    if a.sender is None:
        a.sender = f.get("from")
    a.uid = _int(f.get("uid"))
    a.requeued_from = f.get("orig_id", a.requeued_from)


def _fold_notification(a: _Fold, r: Record) -> None:
    if r.child is not None and (r.child, _NOTIFICATION_VIA) not in a.children:
        a.children[r.child, _NOTIFICATION_VIA] = _new_child(
            r.child, _NOTIFICATION_VIA, None, None, r.time, r.text
        )


def _fold_expired(a: _Fold, r: Record) -> None:
    a.expired = True
    a.expired_by = r
    if a.sender is None:
        a.sender = r.fields.get("from")


def _fold_reject(a: _Fold, r: Record) -> None:
    a.rejects.append(_reject(a.host, r))
    if r.program == "cleanup":
        if a.sender is None:
            a.sender = r.fields.get("from")  # no qmgr line follows a cleanup reject
        _note_header(a, r)


def _fold_action(a: _Fold, r: Record) -> None:
    if r.program == "cleanup":
        _note_header(a, r)
    action = r.fields.get("action", "")
    if action in ("hold", "milter-hold"):
        a.held = True
    elif action in ("discard", "milter-discard"):
        a.discarded = True


def _fold_postsuper(a: _Fold, r: Record) -> None:
    action = r.fields.get("action", "")
    if action == "removed":
        a.removed = True
    elif action == "placed on hold":
        a.held = True
    elif action == "released from hold":
        a.held = False
    elif action == "expired":
        a.expired = True


_FOLD: Mapping[Kind, Callable[[_Fold, Record], None]] = {
    Kind.DELIVERY: _fold_delivery,
    Kind.QUEUED: _fold_queued,
    Kind.CLIENT: _fold_client,
    Kind.MESSAGE_ID: _fold_message_id,
    Kind.RESENT_MESSAGE_ID: _fold_resent_message_id,
    Kind.REMOVED: _fold_removed,
    Kind.PICKUP: _fold_pickup,
    Kind.NOTIFICATION: _fold_notification,
    Kind.EXPIRED: _fold_expired,
    Kind.REJECT: _fold_reject,
    Kind.ACTION: _fold_action,
    Kind.POSTSUPER: _fold_postsuper,
    Kind.VERDICT: _fold_verdict,
}


def _expire_deferred(rcpts: Iterable[list[Attempt]], expired_by: Record) -> None:
    """Postfix logs no per-recipient line when a message expires (3.7: the last one says
    ``deferred``), only qmgr's ``status=expired, returned to sender``: recipients still
    deferred then get an ``expired`` attempt from that line."""
    for attempts in rcpts:
        last = attempts[-1]
        if last.status == _DEFERRED and last.time <= expired_by.time:
            attempts.append(
                _new_attempt(
                    expired_by.time, expired_by.program, _EXPIRED_STATUS, None, None, None,
                    last.dsn, expired_by.text, None,
                )
            )


def _build(host: str, g: _Open) -> QueueGroup:
    """Fold the records of one life into a QueueGroup."""
    records = g.records
    first = last = records[0].time
    saw_cleanup = False
    a = _Fold(host)
    fold = _FOLD.get
    for r in records:  # once per record of the host
        t = r.time
        if t < first:
            first = t
        elif t > last:
            last = t
        if r.program == "cleanup":
            saw_cleanup = True
        step = fold(r.kind)
        if step is not None:
            step(a, r)
    if a.expired_by is not None:
        _expire_deferred(a.rcpts.values(), a.expired_by)
    origin = a.origin
    if not origin and (saw_cleanup or a.sender == ""):
        # Created on this host without smtpd or pickup: a bounce/delay notice, a local(8)
        # forward, or another internal resubmission (cleanup logs the message-id at creation).
        origin = "local"
    # Positional, in QueueGroup's field order: 25 keywords would cost 1 us more per group.
    return _new_group(
        host, g.instance, g.queue_id, first, last, a.client, a.client_ip, origin, a.sender,
        a.size, a.nrcpt, a.message_id, a.resent, a.orig_queue_id, a.orig_client,
        a.requeued_from, a.uid,
        tuple([
            _new_recipient(to, orig, tuple(attempts)) for (orig, to), attempts in a.rcpts.items()
        ]),
        tuple(a.children.values()), tuple(a.rejects), a.removed, a.expired, a.held,
        a.discarded, tuple(records), a.subject, tuple(a.verdicts),
    )


def _group_order(g: QueueGroup) -> tuple[datetime, str, str]:
    return (g.first_time, g.instance, g.queue_id)


def _reject_order(r: Reject) -> datetime:
    return r.time


L = TypeVar("L", bound=_Life)
T = TypeVar("T")

# How long (log time) a finished group still takes lines of its own queue ID. Postfix logs a
# few lines after qmgr's `removed` (the bounce daemon's `sender non-delivery notification`
# before 3.11), and lines of different processes interleave; a short ID is not reused that fast.
CLOSE_GRACE = timedelta(seconds=30)


class _Lifecycle(Generic[L, T]):
    """The lives of one host's queue IDs, streaming: which record belongs to which life, and
    when a life is finished (shared by :class:`Assembler` and :class:`Counter`).

    A life is finished by qmgr/postsuper ``removed``, a cleanup reject or cleanup
    ``removed (discarded|canceled)``; it is handed back once :data:`CLOSE_GRACE` of log time
    has passed without another line of it, or as soon as a new life of the same ID starts
    (``client=`` or pickup ``uid=``).
    """

    def __init__(
        self,
        host: str,
        *,
        keep_reject: Callable[[Reject], bool] | None = None,
        grace: timedelta = CLOSE_GRACE,
    ) -> None:
        """``host`` is the inventory name of the host; every group and reject carries it.

        ``keep_reject`` decides which NOQUEUE rejects are kept for ``finish`` (default: all);
        a whole-log scan that only counts them keeps none, so memory stays flat. ``grace``:
        how long a finished group still takes lines (:data:`CLOSE_GRACE`).
        """
        self.host = host
        self._grace = grace
        self._keep_reject = keep_reject
        self._open: dict[tuple[str, str], L] = {}
        self._instances: set[str] = set()  # the Postfix instances lives were opened in
        # Finished lives waiting out the grace period, oldest first, with their deadline.
        self._closing: dict[tuple[str, str], tuple[L, datetime]] = {}
        self._next_deadline: datetime | None = None  # of the oldest entry in _closing
        self._rejects: list[Reject] = []

    # What a subclass makes of a life.
    def _new(self, instance: str, queue_id: str) -> L:
        raise NotImplementedError

    def _emit(self, key: tuple[str, str], g: L) -> T:
        raise NotImplementedError

    def _link_requeue(self, instance: str, old: str, new: str, when: datetime) -> None:
        """pickup ``orig_id=``: the life ``old`` was requeued as ``new`` (postsuper -r)."""

    def add(self, record: Record) -> list[T]:
        """Take one record; return the lives that are now complete (usually none)."""
        # Once per record: the common path stays inline, the rare ones are helpers.
        closing = self._closing
        t = record.time
        nd = self._next_deadline
        done = self._past_grace(t) if nd is not None and t > nd else []
        qid = record.queue_id
        if qid is None:
            if record.kind is _REJECT:
                rej = _reject(self.host, record)
                if self._keep_reject is None or self._keep_reject(rej):
                    self._rejects.append(rej)
            return done
        kind = record.kind
        if kind is _VERDICT:
            return self._add_verdict(record, qid, done)
        key = (record.instance, qid)
        starts = kind is _CLIENT or kind is _PICKUP
        g = self._open.get(key)
        if g is None and closing:
            pending = closing.get(key)
            if pending is not None:
                if starts:
                    del closing[key]
                    done.append(self._emit(key, pending[0]))
                else:
                    pending[0].add(record)
                    return done
        if starts:
            if g is not None and g.started is not None and g.started.line != record.line:
                # A second start for this ID: the old life ended without a `removed` we saw
                # (lost lines). Identical lines (duplicated by syslog) do not count.
                del self._open[key]
                done.append(self._emit(key, g))
                g = None
            if kind is _PICKUP:
                orig_id = record.fields.get("orig_id")
                if orig_id is not None:
                    self._link_requeue(record.instance, orig_id, qid, t)
        if g is None:
            g = self._open[key] = self._new(record.instance, qid)
            self._instances.add(record.instance)
        if starts and g.started is None:
            g.started = record
        g.add(record)
        if (
            kind is _REMOVED
            or (kind is _POSTSUPER and record.fields.get("action") == "removed")
            or (kind is _REJECT and record.program == "cleanup")
        ):
            del self._open[key]
            deadline = t + self._grace
            closing[key] = (g, deadline)
            if self._next_deadline is None:
                self._next_deadline = deadline
        return done

    def _add_verdict(self, record: Record, qid: str, done: list[T]) -> list[T]:
        """A content filter's verdict joins the open (or closing) life of ``qid`` in whichever
        Postfix instance of this host has one (amavis logs no instance); with none it is
        dropped: a verdict alone is no message."""
        for instance in self._instances:
            key = (instance, qid)
            g = self._open.get(key)
            if g is None:
                pending = self._closing.get(key)
                g = pending[0] if pending is not None else None
            if g is not None:
                g.add(record)
                break
        return done

    def _past_grace(self, t: datetime) -> list[T]:
        """Hand back the finished lives whose grace period ended before log time ``t``."""
        done: list[T] = []
        closing = self._closing
        while closing:
            key = next(iter(closing))
            g, deadline = closing[key]
            if deadline >= t:
                break
            del closing[key]
            done.append(self._emit(key, g))
        self._next_deadline = next(iter(closing.values()))[1] if closing else None
        return done

    def held(self) -> int:
        """Records (or recipients) held for lives not finished yet: what a streaming scan
        has in memory."""
        return sum(g.held() for g in self._open.values()) + sum(
            g.held() for g, _ in self._closing.values()
        )

    def open_count(self) -> int:
        """Lives open now (not finished, not in their grace period)."""
        return len(self._open)

    def _drain(self) -> tuple[list[T], list[Reject]]:
        """Every life not yet handed back (the finished ones first), and the kept rejects."""
        lives = [self._emit(key, g) for key, (g, _) in self._closing.items()]
        lives += [self._emit(key, g) for key, g in self._open.items()]
        self._closing = {}
        self._next_deadline = None
        self._open = {}
        rejects, self._rejects = self._rejects, []
        return lives, rejects


class Assembler(_Lifecycle[_Open, QueueGroup]):
    """Streaming assembly of one host's records into QueueGroups (see :class:`_Lifecycle`
    for when a group is handed back)."""

    def __init__(
        self,
        host: str,
        *,
        keep_reject: Callable[[Reject], bool] | None = None,
        grace: timedelta = CLOSE_GRACE,
    ) -> None:
        super().__init__(host, keep_reject=keep_reject, grace=grace)
        # Requeue links (pickup orig_id=) for groups not yet emitted, added as Children.
        self._requeue_children: dict[tuple[str, str], list[Child]] = {}

    def _new(self, instance: str, queue_id: str) -> _Open:
        return _Open(instance, queue_id)

    def advance(self, t: datetime) -> list[QueueGroup]:
        """Log time has reached ``t`` (no line says so: a live follow's clock): the finished
        groups whose grace period ended before it."""
        if self._next_deadline is None or t <= self._next_deadline:
            return []
        return self._past_grace(t)

    def expire(self, before: datetime) -> list[QueueGroup]:
        """Hand back, unfinished, every open group whose first line is older than ``before``
        (a live follow's bound on what it holds: ``--max-open``). The first line, not the
        last: a message deferred for days logs a retry every hour or so, and would never
        go."""
        old = [k for k, g in self._open.items() if g.records[0].time < before]
        return [self._emit(k, self._open.pop(k)) for k in old]

    def open_lines(self, instance: str, queue_id: str) -> int | None:
        """How many lines the open group of ``queue_id`` holds; None when it is not open
        (finished, finishing or never seen)."""
        g = self._open.get((instance, queue_id))
        return None if g is None else len(g.records)

    def peek(self, instance: str, queue_id: str) -> QueueGroup | None:
        """The group of ``queue_id`` as its lines so far make it, while it is open (not
        finished): what a live follow shows of a message some of whose recipients are done
        while others wait in the queue. The group stays open here."""
        g = self._open.get((instance, queue_id))
        if g is None:
            return None
        group = _build(self.host, g)
        extra = self._requeue_children.get((instance, queue_id))
        return _with_children(group, extra) if extra else group

    def holds(self, queue_id: str) -> bool:
        """Whether a life of ``queue_id`` is open or finishing here (in any instance)."""
        return any((i, queue_id) in self._open or (i, queue_id) in self._closing
                   for i in self._instances)

    def _link_requeue(self, instance: str, old: str, new: str, when: datetime) -> None:
        key = (instance, old)
        if key in self._open or key in self._closing:
            child = _new_child(new, ChildVia.REQUEUE, time=when)
            self._requeue_children.setdefault(key, []).append(child)

    def _emit(self, key: tuple[str, str], g: _Open) -> QueueGroup:
        group = _build(self.host, g)
        extra = self._requeue_children.pop(key, None)
        if extra:
            group = _with_children(group, extra)
        return group

    def finish(self) -> HostLog:
        """Every group not yet handed back, plus all NOQUEUE rejects, in a fixed order."""
        groups, rejects = self._drain()
        groups.sort(key=_group_order)
        rejects.sort(key=_reject_order)
        return HostLog(host=self.host, groups=tuple(groups), rejects=tuple(rejects))


class _Count(_Life):
    """A life being counted: what ``summary`` needs of its records, folded as they come
    (the same folds as :func:`_build`), the records themselves not kept."""

    __slots__ = ("discarded", "expired_at", "first", "last", "rcpts", "rejects")

    def __init__(self, instance: str, queue_id: str) -> None:
        super().__init__(instance, queue_id)
        self.first: datetime | None = None
        self.last: datetime | None = None
        # (orig_to, to) -> (status, time) of its last attempt, in first-seen order
        self.rcpts: dict[tuple[str | None, str], tuple[Status | str, datetime]] = {}
        self.rejects = 0
        self.discarded = False
        self.expired_at: datetime | None = None  # qmgr's last `status=expired` line

    def held(self) -> int:
        return 1 + len(self.rcpts)

    def add(self, r: Record) -> None:  # once per record of a message
        t = r.time
        first = self.first
        if first is None:
            self.first = self.last = t
        elif t < first:
            self.first = t
        elif t > self.last:  # type: ignore[operator]  # set with first
            self.last = t
        kind = r.kind
        if kind is _DELIVERY:
            f = r.fields
            word = f.get("status", "")
            self.rcpts[f.get("orig_to"), f.get("to", "")] = (_STATUS_OF.get(word, word), t)
        elif kind is _REJECT:
            self.rejects += 1
        elif kind is _REMOVED:
            if r.fields.get("reason") == "discarded":
                self.discarded = True
        elif kind is _ACTION:
            if r.fields.get("action", "") in ("discard", "milter-discard"):
                self.discarded = True
        elif kind is _EXPIRED:
            self.expired_at = t

    def count(self, host: str) -> MessageCount:
        expired_at = self.expired_at
        if expired_at is None:
            statuses = tuple(s for s, _ in self.rcpts.values())
        else:  # as _expire_deferred: recipients still deferred when it expired
            statuses = tuple(
                _EXPIRED_STATUS if s == _DEFERRED and when <= expired_at else s
                for s, when in self.rcpts.values()
            )
        assert self.first is not None and self.last is not None  # a life has a record
        return _new_count(host, self.first, self.last, statuses, self.rejects, self.discarded)


class Counter(_Lifecycle[_Count, MessageCount]):
    """:class:`Assembler`'s lives, counted instead of built: each finished life is handed
    back as a :class:`~collector.models.MessageCount` (what ``summary`` tallies), and no
    record is kept, so a message queued for days costs its recipients, not its lines."""

    def _new(self, instance: str, queue_id: str) -> _Count:
        return _Count(instance, queue_id)

    def _emit(self, key: tuple[str, str], g: _Count) -> MessageCount:
        return g.count(self.host)

    def finish(self) -> tuple[list[MessageCount], list[Reject]]:
        """Every life not yet handed back, and the NOQUEUE rejects kept (log order)."""
        return self._drain()


def _with_children(group: QueueGroup, extra: list[Child]) -> QueueGroup:
    return replace(group, children=group.children + tuple(extra))


def distinct_lines(records: Iterable[Record]) -> list[Record]:
    """Every logged line once, in the order given, from records gathered by several reads.

    The same line met by two reads (pass 1 and pass 2, two rounds of a trace, two sources
    that overlap after a copytruncate) is one line; identical lines of one read (a client
    repeating a refused RCPT within a second, rsyslog's ``message repeated``) are as many
    lines. Every filter of a source takes all the identical copies of a line or none, so a
    line is kept as many times as the one read that saw it most often.
    """
    kept: dict[tuple[datetime, str], int] = {}
    in_read: dict[tuple[int, datetime, str], int] = {}
    out: list[Record] = []
    for r in records:
        key = (r.time, r.line)
        mine = (r.read, r.time, r.line)
        n = in_read.get(mine, 0) + 1
        in_read[mine] = n
        if n > kept.get(key, 0):
            kept[key] = n
            out.append(r)
    return out


def assemble(host: str, records: Iterable[Record], stats: ParseStats | None = None) -> HostLog:
    """All of one host's records -> HostLog (groups completed early included)."""
    asm = Assembler(host)
    groups: list[QueueGroup] = []
    add = asm.add
    for record in records:
        done = add(record)
        if done:
            groups.extend(done)
    tail = asm.finish()
    groups.extend(tail.groups)
    groups.sort(key=_group_order)
    return HostLog(
        host=host,
        groups=tuple(groups),
        rejects=tail.rejects,
        stats=stats if stats is not None else ParseStats(),
    )

"""Plain values handed from one pipeline stage to the next.

inventory -> transport -> discovery -> retrieval -> parse -> assemble -> correlate -> render.
Everything here is a frozen dataclass (or an enum); no I/O happens on attribute access.
Closed vocabularies are StrEnums whose values are the words written in JSON and CSV, so a
member and its word compare (and hash) equal. :func:`fast_constructor` builds the values of
the hot loops (parse, assemble) without the cost of a frozen ``__init__``.
Identity is explicit: a queue ID is unique only per host (and Postfix instance) and is
reused over time, so groups are keyed by ``(host, queue_id)`` plus time, never by the ID alone.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter
from types import MappingProxyType
from typing import Any, Generic, ParamSpec, TypeVar, cast

T = TypeVar("T")
P = ParamSpec("P")


# --------------------------------------------------------------------------- construction


def fast_constructor(cls: Callable[P, T]) -> Callable[P, T]:
    """``cls``'s constructor at well under half the cost, for the loops that run once per line.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__`` (2.2 us of
    a Record, as much as matching its envelope). The generated function fills a plain slotted
    twin of ``cls`` instead (same ``__slots__``, so the same memory layout; a slot store is the
    interpreter's cheapest attribute write), then makes it a ``cls`` by assigning
    ``__class__``, which CPython allows between classes of identical layout: the value *is* a
    ``cls``, frozen like any other. When the layout cannot be shared (a base class with
    slots of its own), each field goes through its slot descriptor instead (half the
    ``__init__``'s cost). The function has ``cls``'s parameters, defaults and default
    factories, and builds an equal value. Like that ``__init__`` it checks nothing, so it
    takes only frozen slotted dataclasses whose ``__init__`` does nothing more: no
    ``__post_init__``, ``InitVar``, ``init=False`` or keyword-only fields (a ``TypeError`` at
    import time says so).
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"fast_constructor: {cls!r} is not a dataclass")
    fs = dataclasses.fields(cls)
    names = [f.name for f in fs]
    if (
        not getattr(cls, "__dataclass_params__").frozen
        or "__slots__" not in cls.__dict__
        or hasattr(cls, "__post_init__")
        or any(f.kw_only for f in fs)
        or list(inspect.signature(cls).parameters) != names
    ):
        raise TypeError(f"fast_constructor: {cls.__name__} is not a plain frozen slotted class")
    twin = _twin(cls)
    # Generated like dataclasses' own __init__: one straight-line store per field, no loop.
    env: dict[str, Any] = {
        "_fc_new": object.__new__,
        "_fc_cls": cls,
        "_fc_twin": twin,
        "_fc_missing": dataclasses.MISSING,
    }
    params: list[str] = []
    body: list[str] = []
    for i, f in enumerate(fs):
        if f.default is not dataclasses.MISSING:
            env[f"_fc_default{i}"] = f.default
            params.append(f"{f.name}=_fc_default{i}")
        elif f.default_factory is not dataclasses.MISSING:
            env[f"_fc_factory{i}"] = f.default_factory
            params.append(f"{f.name}=_fc_missing")
            body.append(f"    if {f.name} is _fc_missing: {f.name} = _fc_factory{i}()")
        else:
            params.append(f.name)
        if twin is not None:
            body.append(f"    _fc_obj.{f.name} = {f.name}")
        else:
            env[f"_fc_set{i}"] = getattr(cls, f.name).__set__
            body.append(f"    _fc_set{i}(_fc_obj, {f.name})")
    if twin is not None:
        head = [f"def make({', '.join(params)}):", "    _fc_obj = _fc_new(_fc_twin)"]
        tail = ["    _fc_obj.__class__ = _fc_cls", "    return _fc_obj"]
    else:
        head = [f"def make({', '.join(params)}):", "    _fc_obj = _fc_new(_fc_cls)"]
        tail = ["    return _fc_obj"]
    source = "\n".join([*head, *body, *tail])
    exec(compile(source, f"<fast_constructor {cls.__qualname__}>", "exec"), env)
    make = env["make"]
    make.__qualname__ = make.__name__ = f"fast_{cls.__name__}"
    make.__doc__ = f"Build a {cls.__name__} like {cls.__name__}(...) does, without __init__."
    return cast(Callable[P, T], make)


def _twin(cls: type) -> type | None:
    """A mutable class with ``cls``'s exact slot layout, or None when there is none to make
    (``cls`` derives from a class other than ``object``): then ``__class__`` cannot move."""
    if cls.__bases__ != (object,):
        return None
    twin = type(f"_{cls.__name__}Twin", (), {"__slots__": cls.__dict__["__slots__"]})
    probe: object = object.__new__(twin)
    try:
        probe.__class__ = cls
    except TypeError:  # a layout CPython does not accept as the same
        return None
    return twin


# --------------------------------------------------------------------------- inventory


class TransportKind(enum.StrEnum):
    SSH = "ssh"
    LOCAL = "local"


class SourceMode(enum.StrEnum):
    """Where a host's log lines come from (inventory key ``source``)."""

    AUTO = "auto"
    FILES = "files"
    JOURNAL = "journal"


class HostKeyPolicy(enum.StrEnum):
    STRICT = "strict"
    ACCEPT_NEW = "accept-new"


@dataclass(frozen=True, slots=True)
class Host:
    """One mail server of the inventory, with every default already cascaded in."""

    name: str
    transport: TransportKind = TransportKind.SSH
    address: str | None = None
    port: int | None = None
    user: str | None = None
    identity_file: str | None = None
    proxy_jump: str | None = None
    sudo: bool = False
    timezone: str | None = None
    groups: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    root: str | None = None  # local transport: the directory that is this host's "/"
    logs: tuple[str, ...] = ()  # explicit paths/globs that override discovery
    source: SourceMode = SourceMode.AUTO
    identities_only: bool = False  # OpenSSH's IdentitiesOnly: offer no agent keys
    #: A log host: the inventory hosts whose lines its logs carry (``("*",)``: every host
    #: not collected elsewhere, and any hostname its lines name that no host claims).
    collects: tuple[str, ...] = ()
    #: A collected host: the log host its lines are read on (collector never connects to it).
    via: str | None = None

    @property
    def is_directory(self) -> bool:
        """A local host whose root is a directory, not this machine: an offline case, a copy.
        It reads only inside its root (never this machine's journal or Postfix)."""
        return self.transport is TransportKind.LOCAL and (self.root or "/") != "/"


@dataclass(frozen=True, slots=True)
class Settings:
    """Global, file-level settings of an inventory."""

    known_hosts: str | None = None  # None: ~/.ssh/known_hosts
    host_key_policy: HostKeyPolicy = HostKeyPolicy.STRICT
    workers: int = 16
    connect_timeout: float = 10.0
    command_timeout: float = 300.0
    # The most stdout a Session.run() keeps (a config file, a listing, postconf); a command
    # printing more is stopped and fails. Streams (log reads) have no such cap.
    run_output_max: int = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Inventory:
    path: str
    hosts: tuple[Host, ...]
    groups: tuple[str, ...] = ()
    settings: Settings = field(default_factory=Settings)


# --------------------------------------------------------------------------- what the user asked for

class Status(enum.StrEnum):
    """The status words of a recipient or a search row, the choices of ``--status``.

    Postfix's own delivery words (``status=``), plus ``expired`` (qmgr's ``status=expired``
    applied to recipients still deferred) and the words of rows without a delivery line:
    ``rejected``, ``discarded``, ``unknown``.
    """

    SENT = "sent"
    BOUNCED = "bounced"
    DEFERRED = "deferred"
    EXPIRED = "expired"
    REJECTED = "rejected"
    UNDELIVERABLE = "undeliverable"  # address verification (sendmail -bv, verify(8))
    DELIVERABLE = "deliverable"
    DISCARDED = "discarded"
    UNKNOWN = "unknown"


STATUSES: tuple[str, ...] = tuple(s.value for s in Status)


@dataclass(frozen=True, slots=True)
class Query:
    """Selectors of ``search``/``trace``/``fetch``: AND across options, OR within one."""

    senders: tuple[str, ...] = ()
    recipients: tuple[str, ...] = ()
    message_ids: tuple[str, ...] = ()
    queue_ids: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    clients: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    #: ``trace QUERY``: each term matches a sender, a recipient, a message-id or a queue ID.
    terms: tuple[str, ...] = ()
    #: ``--subject``: a fixed string inside the Subject that header_checks logged.
    subjects: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (
            self.terms
            or self.senders
            or self.recipients
            or self.message_ids
            or self.queue_ids
            or self.statuses
            or self.clients
            or self.subjects
        )


# --------------------------------------------------------------------------- per-host outcome


class Stage(enum.StrEnum):
    """The step of the per-host pipeline at which something went wrong."""

    CONFIG = "config"
    CONNECT = "connect"
    HOST_KEY = "host-key"
    AUTH = "auth"
    SUDO = "sudo"
    DISCOVER = "discover"
    READ = "read"
    PARSE = "parse"


@dataclass(frozen=True, slots=True)
class HostError:
    host: str
    stage: Stage
    message: str
    via: str | None = None  # the log host whose failure this is (a collected host's)

    def __str__(self) -> str:
        return f"{self.host}: {self.where}: {self.message}"

    @property
    def where(self) -> str:
        """The stage, and the log host it happened on when that is not this host."""
        return f"{self.stage} (via {self.via})" if self.via else str(self.stage)


class ReadProblem(enum.StrEnum):
    """Why a host's log source could not be read to its end (its lines may be missing)."""

    PERMISSION = "permission"  # not readable by the login user and no sudo
    DAMAGED = "damaged"  # a compressed rotation that does not decompress to its end
    VANISHED = "vanished"  # gone between discovery and reading (rotated away)
    ROTATED = "rotated"  # replaced or cut while being read (logrotate moved it meanwhile)
    TOO_LARGE = "too-large"  # more lines than one host (or one message) may hold


@dataclass(frozen=True, slots=True)
class Unread:
    """A log source a host could not read completely: the host's answer is partial."""

    path: str
    problem: ReadProblem

    def __str__(self) -> str:
        if self.problem is ReadProblem.PERMISSION:
            return f"cannot read {self.path} (permission denied; set sudo = true?)"
        if self.problem is ReadProblem.DAMAGED:
            return f"{self.path} is damaged: lines after the damage are missing"
        if self.problem is ReadProblem.TOO_LARGE:
            return (f"{self.path}: more lines than collector keeps for one host or one message: "
                    "the rest were not read")
        if self.problem is ReadProblem.ROTATED:
            return f"{self.path} was rotated while being read: its lines may be missing"
        return f"{self.path} vanished while being read (rotated?)"


class Hole(enum.StrEnum):
    """Why part of the time window asked was not seen on a host (see ``logs.coverage``)."""

    BEFORE_LOGS = "before-logs"  # the oldest log starts after the window does
    AFTER_LOGS = "after-logs"  # a copy (or a directory of logs) ends before the window does
    MISSING_ROTATION = "missing-rotation"  # a number missing in the .N sequence
    GAP = "gap"  # between two files of one log: longer than one file usually spans
    UNREAD = "unread"  # a source that could not be read to its end (see ``Unread``)
    NOT_FETCHED = "not-fetched"  # a fetched case holds only the lines its selectors chose


class SourceState(enum.StrEnum):
    READ = "read"
    SKIPPED = "skipped"  # outside the time window (by its mtime)
    UNREAD = "unread"


@dataclass(frozen=True, slots=True)
class SourceSpan:
    """One source in a host's coverage: the times of its first and last lines (None: not
    known; a compressed rotation's last line is its mtime, a live log's is when it was read)."""

    path: str
    first: datetime | None
    last: datetime | None
    state: SourceState
    why: str | None = None


@dataclass(frozen=True, slots=True)
class Uncovered:
    """A time range of the window whose lines a host's logs do not hold (None: open end)."""

    start: datetime | None
    end: datetime | None
    why: Hole
    path: str | None = None  # the source (or the neighbours of the missing one) it is about

    def __str__(self) -> str:
        def at(when: datetime | None) -> str:
            return when.isoformat(sep=" ", timespec="seconds") if when is not None else "?"

        seen = f"{at(self.start)} to {at(self.end)} not seen"
        if self.why is Hole.BEFORE_LOGS:
            return f"{seen} (before the oldest log line)"
        if self.why is Hole.AFTER_LOGS:
            return f"{seen} (after the newest log line: the logs are a copy)"
        if self.why is Hole.MISSING_ROTATION:
            return f"{seen} (rotation {self.path} is missing)"
        if self.why is Hole.GAP:
            return f"{seen} (no lines {self.path}: a rotation missing?)"
        if self.why is Hole.NOT_FETCHED:
            return f"{seen} (the case holds only the lines its fetch selected: {self.path})"
        return f"{seen} ({self.path} could not be read to its end)"


class Proof(enum.StrEnum):
    """What an answer proves (JSON ``verdict``)."""

    FOUND = "found"
    ABSENT = "absent"  # nothing matched, and every host's logs cover the whole window
    INCONCLUSIVE = "inconclusive"  # nothing matched, but some host or time range was not seen


@dataclass(frozen=True, slots=True)
class Coverage:
    """What one host's logs let an answer see of the window asked (``since``/``until``).

    ``first``/``last``: the oldest line and the end of what was read. ``uncovered``: the parts
    of the window not seen; empty means "nothing found" is proven for this host.
    """

    since: datetime | None
    until: datetime | None
    first: datetime | None
    last: datetime | None
    sources: tuple[SourceSpan, ...] = ()
    uncovered: tuple[Uncovered, ...] = ()

    @property
    def complete(self) -> bool:
        return not self.uncovered


@dataclass(frozen=True, slots=True)
class HostResult(Generic[T]):
    """A value or an error for one host; failure is data until the CLI decides."""

    host: str
    value: T | None = None
    error: HostError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class CommandResult:
    command: str
    stdout: bytes
    stderr: bytes
    exit_code: int


# --------------------------------------------------------------------------- discovery


class Compression(enum.StrEnum):
    NONE = ""
    GZIP = "gz"
    BZIP2 = "bz2"
    XZ = "xz"
    ZSTD = "zst"


class SourceKind(enum.StrEnum):
    """How a log source is read: a file (maybe compressed) or ``journalctl``."""

    FILE = "file"
    JOURNAL = "journal"


class Origin(enum.StrEnum):
    """Why discovery chose a log source."""

    MAILLOG_FILE = "maillog_file"  # main.cf maillog_file (postlogd) and its rotations
    DEFAULT = "default"  # a distribution's syslog file (/var/log/maillog, mail.log, mail)
    INVENTORY = "inventory"  # the host's ``logs`` in the inventory
    JOURNAL = "journal"  # journald, by syslog facility


@dataclass(frozen=True, slots=True)
class LogSource:
    """A place on a host where Postfix lines are found.

    ``origin`` says why it was chosen. Files are listed oldest to newest; ``mtime`` (seconds
    since the epoch) anchors the year of timestamps that carry none.
    """

    path: str
    kind: SourceKind = SourceKind.FILE
    origin: Origin = Origin.DEFAULT
    compression: Compression = Compression.NONE
    size: int | None = None
    mtime: float | None = None
    instance: str | None = None
    readable: bool = True
    #: Read as root (``sudo = true`` and the login user cannot read it itself): only its
    #: reader runs through ``sudo -n`` (see ``collector.transport.privilege``).
    sudo: bool = False


# --------------------------------------------------------------------------- parse


class Kind(enum.StrEnum):
    """What one Postfix log line says."""

    CLIENT = "client"  # smtpd  ID: client=name[ip][, orig_queue_id=..., orig_client=...]
    PICKUP = "pickup"  # pickup ID: uid=N from=<s> [orig_id=OLD]
    MESSAGE_ID = "message-id"  # cleanup ID: message-id=<...>
    RESENT_MESSAGE_ID = "resent-message-id"
    QUEUED = "queued"  # qmgr ID: from=<s>, size=N, nrcpt=N (queue active)
    DELIVERY = "delivery"  # agent ID: to=<r>, relay=..., dsn=..., status=WORD (text)
    EXPIRED = "expired"  # qmgr ID: from=<s>, status=expired, returned to sender
    REMOVED = "removed"  # qmgr ID: removed
    NOTIFICATION = "notification"  # bounce ID: sender non-delivery notification: CHILD
    REJECT = "reject"  # smtpd/postscreen/cleanup reject (with an ID or NOQUEUE)
    ACTION = "action"  # hold/discard/filter/redirect/warn/... by smtpd or cleanup
    POSTSUPER = "postsuper"  # postsuper ID: removed|requeued|placed on hold|...
    CONNECT = "connect"  # smtpd connect from name[ip]
    DISCONNECT = "disconnect"
    DIAGNOSTIC = "diagnostic"  # warning:/error:/fatal:/panic:
    VERDICT = "verdict"  # amavis (ID) Passed CLEAN {...}, ..., Queue-ID: ID, ... queued_as: ID2
    OTHER = "other"  # a Postfix line with no tracing meaning (TLS, postscreen, anvil, ...)


#: The fields of a line that has none: one shared, read-only mapping.
NO_FIELDS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Record:
    """One parsed log line.

    ``host`` is the host name written in the line's envelope (the caller knows
    which inventory host the source belongs to). ``instance`` is the first
    component of the syslog tag (``postfix``, ``postfix-out``), ``service`` the
    middle ones (``relay``, ``submission``, ``""``), ``program`` the last
    (``smtpd``). ``queue_id`` is None for NOQUEUE and for lines without an ID.
    ``child`` is the queue ID this line hands the message to (``queued as``,
    ``forwarded as``, a notification's new ID, a requeue's new ID).
    ``read`` numbers the read (one parser over one command's output) the line came from:
    identical lines of one read are as many logged lines, while the same line met again by
    another read (a second pass, a later round) is the same line. It takes no part in
    equality.
    """

    time: datetime
    host: str
    instance: str
    service: str
    program: str
    pid: int | None
    queue_id: str | None
    kind: Kind
    fields: Mapping[str, str]
    text: str = ""
    child: str | None = None
    severity: str = ""
    line: str = ""
    read: int = field(default=0, compare=False)

    def __reduce__(self) -> tuple[Callable[..., Record], tuple[object, ...]]:
        """Pickle ``fields`` as a dict: a read-only MappingProxyType (:data:`NO_FIELDS`) does
        not pickle, and records come back from the worker processes of a fleet search."""
        values: tuple[object, ...] = _record_values(self)
        fields = self.fields
        if type(fields) is dict:
            return _unpickle_record, (values,)
        i = _FIELDS_AT
        return _unpickle_read_only, (values[:i] + (dict(fields),) + values[i + 1 :],)


_new_record = fast_constructor(Record)
_record_values = attrgetter(*(f.name for f in dataclasses.fields(Record)))
_FIELDS_AT = [f.name for f in dataclasses.fields(Record)].index("fields")


def _unpickle_record(values: tuple[Any, ...]) -> Record:
    """The inverse of :meth:`Record.__reduce__` (pickle names its functions by module path)."""
    return _new_record(*values)


def _unpickle_read_only(values: tuple[Any, ...]) -> Record:
    """The inverse of :meth:`Record.__reduce__` for fields that were read-only."""
    args = list(values)
    fields = args[_FIELDS_AT]
    args[_FIELDS_AT] = MappingProxyType(fields) if fields else NO_FIELDS
    return _new_record(*args)


@dataclass(frozen=True, slots=True)
class ParseStats:
    """What a parse of one source saw; unknown and bad lines are counted, never fatal."""

    lines: int = 0
    parsed: int = 0
    unknown: int = 0  # envelope not recognised, or a non-Postfix program
    bad: int = 0  # undecodable bytes, NUL, over-long, binary junk
    blank: int = 0
    unknown_samples: tuple[str, ...] = ()


# --------------------------------------------------------------------------- assemble


@dataclass(frozen=True, slots=True)
class Attempt:
    """One delivery-status line for one recipient."""

    time: datetime
    program: str
    status: Status | str  # a Status, or Postfix's word when it is none of them (SOFTBOUNCE)
    relay: str | None = None
    delay: float | None = None
    delays: str | None = None
    dsn: str | None = None
    response: str = ""
    next_queue_id: str | None = None  # "queued as" / "forwarded as"


@dataclass(frozen=True, slots=True)
class Recipient:
    """A recipient of one queue file, with its last status and every attempt."""

    address: str
    orig_address: str | None
    attempts: tuple[Attempt, ...]

    @property
    def last(self) -> Attempt:
        return self.attempts[-1]

    @property
    def status(self) -> Status | str:
        return self.attempts[-1].status


class ChildVia(enum.StrEnum):
    """How a queue file handed its message (or a notice about it) to another queue ID."""

    QUEUED_AS = "queued-as"  # a delivery's reply `queued as ID` (relay, content filter)
    FORWARDED_AS = "forwarded-as"  # local(8) `forwarded as ID` (alias, .forward)
    NOTIFICATION = "notification"  # bounce(8) `sender non-delivery notification: ID`
    REQUEUE = "requeue"  # postsuper -r: the new ID's pickup `orig_id=`


@dataclass(frozen=True, slots=True)
class Child:
    """A queue ID this message handed itself (or a notification) to."""

    queue_id: str
    via: ChildVia
    recipient: str | None = None
    relay: str | None = None
    time: datetime | None = None
    detail: str = ""  # e.g. "sender non-delivery notification"


class RejectAction(enum.StrEnum):
    """The action word of a refusal line (smtpd, postscreen, cleanup, or a milter's)."""

    REJECT = "reject"
    MILTER_REJECT = "milter-reject"
    MILTER_HEADER_REJECT = "milter-header-reject"
    PROXY_REJECT = "proxy-reject"  # a before-queue proxy (smtpd_proxy_filter) refused it


@dataclass(frozen=True, slots=True)
class Reject:
    """A refusal: smtpd/postscreen (NOQUEUE or with an ID) or cleanup."""

    time: datetime
    host: str
    program: str
    queue_id: str | None
    stage: str  # RCPT, CONNECT, END-OF-MESSAGE, header, body, ...
    client: str | None
    sender: str | None
    recipient: str | None
    response: str
    action: RejectAction = RejectAction.REJECT
    #: The log line as read (the evidence a trace shows; not part of what the reject is).
    line: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a content filter or a milter said about one queue file.

    ``filter`` names who judged (``amavis``, ``milter``); ``verdict`` is its word for it
    (``Passed CLEAN``, ``Blocked SPAM``, ``milter-reject``); ``detail`` the rest worth showing
    (amavis's ``{RelayedInbound}, Hits: 0.052``, a milter's reply). ``next_queue_id`` is the
    queue ID the filter re-injected the message as (amavis ``queued_as:``), when it says.
    """

    time: datetime
    filter: str
    verdict: str
    detail: str = ""
    next_queue_id: str | None = None
    message_id: str | None = None


@dataclass(frozen=True, slots=True)
class QueueGroup:
    """Everything one host logged about one queue file (one life of one queue ID)."""

    host: str
    instance: str
    queue_id: str
    first_time: datetime
    last_time: datetime
    client: str | None = None  # name[ip] from smtpd client=
    client_ip: str | None = None
    origin: str = ""  # smtp | pickup | local (bounce/notification or internal) | ""
    sender: str | None = None
    size: int | None = None
    nrcpt: int | None = None
    message_id: str | None = None
    resent_message_id: str | None = None
    orig_queue_id: str | None = None  # smtpd client= orig_queue_id= (content filter re-injection)
    orig_client: str | None = None
    requeued_from: str | None = None  # pickup orig_id= (postsuper -r)
    uid: int | None = None
    recipients: tuple[Recipient, ...] = ()
    children: tuple[Child, ...] = ()
    rejects: tuple[Reject, ...] = ()
    removed: bool = False
    expired: bool = False
    held: bool = False
    discarded: bool = False
    records: tuple[Record, ...] = ()
    #: The Subject header as cleanup logged it (header_checks INFO/WARN), when it did.
    subject: str | None = None
    verdicts: tuple[Verdict, ...] = ()


@dataclass(frozen=True, slots=True)
class MessageCount:
    """What ``summary`` counts of one life of one queue ID: a QueueGroup without its lines.

    ``statuses`` are the recipients' final statuses, in the group's recipient order;
    ``rejects`` the refusals logged with the queue ID (cleanup, milter).
    """

    host: str
    first_time: datetime
    last_time: datetime
    statuses: tuple[Status | str, ...] = ()
    rejects: int = 0
    discarded: bool = False


@dataclass(frozen=True, slots=True)
class Row:
    """One search result: one recipient of one queue file on one host (or one reject)."""

    time: datetime
    host: str
    queue_id: str | None
    sender: str | None
    recipient: str | None
    orig_recipient: str | None
    status: Status | str  # an Attempt's status, or Status.REJECTED/DISCARDED/EXPIRED/UNKNOWN
    dsn: str | None
    relay: str | None
    delay: float | None
    message_id: str | None
    response: str
    client: str | None


@dataclass(frozen=True, slots=True)
class HostLog:
    """What assembly made of one host's lines."""

    host: str
    groups: tuple[QueueGroup, ...]
    rejects: tuple[Reject, ...]  # NOQUEUE rejects (no queue file)
    stats: ParseStats = field(default_factory=ParseStats)


# --- correlate


class HopVia(enum.StrEnum):
    """How a queue group got the message: the ``via`` of a :class:`Hop` and of a :class:`Link`.

    The first three are how a trace starts; the others name the hand-off from the parent.
    """

    ENTRY = "entry"  # came in by SMTP (or from nowhere known) with no parent in the fleet
    PICKUP = "pickup"  # submitted on the host itself (sendmail/postdrop)
    LOCAL = "local"  # made by the host itself (a bounce or notice without a known parent)
    SMTP = "smtp"  # "queued as" by a delivery to another fleet host
    REINJECTION = "reinjection"  # back into the same host (content filter, orig_queue_id=)
    FORWARD = "forward"  # "forwarded as" by local(8) (.forward, alias to a remote address)
    NOTIFICATION = "notification"  # a bounce/delay/success notice about the parent
    REQUEUE = "requeue"  # postsuper -r (pickup orig_id=)
    REFUSED = "refused"  # the reject a fleet host logged for the parent's attempt
    MESSAGE_ID = "message-id"  # weak: same message-id, sender and recipient within the skew


class LinkStrength(enum.StrEnum):
    """How sure a link is."""

    STRONG = "strong"  # a logged hand-off (queued as, orig_queue_id=, a refusal, ...)
    # a content filter's re-injection without a logged hand-off: same host, loopback client,
    # message-id, sender, recipients and time all agree (the evidence lists each)
    INFERRED = "inferred"
    WEAK = "weak"  # only the message-id fallback


class Outcome(enum.StrEnum):
    """Where a recipient ended, concluded from the evidence (Postfix's status is another word)."""

    DELIVERED = "delivered"  # into a mailbox of the fleet (local, virtual, LMTP, pipe)
    RELAYED_OUT = "relayed-out"  # accepted by a server outside the inventory
    DISCARDED = "discarded"
    BOUNCED = "bounced"
    QUEUED = "queued"  # still in a queue when the logs end (deferred, or not yet tried)
    EXPIRED = "expired"  # returned to the sender after the maximal queue lifetime
    REJECTED = "rejected"  # refused by a fleet host's smtpd/cleanup
    LOST = "lost"  # handed to a fleet host whose logs do not show it
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True, order=True)
class GroupRef:
    """Names one queue group. A short queue ID is reused, so a ref alone can match two lives."""

    host: str
    queue_id: str


@dataclass(frozen=True, slots=True)
class Link:
    """Evidence that ``child`` carries on the message (or a notification) of ``parent``.

    ``strength`` is strong (a logged hand-off) or weak (message-id fallback).
    ``parent_time``/``child_time`` are the groups' first times: they pick the life of a reused ID.
    """

    parent: GroupRef
    child: GroupRef
    via: HopVia
    evidence: tuple[str, ...]
    strength: LinkStrength
    parent_time: datetime | None = None
    child_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class BackwardHint:
    """A group whose ``client=`` is a fleet host but which has no parent yet: look there."""

    host: str  # the previous host, named by the child's client=
    message_id: str | None
    time: datetime
    child: GroupRef


@dataclass(frozen=True, slots=True)
class RefusalHint:
    """A fleet host refused a recipient (its reply is quoted in a bounce/deferral): look there."""

    host: str  # the refusing host, named by the attempt's relay=
    recipient: str
    time: datetime  # of the attempt; the host logged its reject around then


@dataclass(frozen=True, slots=True)
class Hop:
    """One queue group on the way of a message; ``via`` says how it got the message.

    ``parent`` names the group it came from (for the first hop of a notification: the group
    that bounced, in the enclosing trace); ``parent_index`` is that hop's index in the same
    ``Trace.hops``, None for a trace's first hop. ``handoff`` is the parent's delivery whose
    ``queued as``/``forwarded as`` names this hop (its ``delays`` are the hop's), if any.
    """

    host: str
    queue_id: str
    time: datetime  # the group's first_time
    client: str | None
    parent: GroupRef | None
    via: HopVia
    evidence: tuple[str, ...]
    group: QueueGroup
    parent_index: int | None = None
    handoff: Attempt | None = None
    strength: LinkStrength | None = None  # of the link from the parent (None: a first hop)

    @property
    def verdict(self) -> str | None:
        """What the content filters and milters that judged this hop's queue file said."""
        said = [f"{v.filter} {v.verdict}" + (f" {v.detail}" if v.detail else "")
                for v in self.group.verdicts]
        return "; ".join(said) if said else None


@dataclass(frozen=True, slots=True)
class RecipientOutcome:
    """Where one recipient ended.

    ``status`` is Postfix's word (sent, bounced, deferred, expired, rejected, unknown);
    ``outcome`` is the conclusion from the evidence. ``path`` runs from the entry group to the
    group that logged the outcome, re-injection hops included. ``hop_index`` is the index in
    ``Trace.hops`` of the hop that logged it; ``attempt`` is the recipient's last delivery
    attempt there (None for a reject and for an address the hop logged nothing for).
    """

    address: str
    orig_address: str | None
    status: str
    outcome: Outcome
    host: str
    queue_id: str
    dsn: str | None
    response: str
    time: datetime | None
    path: tuple[GroupRef, ...]
    hop_index: int | None = None
    attempt: Attempt | None = None


@dataclass(frozen=True, slots=True)
class Trace:
    """One message across the fleet; ``notes`` say where the trail was lost and why.

    A notification (DSN) is a trace of its own, nested in the trace of the message it reports
    on; its ``anchor`` is the index, in that enclosing trace's hops, of the hop that sent it.
    """

    message_id: str | None
    sender: str | None
    first_seen: datetime
    last_seen: datetime
    size: int | None
    hops: tuple[Hop, ...]
    recipients: tuple[RecipientOutcome, ...]
    notifications: tuple[Trace, ...]
    notes: tuple[str, ...]
    anchor: int | None = None
    subject: str | None = None  # the first Subject a hop's header_checks logged

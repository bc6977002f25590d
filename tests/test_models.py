"""models: vocabularies keep their words, fast constructors equal __init__, values pickle."""

from __future__ import annotations

import dataclasses
import inspect
import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from collector.logs import assemble as assemble_module
from collector.logs import parse as parse_module
from collector.logs.assemble import assemble
from collector.logs.parse import LineParser, TimeContext
from collector.models import (
    NO_FIELDS,
    STATUSES,
    Attempt,
    Child,
    ChildVia,
    HostLog,
    Kind,
    LogSource,
    Origin,
    QueueGroup,
    Recipient,
    Record,
    Reject,
    RejectAction,
    SourceKind,
    Status,
    fast_constructor,
)

LAB = Path(__file__).parent / "fixtures" / "lab"
T0 = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)


# --------------------------------------------------------------------------- vocabularies


@pytest.mark.parametrize(
    ("enum", "words"),
    [
        (SourceKind, ["file", "journal"]),
        (Origin, ["maillog_file", "default", "inventory", "journal"]),
        (ChildVia, ["queued-as", "forwarded-as", "notification", "requeue"]),
        (RejectAction, ["reject", "milter-reject", "milter-header-reject", "proxy-reject"]),
        (
            Status,
            ["sent", "bounced", "deferred", "expired", "rejected", "undeliverable",
             "deliverable", "discarded", "unknown"],
        ),
    ],
)
def test_vocabularies_keep_their_words(enum: Any, words: list[str]) -> None:
    assert [m.value for m in enum] == words
    for member, word in zip(enum, words):
        # what JSON, CSV and tables write, and what bare-string consumers compare with
        assert member == word and hash(member) == hash(word)
        assert f"{member}" == str(member) == word
        assert json.dumps({member: [member]}) == json.dumps({word: [word]})
        assert json.dumps([member], indent=2) == json.dumps([word], indent=2)


def test_statuses_is_the_status_words_in_order() -> None:
    assert STATUSES == (
        "sent", "bounced", "deferred", "expired", "rejected", "undeliverable", "deliverable",
        "discarded", "unknown",
    )
    assert all(type(s) is str for s in STATUSES)  # plain words: the CLI prints and checks them


def test_log_source_defaults_are_members() -> None:
    src = LogSource("/var/log/mail.log")
    assert src.kind is SourceKind.FILE and src.origin is Origin.DEFAULT


# --------------------------------------------------------------------------- fast_constructor

# Every class the hot loops build with fast_constructor, and the instances they use.
FAST = [Record, Attempt, Child, Recipient, QueueGroup, Reject]
IN_USE: list[tuple[type[Any], Callable[..., Any]]] = [
    (Record, parse_module._make_record),
    (Attempt, assemble_module._new_attempt),
    (Child, assemble_module._new_child),
    (Recipient, assemble_module._new_recipient),
    (QueueGroup, assemble_module._new_group),
    (Reject, assemble_module._new_reject),
]


def _values(cls: type[Any]) -> dict[str, object]:
    """A distinct, non-default value for every field (nothing is validated)."""
    return {f.name: f"{cls.__name__}.{f.name}" for f in dataclasses.fields(cls)}


def _required(cls: type[Any]) -> dict[str, object]:
    return {
        f.name: f"{cls.__name__}.{f.name}"
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }


@pytest.mark.parametrize(("cls", "make"), [(c, fast_constructor(c)) for c in FAST] + IN_USE)
def test_fast_constructor_equals_init(cls: type[Any], make: Callable[..., Any]) -> None:
    every = _values(cls)
    assert make(*every.values()) == cls(*every.values())
    assert make(**every) == cls(**every)
    required = _required(cls)
    built = make(*required.values())  # defaults (and default factories) fill the rest
    assert built == cls(*required.values())
    assert type(built) is cls
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(built, dataclasses.fields(cls)[0].name, "changed")


def test_fast_constructor_keeps_the_signature() -> None:
    for cls in FAST:
        fast = inspect.signature(fast_constructor(cls)).parameters
        slow = inspect.signature(cls).parameters
        assert [(p.name, p.kind) for p in fast.values()] == [
            (p.name, p.kind) for p in slow.values()
        ]
    with pytest.raises(TypeError):
        fast_constructor(Attempt)(T0)  # a missing argument fails as it does for __init__


def test_fast_constructor_calls_default_factories_each_time() -> None:
    @dataclass(frozen=True, slots=True)
    class Bag:
        name: str
        items: list[str] = field(default_factory=list)

    make = fast_constructor(Bag)
    a, b = make("a"), make("b")
    assert a == Bag("a") and a.items is not b.items


def test_fast_constructor_on_a_class_with_a_slotted_base() -> None:
    # The base's slots are not the class's own: no twin shares that layout, so the fields
    # go through their descriptors, and the value is still a frozen, equal instance.
    @dataclass(frozen=True, slots=True)
    class Base:
        a: int

    @dataclass(frozen=True, slots=True)
    class Derived(Base):
        b: str = "x"

    make = fast_constructor(Derived)
    built = make(1)
    assert built == Derived(1) and type(built) is Derived and built.b == "x"
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(built, "a", 2)


@pytest.mark.parametrize("cls", FAST)
def test_fast_constructor_values_are_the_class_itself(cls: type[Any]) -> None:
    # built through a mutable twin, the value must end up a plain member of cls: hashable as
    # cls hashes it, picklable, and with no attribute the class does not declare
    values = _values(cls)
    if cls is Record:
        values["fields"] = {"to": "a@example.com"}  # Record pickles its fields as a dict
    built = fast_constructor(cls)(**values)
    assert type(built) is cls and isinstance(built, cls)
    assert not hasattr(built, "__dict__")
    assert _roundtrip(built) == built
    try:
        expected = hash(cls(**values))
    except TypeError:  # a Record holding a dict
        with pytest.raises(TypeError):
            hash(built)
    else:
        assert hash(built) == expected


def test_fast_constructor_refuses_classes_whose_init_does_more() -> None:
    @dataclass(frozen=True)
    class NoSlots:
        x: int

    @dataclass(slots=True)
    class NotFrozen:
        x: int

    @dataclass(frozen=True, slots=True)
    class PostInit:
        x: int

        def __post_init__(self) -> None:
            pass

    @dataclass(frozen=True, slots=True, kw_only=True)
    class KwOnly:
        x: int

    @dataclass(frozen=True, slots=True)
    class InitVarred:
        x: int
        y: dataclasses.InitVar[int] = 0

    for cls in (NoSlots, NotFrozen, PostInit, KwOnly, InitVarred, int):
        with pytest.raises(TypeError):
            fast_constructor(cls)


# --------------------------------------------------------------------------- pickling


def _record(fields: Any) -> Record:
    return Record(T0, "mx1", "postfix", "", "smtpd", 7, "4F2A81C0042", Kind.CLIENT, fields)


def _roundtrip(value: Any) -> Any:
    return pickle.loads(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


@pytest.mark.parametrize(
    "fields", [{"client": "a[192.0.2.1]"}, NO_FIELDS, MappingProxyType({"action": "removed"})]
)
def test_record_pickles_to_an_equal_value(fields: Any) -> None:
    record = _record(fields)
    back = _roundtrip(record)
    assert back == record and type(back) is Record
    assert dict(back.fields) == dict(fields)
    # read-only fields stay read-only; an empty one is the shared NO_FIELDS again
    assert isinstance(back.fields, dict) == isinstance(fields, dict)
    if not fields:
        assert back.fields is NO_FIELDS


def _lab_logs() -> list[HostLog]:
    mtimes = json.loads((LAB / "mtimes.json").read_text())
    logs = []
    for rel, mtime in sorted(mtimes.items()):
        host = rel.split("/", 1)[0]
        parser = LineParser(TimeContext(UTC, datetime.fromtimestamp(mtime, UTC)))
        records = list(parser.parse((LAB / rel).read_bytes().splitlines(keepends=True)))
        logs.append(assemble(host, records, parser.stats))
    return logs


def test_host_logs_of_real_lines_pickle_to_equal_values() -> None:
    logs = _lab_logs()
    assert len(logs) == 4
    records = [r for log in logs for g in log.groups for r in g.records]
    assert any(r.fields is NO_FIELDS for r in records)  # the case that used to fail
    assert any(type(r.fields) is dict for r in records)
    for log in logs:
        assert log.groups and _roundtrip(log) == log
        for group in log.groups:
            assert _roundtrip(group) == group
            for r in group.records:
                assert _roundtrip(r) == r
    # the vocabulary members survive as members
    back = _roundtrip(logs)
    children = [c for log in back for g in log.groups for c in g.children]
    assert children and all(type(c.via) is ChildVia for c in children)
    attempts = [a for log in back for g in log.groups for r in g.recipients for a in r.attempts]
    statuses = [a.status for a in attempts]
    assert statuses and all(type(s) is Status for s in statuses)


def test_host_logs_come_back_from_worker_processes() -> None:
    """What `collector search` does with several hosts: each parses in a forked worker."""
    from collector.models import Host
    from collector.search.fleet import run_on_hosts

    logs = {log.host: log for log in _lab_logs()}
    results = run_on_hosts(
        [Host(name) for name in logs], lambda host: logs[host.name], processes=True
    )
    assert [r.error for r in results] == [None] * len(logs)
    assert {r.host: r.value for r in results} == logs

"""follow's reader-to-loop hand-over, pure: what is in flight is bounded in records, not in
batches (a loop that falls behind makes the readers wait; it never grows memory by more than
the bound). Real records: the lab's lines, parsed as a reader parses them."""

from __future__ import annotations

from datetime import UTC, datetime

from follow_support import lab_lines

from collector.logs.parse import LineParser, TimeContext
from collector.models import HostError, Record, Stage
from collector.trace.stream import _BATCH, _QUEUE_MAX, Event, Inbox


def _records() -> list[tuple[str, Record]]:
    parser = LineParser(TimeContext(tz=UTC, reference=datetime(2026, 12, 1, tzinfo=UTC)))
    return [(host, rec) for host, line in lab_lines() for rec in parser.feed_all(line)]


def _batches(size: int) -> list[Event]:
    """The lab's records in readers' batches of ``size``, over and over."""
    recs = _records()
    assert recs
    out = []
    for start in range(0, (_QUEUE_MAX // size + 10) * size, size):
        chunk = tuple(recs[(start + i) % len(recs)] for i in range(size))
        out.append(Event(chunk[0][0], chunk, 0.0))
    return out


def _fill(inbox: Inbox, events: list[Event]) -> int:
    """Put events until the inbox refuses one (a loop that does not read); how many went."""
    for n, event in enumerate(events):
        if not inbox.put(event, timeout=0):
            return n
    return len(events)


def test_records_in_flight_stay_within_the_bound_of_the_follow() -> None:
    # the bound follow uses, in the batches its readers hand over: a stalled loop holds
    # at most _QUEUE_MAX records (about 1 KB each), not thousands of full batches
    inbox = Inbox(_QUEUE_MAX)
    events = _batches(_BATCH)
    taken = _fill(inbox, events)
    assert 0 < taken < len(events)
    assert inbox.records <= _QUEUE_MAX
    assert inbox.records > _QUEUE_MAX - _BATCH  # ... and the room is used
    assert taken * _BATCH == inbox.records


def test_the_loop_reading_makes_room_and_gets_every_event_in_order() -> None:
    inbox = Inbox(1000)
    events = _batches(300)
    first = _fill(inbox, events)
    assert first == 3 and inbox.records == 900
    got = inbox.get(timeout=0)
    assert got is events[0] and inbox.records == 600
    assert inbox.put(events[first], timeout=0)  # room for one more batch
    assert not inbox.put(events[first + 1], timeout=0)
    out = []
    while (e := inbox.get(timeout=0)) is not None:
        out.append(e)
    assert out == events[1:first + 1] and inbox.records == 0 and inbox.empty()


def test_a_host_going_down_is_never_held_back_by_records_and_a_big_batch_passes_alone(
) -> None:
    inbox = Inbox(500)
    big, small = _batches(600)[:2]
    assert inbox.put(big, timeout=0)  # larger than the bound: passes when nothing is in flight
    assert not inbox.put(small, timeout=0)
    down = Event("mx1", down=HostError("mx1", Stage.READ, "connection lost"))
    assert inbox.put(down, timeout=0)  # said at once, whatever is in flight
    assert [inbox.get(timeout=0), inbox.get(timeout=0), inbox.get(timeout=0)] == \
        [big, down, None]
    assert inbox.put(small, timeout=0)

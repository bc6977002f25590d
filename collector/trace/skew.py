"""How far apart two hosts' clocks are, read from the hand-offs between them (pure).

When a fleet host relays a message to the next (``via smtp``), the sender logs ``status=sent``
when the transfer ended, with ``delays=a/b/c/d`` (``d``: the transmission); the receiver's
smtpd logged ``client=`` when the message began to arrive, about ``d`` seconds earlier. So
``client= time - (sent time - d)`` is the receiver's clock minus the sender's, plus the little
time between MAIL FROM and the start of the data. The median over every hand-off of a pair of
hosts is the estimate; BSD stamps have whole seconds, so a second either way is noise.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..models import HopVia, Trace

#: A skew this large (seconds) is worth a note: beyond the stamps' one-second grain.
NOTABLE = 2.0

__all__ = ["NOTABLE", "Skew", "clock_skews"]


@dataclass(frozen=True, slots=True)
class Skew:
    """``receiver``'s clock minus ``sender``'s, in seconds (median of ``samples``)."""

    sender: str
    receiver: str
    seconds: float
    samples: int

    def __str__(self) -> str:
        side = "ahead of" if self.seconds > 0 else "behind"
        return (f"the clock of {self.receiver} is {abs(self.seconds):.1f} s {side} {self.sender}'s "
                f"(median of {self.samples} hand-off{'s' * (self.samples != 1)})")


def _traces(traces: Iterable[Trace]) -> Iterator[Trace]:
    for t in traces:
        yield t
        yield from _traces(t.notifications)


def _xmit(delays: str | None) -> float | None:
    parts = (delays or "").split("/")
    if len(parts) != 4:
        return None
    try:
        return float(parts[3])
    except ValueError:
        return None


def clock_skews(traces: Iterable[Trace]) -> list[Skew]:
    """One estimate per (sender, receiver) pair of fleet hosts that handed messages over."""
    samples: dict[tuple[str, str], list[float]] = {}
    for trace in _traces(traces):
        for hop in trace.hops:
            if hop.via is not HopVia.SMTP or hop.parent_index is None or hop.handoff is None:
                continue
            parent = trace.hops[hop.parent_index]
            xmit = _xmit(hop.handoff.delays)
            if parent.host == hop.host or xmit is None:
                continue
            began = hop.handoff.time.timestamp() - xmit
            samples.setdefault((parent.host, hop.host), []).append(hop.time.timestamp() - began)
    return [
        Skew(sender, receiver, round(statistics.median(values), 3), len(values))
        for (sender, receiver), values in sorted(samples.items())
    ]

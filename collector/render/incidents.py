"""``collector incidents`` output: a table that fits the terminal, JSON, NDJSON and CSV.

The table gives each incident two or three lines: its counts and where it happened, then its
reply template, then the queue IDs to ``trace``. Every cell is a server's (or an SMTP
client's) text and is shown through ``safe.printable``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import IO, Any

from collector.incidents.group import Incident
from collector.render.rows import HostReport, host_dict, iso, short_time
from collector.render.safe import CsvWriter, printable, write_json, write_ndjson
from collector.render.text import clip, fit_widths

#: CSV columns (one row per incident), also the flat keys of its JSON object.
INCIDENT_FIELDS = (
    "kind", "direction", "peer", "dsn", "messages", "recipients", "events", "recovered",
    "first_seen", "last_seen", "hosts", "change", "baseline_messages", "baseline_recipients",
    "reply_template", "reply", "samples", "relays",
)


def incident_dict(i: Incident) -> dict[str, Any]:
    return {
        "kind": i.kind.value,
        "direction": i.direction.value,
        "peer": i.peer,
        "dsn": i.dsn,
        "messages": i.messages,
        "recipients": i.recipients,
        "events": i.events,
        "recovered": i.recovered,
        "first_seen": iso(i.first),
        "last_seen": iso(i.last),
        "hosts": [
            {"host": h.host, "first_seen": iso(h.first), "last_seen": iso(h.last),
             "events": h.events}
            for h in i.hosts
        ],
        "change": i.change,
        "baseline": None if i.change is None else {
            "messages": i.baseline_messages, "recipients": i.baseline_recipients},
        "reply_template": i.template,
        "reply": i.response,
        "samples": list(i.samples),
        "relays": list(i.relays),
    }


def render_incidents_json(
    incidents: Sequence[Incident],
    hosts: Sequence[HostReport],
    out: IO[str],
    *,
    window: tuple[datetime | None, datetime | None],
    compared: tuple[datetime | None, datetime | None] | None,
    verdict: str,
) -> None:
    write_json({
        "since": iso(window[0]),
        "until": iso(window[1]),
        "compare": None if compared is None else {
            "since": iso(compared[0]), "until": iso(compared[1])},
        "incidents": [incident_dict(i) for i in incidents],
        "hosts": [host_dict(h) for h in hosts],
        "verdict": verdict,
    }, out)


def render_incidents_ndjson(incidents: Sequence[Incident], out: IO[str]) -> None:
    write_ndjson((incident_dict(i) for i in incidents), out)


def render_incidents_csv(incidents: Sequence[Incident], out: IO[str]) -> None:
    writer = CsvWriter(out)
    writer.writerow(INCIDENT_FIELDS)
    for i in incidents:
        d = incident_dict(i)
        d["hosts"] = ",".join(h["host"] for h in d["hosts"])
        d["samples"] = " ".join(d["samples"])
        d["relays"] = " ".join(d["relays"])
        d["baseline_messages"] = i.baseline_messages
        d["baseline_recipients"] = i.baseline_recipients
        writer.writerow(["" if d[k] is None else d[k] for k in INCIDENT_FIELDS])


_HEAD = ("msgs", "rcpts", "status", "direction", "next hop / domain", "dsn", "hosts",
         "last seen")
_INDENT = 14  # where the reply and the sample lines start: under "status"


def render_incidents_table(
    incidents: Sequence[Incident], out: IO[str], *, width: int = 100, compared: bool = False,
    proven: bool = True, limit: int = 0,
) -> None:
    """Two or three lines an incident, within ``width`` columns (see the module docstring);
    the ``limit`` largest (0: all), then a line that says how many more there are.

    With none, one line says so: that there were none (``proven``: every host's logs cover
    the window), or only that none was seen in what could be read (stderr says what not).
    """
    if not incidents:
        out.write("no deferrals, bounces, expiries or refusals in the window\n" if proven else
                  "no deferrals, bounces, expiries or refusals in what could be read\n")
        return
    head = list(_HEAD) + (["change"] if compared else [])
    shown = incidents[:limit] if limit else incidents
    cells = [
        [str(i.messages), str(i.recipients), i.kind.value, i.direction.value,
         printable(i.peer), printable(i.dsn or "-"),
         printable(" ".join(h.host for h in i.hosts)),
         short_time(i.last)] + ([i.change or ""] if compared else [])
        for i in shown
    ]
    natural = [max(len(head[c]), *(len(row[c]) for row in cells)) for c in range(len(head))]
    # On a narrow screen the names, then the words, are cut (counts never are).
    least = (4, 5, 6, 4, 6, 5, 4, 5, 4)
    minimum = [min(natural[c], least[c]) for c in range(len(head))]
    widths = fit_widths(natural, minimum, (6, 4, 8, 7, 3, 2, 5), width)
    right = {0, 1}

    def line(values: Sequence[str]) -> str:
        parts = [
            clip(v, w).rjust(w) if c in right else clip(v, w).ljust(w)
            for c, (v, w) in enumerate(zip(values, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    out.write(line(head) + "\n")
    room = max(20, width - _INDENT)
    for i, row in zip(shown, cells, strict=True):
        out.write(line(row) + "\n")
        out.write(" " * _INDENT + clip(printable(i.template), room) + "\n")
        if i.samples:
            names = "trace " + " ".join(printable(s) for s in i.samples)
            out.write(" " * _INDENT + clip(names, room) + "\n")
    rest = incidents[len(shown):]
    if rest:
        out.write(f"... and {len(rest)} more incidents, smaller ones "
                  f"({sum(i.events for i in rest)} lines); --limit 0 shows every one\n")

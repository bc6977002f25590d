"""``summary`` and ``hosts`` as JSON, NDJSON and CSV: one object (or row) per host.

NDJSON lines are exactly the elements of the JSON ``hosts`` list; CSV flattens them into the
columns a spreadsheet wants (lists joined with ``,``, nested sources one row each). Both are
data, written by ``safe.write_json``/``write_ndjson`` and ``safe.CsvWriter`` exactly as logged;
the tables are in ``rows`` (shown through ``safe.printable``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import IO, Any

from collector.render.rows import HostReport, host_dict, stats_dict
from collector.render.safe import CsvWriter, write_json
from collector.render.safe import write_ndjson as write_ndjson  # the CLI's NDJSON writer

#: The summary CSV columns: the host, whether it answered, then the counts.
SUMMARY_FIELDS = (
    "host", "ok", "error", "lines", "unparsed",
    "messages", "sent", "deferred", "bounced", "expired", "discarded", "rejected",
)  # fmt: skip


def summary_dicts(hosts: Sequence[HostReport]) -> list[dict[str, Any]]:
    return [dict(host_dict(h), summary=dict(h.summary)) for h in hosts]


def render_summary_json(hosts: Sequence[HostReport], out: IO[str]) -> None:
    write_json({"hosts": summary_dicts(hosts)}, out)


def render_summary_ndjson(hosts: Sequence[HostReport], out: IO[str]) -> None:
    write_ndjson(summary_dicts(hosts), out)


def render_summary_csv(hosts: Sequence[HostReport], out: IO[str]) -> None:
    writer = CsvWriter(out)
    writer.writerow(SUMMARY_FIELDS)
    for h in hosts:
        stats = stats_dict(h.stats) or {}
        error = f"{h.error.where}: {h.error.message}" if h.error is not None else ""
        counts = [h.summary.get(k, 0) if h.ok else "" for k in SUMMARY_FIELDS[5:]]
        writer.writerow(
            [h.name, "yes" if h.ok else "no", error, stats.get("lines", ""),
             stats.get("unknown", ""), *counts]
        )


def render_hosts_csv(payload: Sequence[Mapping[str, Any]], out: IO[str]) -> None:
    """``hosts`` as CSV: the inventory's keys, or with ``--check`` one row per log source."""
    rows = [_flat(h) for h in payload]
    if any("sources" in h for h in payload):
        rows = [
            dict(_flat({k: v for k, v in h.items() if k not in ("sources", "notes")}),
                 **{f"source_{k}": v for k, v in _flat(s).items()})
            for h in payload
            for s in (h.get("sources") or [{}])
        ]
    fields: list[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)
    writer = CsvWriter(out)
    writer.writerow(fields)
    for row in rows:
        writer.writerow([row.get(k, "") for k in fields])


def _flat(item: Mapping[str, Any]) -> dict[str, Any]:
    """One CSV row: lists joined with ``,``, a nested error as ``stage: message``, None empty."""
    out: dict[str, Any] = {}
    for key, value in item.items():
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, dict) and key == "error":
            value = f"{value.get('stage')}: {value.get('message')}"
        elif isinstance(value, bool):
            value = "yes" if value else "no"
        out[key] = "" if value is None else value
    return out

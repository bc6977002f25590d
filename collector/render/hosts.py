"""``collector hosts``: the inventory's hosts as rows (no connection)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from collector.models import Host, TransportKind


def list_rows(hosts: Sequence[Host]) -> tuple[list[str], list[list[str]], list[dict[str, Any]]]:
    headers = ["name", "transport", "address", "user", "sudo", "groups", "timezone"]
    rows: list[list[str]] = []
    payload: list[dict[str, Any]] = []
    for h in hosts:
        where = (h.root or "") if h.transport is TransportKind.LOCAL else _address(h)
        if h.via is not None:
            where = f"via {h.via}"  # read on its log host, never connected to
        rows.append(
            [
                h.name,
                h.transport.value,
                where,
                h.user or "-",
                "yes" if h.sudo else "no",
                ",".join(h.groups) or "-",
                h.timezone or "local",
            ]
        )
        payload.append(
            {
                "name": h.name,
                "transport": h.transport.value,
                "address": h.address,
                "port": h.port,
                "user": h.user,
                "sudo": h.sudo,
                "groups": list(h.groups),
                "aliases": list(h.aliases),
                "timezone": h.timezone,
                "root": h.root,
                "proxy_jump": h.proxy_jump,
                "source": h.source.value,
                "logs": list(h.logs),
            }
            # only on log hosts and the hosts they carry: other hosts' objects are unchanged
            | ({"collects": list(h.collects)} if h.collects else {})
            | ({"via": h.via} if h.via is not None else {})
        )
    return headers, rows, payload


def _address(h: Host) -> str:
    text = h.address or h.name
    if h.port:
        text += f":{h.port}"
    if h.proxy_jump:
        text += f" via {h.proxy_jump}"
    return text

"""A directory written by ``collector fetch`` read back as a fleet of local hosts."""

from __future__ import annotations

import json
from pathlib import Path

from collector.errors import InventoryError
from collector.inventory.load import HOST_NAME_RULE, valid_host_name
from collector.models import Host, HostError, Inventory, Stage, TransportKind

#: Written by ``collector fetch`` at the top of its destination: the hosts and their zones.
FLEET_MANIFEST = "collector-fleet.json"
#: Written by ``collector fetch`` at the top of each host's copy (same name as in pipeline).
HOST_MANIFEST = "collector-manifest.json"


def _fetched_files(root: Path) -> tuple[str, ...]:
    """The log files a host manifest lists (explicit logs skip discovery), else none."""
    path = root / HOST_MANIFEST
    if not path.is_file():
        return ()
    try:
        files = json.loads(path.read_text(encoding="utf-8")).get("files", {})
        return tuple(sorted(str(k) for k in files))
    except (ValueError, AttributeError):
        return ()


def offline_inventory(directory: Path) -> Inventory:
    """Every sub-directory of ``directory`` is one host's root (``DIR/<host>/var/log/...``)."""
    if not directory.is_dir():
        raise InventoryError(str(directory), "not a directory written by 'collector fetch'")
    zones: dict[str, str] = {}
    aliases: dict[str, tuple[str, ...]] = {}
    order: list[str] = []
    manifest = directory / FLEET_MANIFEST
    if manifest.is_file():
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
            for h in data.get("hosts", []):
                order.append(str(h["name"]))
                if h.get("timezone"):
                    zones[str(h["name"])] = str(h["timezone"])
                aliases[str(h["name"])] = tuple(str(a) for a in h.get("aliases", []))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InventoryError(str(manifest), f"unreadable manifest: {exc}") from None
    names = [p.name for p in sorted(directory.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    for name in names:
        entry = directory / name
        if entry.is_symlink():
            # A case folder holds copies; a link (to "/", say) would make this machine a host.
            raise InventoryError(str(entry), "is a symbolic link, not a fetched host's copy")
        if not valid_host_name(name):
            raise InventoryError(str(entry), f"is not a host's directory: {HOST_NAME_RULE} expected")
    names.sort(key=lambda n: (order.index(n) if n in order else len(order), n))
    if not names:
        raise InventoryError(str(directory), "no host directories in it")
    collects, carried = _log_hosts(manifest, names)
    hosts = tuple(
        Host(
            name=n,
            transport=TransportKind.LOCAL,
            root=str((directory / n).resolve()),
            timezone=zones.get(n),
            aliases=aliases.get(n, ()),
            logs=_fetched_files(directory / n),
            collects=collects.get(n, ()),
        )
        for n in names
    ) + tuple(
        Host(name=c, transport=TransportKind.LOCAL, timezone=zones.get(via), via=via,
             aliases=aliases.get(c, ()))
        for c, via in carried.items()
    )  # fmt: skip
    return Inventory(path=str(directory), hosts=hosts)


def _log_hosts(
    manifest: Path, names: list[str]
) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    """What the fetch said of log hosts: each one's ``collects``, and each carried host's
    log host (only hosts whose log host's copy is here, with valid names)."""
    collects: dict[str, tuple[str, ...]] = {}
    carried: dict[str, str] = {}
    if not manifest.is_file():
        return collects, carried
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        entries = [h for h in data.get("hosts", []) if isinstance(h, dict)]
    except (ValueError, AttributeError, OSError):
        return collects, carried
    for h in entries:
        name, via = str(h.get("name")), h.get("via")
        if isinstance(via, str) and via in names and valid_host_name(name) and name not in names:
            carried.setdefault(name, via)
    for h in entries:
        name, wanted = str(h.get("name")), h.get("collects")
        if name in names and isinstance(wanted, list):
            mine = tuple(c for c, via in carried.items() if via == name)
            collects[name] = ("*",) if "*" in wanted else mine
    return collects, carried


def failed_at_fetch(directory: Path) -> tuple[HostError, ...]:
    """The hosts the fetch that wrote ``directory`` could not copy, with the reason it gave.

    Their lines are not in the case: an offline search must say so, as the fetch did.
    """
    try:
        data = json.loads((directory / FLEET_MANIFEST).read_text(encoding="utf-8"))
        hosts = [h for h in data.get("hosts", []) if not h.get("ok", True)]
    except (OSError, ValueError, AttributeError, TypeError):
        return ()
    out: list[HostError] = []
    for h in hosts:
        try:
            stage = Stage(h.get("stage") or Stage.READ)
        except ValueError:
            stage = Stage.READ
        message = str(h.get("message") or h.get("error") or "failed")
        out.append(HostError(str(h.get("name")), stage, f"not in this copy: {message}"))
    return tuple(out)

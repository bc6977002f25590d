"""fetch: copies of matching slices (or whole logs) that search and trace read back offline."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from lab_fleet import EXPECTED, HOSTS, LAB, MTIMES, SCENARIOS, build_lab_fleet
from support import run

from collector.cli.app import ExitCode
from collector.inventory.offline import FLEET_MANIFEST, HOST_MANIFEST, offline_inventory


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_lab_fleet(tmp_path_factory.mktemp("fleet"))


def results(*args: str | Path) -> list[dict[str, object]]:
    result = run(*args, "-f", "json")
    assert result.exit_code in (0, 1), result.stderr
    rows: list[dict[str, object]] = json.loads(result.stdout)["results"]
    return rows


@pytest.mark.parametrize(
    "selector",
    [
        ("--to", "bob@example.test"),
        ("--from", "alice@example.test"),
        ("--to", "victim@example.net"),  # a NOQUEUE reject only
        ("--status", "bounced"),
    ],
)
def test_fetch_slices_then_search_offline_gives_the_same_rows(
    inventory: Path, tmp_path: Path, selector: tuple[str, str]
) -> None:
    dest = tmp_path / "case"
    result = run("fetch", "--dest", dest, *selector, "-i", inventory)
    assert result.exit_code == ExitCode.FOUND, result.stderr
    lines = result.stdout.splitlines()
    assert [x.split(":")[0] for x in lines] == list(HOSTS)
    for line in lines:
        name = line.split(":")[0]
        assert line.endswith(f"-> {dest / name}")
    live = results("search", "-i", inventory, *selector)
    offline = results("search", "--offline", dest, *selector)
    assert live
    assert offline == live
    # the copy holds only what the search needed
    for name in HOSTS:
        log = EXPECTED["hosts"][name]["log"]["path"].lstrip("/")
        copied = (dest / name / log).read_bytes()
        original = (LAB / name / log).read_bytes()
        assert len(copied) < len(original)
        assert set(copied.splitlines()) <= set(original.splitlines())


def test_fetch_writes_manifests(inventory: Path, tmp_path: Path) -> None:
    dest = tmp_path / "case"
    assert run("fetch", "--dest", dest, "--to", "bob@example.test", "-i", inventory).exit_code == 0
    fleet = json.loads((dest / FLEET_MANIFEST).read_text())
    assert [h["name"] for h in fleet["hosts"]] == list(HOSTS)
    for h in fleet["hosts"]:
        info = EXPECTED["hosts"][h["name"]]
        assert h["ok"] is True and h["error"] is None
        assert h["timezone"] == "UTC"
        assert h["aliases"] == [info["fqdn"], info["ip"]]
        assert h["files"] == [info["log"]["path"]]
        manifest = json.loads((dest / h["name"] / HOST_MANIFEST).read_text())
        assert manifest["host"] == h["name"]
        (entry,) = manifest["files"].values()
        assert entry["mtime"] == MTIMES[h["name"] + info["log"]["path"]]
        assert entry["slice"] is True
        assert entry["size"] == (dest / h["name"] / info["log"]["path"].lstrip("/")).stat().st_size
    # offline_inventory reads it back: hosts in the fleet's order, their zones and aliases
    inv = offline_inventory(dest)
    assert [h.name for h in inv.hosts] == list(HOSTS)
    assert all(h.timezone == "UTC" for h in inv.hosts)
    mx1 = EXPECTED["hosts"]["mx1"]
    assert inv.hosts[0].aliases == (mx1["fqdn"], mx1["ip"])


def test_fetch_all_copies_whole_files_with_their_mtimes(inventory: Path, tmp_path: Path) -> None:
    dest = tmp_path / "all"
    result = run("fetch", "--dest", dest, "--all", "-i", inventory)
    assert result.exit_code == ExitCode.FOUND, result.stderr
    for name in HOSTS:
        path = EXPECTED["hosts"][name]["log"]["path"]
        copy = dest / name / path.lstrip("/")
        assert copy.read_bytes() == (LAB / name / path.lstrip("/")).read_bytes()
        assert os.stat(copy).st_mtime == pytest.approx(MTIMES[name + path], abs=1e-3)
        manifest = json.loads((dest / name / HOST_MANIFEST).read_text())
        assert manifest["files"][path]["slice"] is False
        assert manifest["files"][path]["size"] == copy.stat().st_size
    # a whole copy answers any search like the hosts themselves
    for selector in (("--to", "dave@example.net"), ("--status", "rejected")):
        assert results("search", "--offline", dest, *selector) == results(
            "search", "-i", inventory, *selector
        )


def test_trace_offline_on_a_whole_copy(inventory: Path, tmp_path: Path) -> None:
    dest = tmp_path / "all"
    assert run("fetch", "--dest", dest, "--all", "-i", inventory).exit_code == 0
    mid = SCENARIOS["single"]["message_id"]
    live = run("trace", "-i", inventory, mid, "-f", "json")
    offline = run("trace", "--offline", dest, mid, "-f", "json")
    assert live.exit_code == offline.exit_code == 0
    assert json.loads(offline.stdout)["traces"] == json.loads(live.stdout)["traces"]


def test_fetch_needs_a_selector(inventory: Path, tmp_path: Path) -> None:
    result = run("fetch", "--dest", tmp_path / "d", "-i", inventory)
    assert result.exit_code == ExitCode.ERROR
    assert result.stderr.startswith("collector: give a selector")
    assert not (tmp_path / "d").exists()


def test_fetch_with_a_dead_host_is_partial(inventory: Path, tmp_path: Path) -> None:
    text = inventory.read_text().replace('root = "', f'root = "{inventory.parent}/')
    text += '\n[[hosts]]\nname = "ghost"\nroot = "ghost-root"\n'
    inv = tmp_path / "inventory.toml"
    inv.write_text(text)
    dest = tmp_path / "case"
    result = run("fetch", "--dest", dest, "--to", "bob@example.test", "-i", inv)
    assert result.exit_code == ExitCode.PARTIAL
    assert result.stderr.startswith("collector: ghost: connect: ")
    fleet = json.loads((dest / FLEET_MANIFEST).read_text())
    ghost = fleet["hosts"][-1]
    assert ghost["name"] == "ghost" and ghost["ok"] is False
    assert "connect" in ghost["error"]
    assert not (dest / "ghost").exists()


def test_offline_needs_a_fetch_directory(tmp_path: Path) -> None:
    result = run("search", "--offline", tmp_path / "nothing", "--to", "bob@example.test")
    assert result.exit_code == ExitCode.ERROR
    assert result.stderr.count("\n") == 1 and "not a directory" in result.stderr
    (tmp_path / "empty").mkdir()
    result = run("search", "--offline", tmp_path / "empty", "--to", "bob@example.test")
    assert result.exit_code == ExitCode.ERROR
    assert "no host directories" in result.stderr

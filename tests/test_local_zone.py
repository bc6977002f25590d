"""This machine's zone (hosts without ``timezone``) must pickle: whole-log reads parse in
worker processes, and a plain ``search --since 2h`` over several hosts is one."""

from __future__ import annotations

import pickle
import re
from datetime import datetime
from pathlib import Path

import pytest
from lab_fleet import build_lab_fleet
from support import run

from collector.inventory.load import _FileZone, _zone_name, host_zone
from collector.models import Host

BERLIN = Path("/usr/share/zoneinfo/Europe/Berlin")


def test_the_local_zone_without_tz_pickles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TZ", raising=False)
    zone = host_zone(Host("mx1"))
    again = pickle.loads(pickle.dumps(zone))
    when = datetime(2026, 7, 1, 12)
    assert when.replace(tzinfo=again).utcoffset() == when.replace(tzinfo=zone).utcoffset()


def test_a_zone_read_from_an_unnamed_file_pickles_with_its_rules() -> None:
    zone = pickle.loads(pickle.dumps(_FileZone.of(BERLIN.read_bytes())))
    assert datetime(2026, 7, 1, tzinfo=zone).utcoffset().total_seconds() == 7200  # type: ignore[union-attr]
    assert datetime(2026, 1, 1, tzinfo=zone).utcoffset().total_seconds() == 3600  # type: ignore[union-attr]


def test_a_link_into_zoneinfo_names_its_zone(tmp_path: Path) -> None:
    link = tmp_path / "localtime"
    link.symlink_to(BERLIN)
    assert str(_zone_name(str(link))) == "Europe/Berlin"


def test_search_since_alone_over_several_hosts_without_timezone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inventory = build_lab_fleet(tmp_path)
    text = inventory.read_text()
    inventory.write_text(re.sub(r'(?m)^timezone = "UTC"\n', "", text))
    monkeypatch.delenv("TZ", raising=False)
    result = run("search", "-i", inventory, "--since", "2000-01-01", "-f", "json")
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output

"""The lab's central mode: the log host holds exactly what every host logged.

Each host writes its own log and forwards the same lines over TCP to a second rsyslogd; the
log host's combined files, its per-host files and the journal files built from what it
received must each give, per host, that host's own lines: none lost, none doubled, in order,
at the same times. Checked on a live quick run (conftest.py, shared with test_postfix_lab.py)
and on the committed output tests/fixtures/lab-central (its journal files are built here: they
are 8 MB each and not committed).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from .central_views import (
    journal_lines,
    loghost_files,
    loghost_journal_dir,
    own_lines,
    same_instant,
)
from .postfix_lab import (
    ALL_HOST_NAMES,
    LOGHOST_COMBINED,
    LOGHOST_COMBINED_ISO,
    LOGHOST_PER_HOST,
    STATE_DIR,
    LabResult,
    write_remote_journals,
)

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "lab-central"


@pytest.fixture(scope="module",
                params=[pytest.param("live-quick", marks=pytest.mark.lab), "committed"])
def central(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A central-mode output directory: the live quick run's, or a copy of the committed one
    with its journal files built from the log host's lines."""
    if request.param == "live-quick":
        lab: LabResult = request.getfixturevalue("central_quick_lab")
        return lab.out
    copy = tmp_path_factory.mktemp("central") / "lab-central"
    shutil.copytree(FIXTURE, copy)
    write_remote_journals(copy / "loghost")
    return copy


def test_every_host_logged_through_syslog_only(central: Path) -> None:
    expected = json.loads((central / "expected.json").read_text())
    assert expected["lab"]["central"] is True
    assert {h["log"]["via"] for h in expected["hosts"].values()} == {"syslog"}
    for name in ALL_HOST_NAMES:
        main_cf = (central / name / "etc/postfix/main.cf").read_text()
        settings = dict(line.partition(" =")[::2] for line in main_cf.splitlines()
                        if not line.startswith("#"))
        assert settings.get("maillog_file", "").strip() == "", name
        assert settings["syslog_facility"].strip().startswith("local"), name
    own = own_lines(central)
    assert set(own) == set(ALL_HOST_NAMES)
    for name, lines in own.items():
        assert len(lines) > 20, name
        assert {line.host for line in lines} == {name}
        # The lab stops the instances before it drains the logs, and waits for each master
        # process itself (`postfix status` would log a line of its own).
        texts = [line.text for line in lines]
        assert any(t.endswith(": stopping the Postfix mail system") for t in texts), name
        assert not any("mail system is not running" in t for t in texts), name


@pytest.mark.parametrize("layout", [LOGHOST_COMBINED, LOGHOST_COMBINED_ISO])
def test_combined_files_hold_every_hosts_lines_once(central: Path,
                                                    layout: str) -> None:
    own = own_lines(central)
    received = loghost_files(central)[layout]
    assert set(received) == set(own)  # no line under another name (localhost, an address)
    for name, lines in own.items():
        assert [line.text for line in received[name]] == [line.text for line in lines], name


def test_times_survive_the_forwarding(central: Path) -> None:
    own = own_lines(central)
    files = loghost_files(central)
    bsd, iso = files[LOGHOST_COMBINED], files[LOGHOST_COMBINED_ISO]
    for name, lines in own.items():
        for mine, as_iso, as_bsd in zip(lines, iso[name], bsd[name], strict=True):
            assert same_instant(as_iso.stamp, mine.stamp), (name, mine, as_iso)
            assert same_instant(as_iso.stamp, as_bsd.stamp), (name, as_iso, as_bsd)
            if mine.stamp[:1].isdigit():  # an RFC 3339 host: the exact same microseconds
                assert as_iso.stamp == mine.stamp


def test_per_host_files_hold_exactly_their_hosts_lines(central: Path) -> None:
    files = loghost_files(central)
    combined = files[LOGHOST_COMBINED]
    remote = sorted(p.name for p in (central / "loghost/var/log/remote").iterdir())
    assert remote == sorted(ALL_HOST_NAMES)
    for name in ALL_HOST_NAMES:
        assert files[LOGHOST_PER_HOST.format(host=name)] == {name: combined[name]}


def test_journal_files_give_each_hosts_lines_under_its_hostname(
        central: Path) -> None:
    journal_dir = loghost_journal_dir(central)
    assert sorted(p.name for p in journal_dir.iterdir()) == sorted(
        f"remote-{name}.journal" for name in ALL_HOST_NAMES)
    own = own_lines(central)
    iso = loghost_files(central)[LOGHOST_COMBINED_ISO]
    journal = journal_lines(journal_dir)
    assert set(journal) == set(own)
    for name, lines in own.items():
        assert [line.text for line in journal[name]] == [line.text for line in lines], name
        for entry, received in zip(journal[name], iso[name], strict=True):
            assert same_instant(received.stamp, entry.stamp), (name, entry, received)


def test_mtimes_cover_every_syslog_file(central: Path) -> None:
    mtimes = json.loads((central / "mtimes.json").read_text())
    files = {str(p.relative_to(central)) for p in central.rglob("*")
             if p.is_file() and "/var/log/" in f"/{p.relative_to(central)}"
             and p.suffix != ".journal"}
    assert set(mtimes) == files


@pytest.mark.lab
def test_both_rsyslogds_are_gone(central_quick_lab: LabResult) -> None:
    assert not STATE_DIR.exists()
    ours = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"rsyslogd" in cmdline and str(STATE_DIR).encode() in cmdline:
                ours.append((proc.name, cmdline))
    assert ours == []
    assert not os.path.exists("/dev/log")  # the lab's own socket, it needs /dev/log free

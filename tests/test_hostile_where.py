"""A directory host (an offline case, `transport = "local"` with a root) reads only inside its
root: never this machine's journal, whatever it finds or lacks."""

from __future__ import annotations

import os
import shlex
from datetime import UTC, datetime
from pathlib import Path

import pytest

from collector.models import Host, Query, TransportKind
from collector.search.host import search_host
from collector.transport.local import LocalSession

NOW = datetime(2026, 12, 1, tzinfo=UTC)
LINE = ("2026-11-29T17:32:44.100000+00:00 mx9 postfix/qmgr[10]: AB12C34D5E: "
        "from=<admin@this-machine.example>, size=100, nrcpt=1 (queue active)")


@pytest.fixture
def machine_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A journalctl on PATH standing for this machine's journal: it records its words and
    prints a line of this machine's mail."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    script = bin_dir / "journalctl"
    script.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$*" >> {shlex.quote(str(calls))}\n'
        f"printf '%s\\n' {shlex.quote(LINE)}\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return calls


def directory_host(root: Path) -> Host:
    (root / "etc" / "postfix").mkdir(parents=True)
    (root / "etc" / "postfix" / "main.cf").write_text("")
    return Host("mx9", transport=TransportKind.LOCAL, root=str(root), timezone="UTC")


def test_no_log_and_no_journal_reads_nothing_of_this_machine(
    tmp_path: Path, machine_journal: Path
) -> None:
    host = directory_host(tmp_path / "case" / "mx9")
    result = search_host(LocalSession(host), Query(senders=("admin@this-machine.example",)),
                         UTC, NOW)
    assert not machine_journal.exists(), "this machine's journalctl was run"
    assert result.log.groups == ()
    assert result.sources == ()
    assert "no journal directory in this directory host: no journal is read" in result.notes


def test_a_directory_hosts_journal_is_read_from_its_own_root(
    tmp_path: Path, machine_journal: Path
) -> None:
    root = tmp_path / "case" / "mx9"
    host = directory_host(root)
    (root / "var" / "log" / "journal").mkdir(parents=True)
    search_host(LocalSession(host), Query(senders=("admin@this-machine.example",)), UTC, NOW)
    calls = machine_journal.read_text().splitlines()
    assert calls and all(c.startswith(f"-D {root / 'var' / 'log' / 'journal'} ") for c in calls)

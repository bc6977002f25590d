"""Every command reports the same host problems the same way, and chooses the same exit code.

Runs the real CLI over a copy of the demo fleet (real Postfix logs, local transport).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import DEMO_HOSTS as HOSTS
from support import run

from collector.cli.app import ExitCode


def damage_a_rotation(inventory: Path) -> str:
    """filter1 gets a rotated log cut in half (a damaged gzip); returns its host path."""
    log = inventory.parent / "fleet" / "filter1" / "var" / "log"
    packed = gzip.compress((log / "maillog").read_bytes())
    (log / "maillog.1.gz").write_bytes(packed[: len(packed) // 2])
    return "/var/log/maillog.1.gz"


def test_a_time_window_alone_searches_every_host(demo_fleet: Path) -> None:
    # No fixed string: every line of every host is parsed, in worker processes whose
    # records must come back to the parent (they once did not pickle).
    result = run("search", "-i", demo_fleet, "--since", "2000-01-01", "-f", "json")
    assert result.exit_code == ExitCode.FOUND, result.stderr
    # the demo's logs are a copy of a few minutes: the rest of the window is said not seen
    assert all(": coverage: " in line for line in result.stderr.splitlines()), result.stderr
    payload = json.loads(result.stdout)
    assert {r["host"] for r in payload["results"]} == set(HOSTS)
    assert all(h["ok"] for h in payload["hosts"])
    # the same rows as a search that names every sender it found
    senders = sorted({r["from"] for r in payload["results"] if r["from"]})
    again = run("search", "-i", demo_fleet, "-f", "json", *[a for s in senders for a in ("--from", s)])
    rows = [r for r in payload["results"] if r["from"]]
    assert sorted(map(json.dumps, json.loads(again.stdout)["results"])) == sorted(
        map(json.dumps, rows)
    )


@pytest.mark.parametrize(
    "command",
    [
        ["search", "--from", "alice@example.test"],
        ["summary"],
        ["trace", "--from", "alice@example.test"],
        ["fetch", "--from", "alice@example.test", "--dest", "{dest}"],
        ["fetch", "--all", "--dest", "{dest}"],
    ],
    ids=["search", "summary", "trace", "fetch", "fetch-all"],
)
def test_a_damaged_log_is_the_same_partial_answer_for_every_command(
    demo_fleet: Path, tmp_path: Path, command: list[str]
) -> None:
    path = damage_a_rotation(demo_fleet)
    dest = tmp_path / "case"
    args = [a.replace("{dest}", str(dest)) for a in command]
    result = run(*args, "-i", demo_fleet)
    assert result.exit_code == ExitCode.PARTIAL, (result.stdout, result.stderr)
    assert result.stderr.splitlines() == [
        f"collector: filter1: read: {path} is damaged: lines after the damage are missing"
    ]
    assert "sh -c" not in result.stderr and "set -" not in result.stderr
    if command[0] == "fetch":
        # the rest of the case folder is written, and it remembers what was partial
        for name in HOSTS:
            assert (dest / name / "collector-manifest.json").is_file()
        manifest = json.loads((dest / "filter1" / "collector-manifest.json").read_text())
        assert manifest["unread"] == [{"path": path, "problem": "damaged"}]


def test_summary_writes_every_format_it_accepts(demo_fleet: Path) -> None:
    as_json = json.loads(run("summary", "-i", demo_fleet, "-f", "json").stdout)
    ndjson = run("summary", "-i", demo_fleet, "-f", "ndjson")
    assert ndjson.exit_code == ExitCode.FOUND
    assert [json.loads(line) for line in ndjson.stdout.splitlines()] == as_json["hosts"]
    table = list(csv.DictReader(io.StringIO(run("summary", "-i", demo_fleet, "-f", "csv").stdout)))
    assert [r["host"] for r in table] == list(HOSTS)
    for row, host in zip(table, as_json["hosts"], strict=True):
        assert row["ok"] == "yes" and row["error"] == ""
        assert int(row["lines"]) == host["stats"]["lines"]
        for key in ("messages", "sent", "bounced", "rejected"):
            assert int(row[key]) == host["summary"].get(key, 0)


def test_hosts_writes_every_format_it_accepts(demo_fleet: Path) -> None:
    as_json = json.loads(run("hosts", "-i", demo_fleet, "-f", "json").stdout)["hosts"]
    ndjson = run("hosts", "-i", demo_fleet, "-f", "ndjson").stdout.splitlines()
    assert [json.loads(line) for line in ndjson] == as_json
    rows = list(csv.DictReader(io.StringIO(run("hosts", "-i", demo_fleet, "-f", "csv").stdout)))
    assert [r["name"] for r in rows] == list(HOSTS)
    assert rows[0]["aliases"] == "mx1.example.test,127.0.0.21"
    checked = run("hosts", "--check", "-i", demo_fleet, "-f", "csv")
    assert checked.exit_code == ExitCode.FOUND, checked.stderr
    rows = list(csv.DictReader(io.StringIO(checked.stdout)))
    assert [(r["name"], r["source_path"]) for r in rows] == [
        ("mx1", "/var/log/postfix-mx1.log"),
        ("filter1", "/var/log/maillog"),
        ("mbox1", "/var/log/mail.log"),
        ("out1", "/var/log/postfix-out1.log"),
    ]
    checked = run("hosts", "--check", "-i", demo_fleet, "-f", "ndjson")
    assert [json.loads(x)["name"] for x in checked.stdout.splitlines()] == list(HOSTS)


def test_a_bug_is_an_internal_error_not_a_host_problem(
    demo_fleet: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import collector.search.host as host  # (the search command imports it when it runs)

    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("oops")

    monkeypatch.setattr(host, "search_reader", broken)
    result = run("search", "-i", demo_fleet, "--from", "alice@example.test", "--host", "mx1")
    assert result.exit_code == ExitCode.ERROR
    assert result.stderr.splitlines() == [
        "collector: internal error on mx1: KeyError: 'oops' "
        "(a bug in collector; run with --debug for the traceback)"
    ]
    debug = run("search", "-i", demo_fleet, "--from", "alice@example.test", "--host", "mx1", "--debug")
    assert debug.exit_code == ExitCode.ERROR
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.splitlines()[-1] == "collector: internal error on mx1: KeyError: 'oops'"


def test_a_time_too_far_back_is_a_usage_error(demo_fleet: Path) -> None:
    result = run("search", "-i", demo_fleet, "--since", "99999999999d")
    assert result.exit_code == ExitCode.ERROR
    assert result.stderr == "collector: time '99999999999d' is too far in the past\n"


def complete(words: str, cwd: Path) -> list[str]:
    """What bash completion offers for the command line ``words`` (the real completion code)."""
    env = dict(os.environ, _COLLECTOR_COMPLETE="complete_bash", COMP_WORDS=words,
               COMP_CWORD=str(len(words.split()) - (0 if words.endswith(" ") else 1)))
    env.pop("COLLECTOR_INVENTORY", None)
    out = subprocess.run(
        [sys.executable, "-c", "import sys; sys.argv[0] = 'collector'; from collector.cli.app import main; main()"],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False,
    )
    return out.stdout.split()


def test_host_and_group_names_complete_from_the_inventory(demo_fleet: Path, tmp_path: Path) -> None:
    text = demo_fleet.read_text() + '\n[groups.inbound]\ntimezone = "UTC"\n[groups.relays]\ntimezone = "UTC"\n'
    demo_fleet.write_text(text)
    assert complete(f"collector search -i {demo_fleet} --host ", tmp_path) == [
        "mx1", "mx1.example.test", "127.0.0.21", "filter1", "filter1.example.test",
        "127.0.0.22", "mbox1", "mbox1.example.test", "127.0.0.23", "out1",
        "out1.example.test", "127.0.0.24",
    ]
    assert complete(f"collector trace -i {demo_fleet} --host m", tmp_path) == [
        "mx1", "mx1.example.test", "mbox1", "mbox1.example.test"
    ]
    assert complete(f"collector summary -i {demo_fleet} --group r", tmp_path) == ["relays"]
    # ./inventory.toml is found as for any command; no inventory completes nothing
    assert complete("collector hosts --host o", demo_fleet.parent) == ["out1", "out1.example.test"]
    assert complete("collector hosts --host o", tmp_path) == []


def test_completion_can_be_installed() -> None:
    result = run("--help")
    assert "--install-completion" in result.stdout
    assert "--show-completion" in result.stdout


def test_a_closed_pipe_ends_quietly(demo_fleet: Path) -> None:
    # `collector search ... | head -1`: no error, no traceback. The output (~270 kB) is
    # larger than a pipe holds, so collector is still writing when the reader goes.
    cmd = [sys.executable, "-m", "collector", "search", "-i", str(demo_fleet), "--since", "2000-01-01",
           "-f", "json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()
    assert proc.wait(timeout=60) == ExitCode.FOUND
    said = proc.stderr.read().decode()
    assert all(": coverage: " in line for line in said.splitlines()), said

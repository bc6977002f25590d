"""The command line, through typer's CliRunner, on the Postfix lab's fleet (local transport).

The fleet is the four lab hosts copied to a temporary directory with their manifests (what
scripts/build_demo.py makes of them); expected.json says what was sent and each recipient's
intended fate.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from lab_fleet import EXPECTED, HOSTS, SCENARIOS, build_lab_fleet
from support import run
from typer.testing import Result

from collector.cli.app import ExitCode
from collector.render.rows import ROW_FIELDS

HOST_FIELDS = ["name", "ok", "error", "sources", "notes", "stats", "coverage"]
DEMO = Path(__file__).resolve().parent.parent / "collector" / "demo" / "inventory.toml"


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_lab_fleet(tmp_path_factory.mktemp("fleet"))


def assert_one_error_line(result: Result, *parts: str) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("collector: ")
    assert "Traceback" not in result.output + result.stderr
    for part in parts:
        assert part in lines[0]
    return lines[0]


# --------------------------------------------------------------------------- search


def test_search_json_shape(inventory: Path) -> None:
    s = SCENARIOS["multi_split"]
    result = run("search", "-i", inventory, "--to", "bob@example.test", "--format", "json")
    assert result.exit_code == ExitCode.FOUND, result.stderr
    assert result.stderr == ""
    doc = json.loads(result.stdout)
    assert list(doc) == ["results", "hosts", "verdict"]
    assert [h["name"] for h in doc["hosts"]] == list(HOSTS)
    for h in doc["hosts"]:
        assert list(h) == HOST_FIELDS
        assert h["ok"] is True and h["error"] is None
        assert len(h["sources"]) == 1 and h["stats"]["lines"] > 0
    rows = doc["results"]
    assert rows
    for row in rows:
        assert list(row) == list(ROW_FIELDS)
        assert "bob@example.test" in (row["to"], row["orig_to"])
    mine = [r for r in rows if r["message_id"] == s["message_id"]]
    # entry, content filter, re-injection, mailbox: one row per hop
    assert [r["host"] for r in mine] == ["mx1", "filter1", "filter1", "mbox1"]
    assert {r["status"] for r in mine} == {"sent"}
    assert mine[0]["client"].endswith(f"[{s['submitted']['client_ip']}]")
    assert mine[0]["from"] == s["sender"]


def test_search_formats_agree(inventory: Path) -> None:
    args = ("search", "-i", inventory, "--from", "alice@example.test")
    doc = json.loads(run(*args, "-f", "json").stdout)["results"]
    nd = run(*args, "-f", "ndjson")
    assert nd.exit_code == 0
    assert [json.loads(line) for line in nd.stdout.splitlines()] == doc
    out = run(*args, "-f", "csv")
    assert out.exit_code == 0
    lines = out.stdout.splitlines()
    assert lines[0] == (
        "time,host,queue_id,from,to,orig_to,status,dsn,relay,delay,message_id,response,client"
    )
    parsed = list(csv.DictReader(io.StringIO(out.stdout)))
    assert len(parsed) == len(doc)
    for got, want in zip(parsed, doc, strict=True):
        assert got == {k: "" if v is None else str(v) for k, v in want.items()}


def test_search_table(inventory: Path) -> None:
    result = run("search", "-i", inventory, "--to", "dave@example.net")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["time", "host", "queue_id"]
    assert any("expired" in x for x in lines)


def test_search_table_fits_100_columns(inventory: Path) -> None:
    result = run("search", "-i", inventory, "--to", "bob@example.test", env={"COLUMNS": "100"})
    assert result.exit_code == 0
    assert max(len(x) for x in result.stdout.splitlines()) <= 100


def test_search_no_match_is_exit_1(inventory: Path) -> None:
    for fmt, out in (("table", ""), ("csv", ",".join(ROW_FIELDS) + "\n"), ("ndjson", "")):
        result = run("search", "-i", inventory, "--to", "nobody@example.test", "-f", fmt)
        assert result.exit_code == ExitCode.NO_MATCH
        assert result.stdout == out
        assert result.stderr == ""
    result = run("search", "-i", inventory, "--to", "nobody@example.test", "-f", "json")
    assert result.exit_code == ExitCode.NO_MATCH
    assert json.loads(result.stdout)["results"] == []


@pytest.mark.parametrize(
    ("status", "recipient"),
    [
        ("rejected", "victim@example.net"),
        ("bounced", "nosuchuser@example.test"),
        ("expired", "dave@example.net"),
        ("deferred", None),
    ],
)
def test_search_by_status(inventory: Path, status: str, recipient: str | None) -> None:
    result = run("search", "-i", inventory, "--status", status, "-f", "json")
    rows = json.loads(result.stdout)["results"]
    if recipient is None:
        assert result.exit_code in (0, 1)
    else:
        assert result.exit_code == 0, result.stderr
        assert recipient in {r["to"] for r in rows}
    assert {r["status"] for r in rows} <= {status}


def test_search_selects_hosts_by_name_and_alias(inventory: Path) -> None:
    for name in ("mbox1", "mbox1.example.test", "127.0.0.23"):
        result = run("search", "-i", inventory, "--host", name, "--to", "bob@example.test",
                     "-f", "json")
        doc = json.loads(result.stdout)
        assert [h["name"] for h in doc["hosts"]] == ["mbox1"]
        assert {r["host"] for r in doc["results"]} == {"mbox1"}


@pytest.mark.parametrize(
    ("args", "parts"),
    [
        (("--since", "soon"), ("cannot read time 'soon'",)),
        (("--until", "2026-13-45"), ("cannot read time '2026-13-45'",)),
        (("--status", "lost"), ("--status", "unknown status 'lost'")),
        (("--to", ""), ("--to",)),
        (("--to", "a@b\nc@d"), ("--to", "multi-line")),
        (("--host", "nosuchhost"), ("no host named 'nosuchhost'",)),
    ],
)
def test_search_usage_errors_exit_2(
    inventory: Path, args: tuple[str, ...], parts: tuple[str, ...]
) -> None:
    result = run("search", "-i", inventory, "--to", "bob@example.test", *args)
    assert result.exit_code == ExitCode.ERROR
    assert result.stdout == ""
    assert_one_error_line(result, *parts)


def test_missing_inventory_exit_2(tmp_path: Path) -> None:
    result = run("search", "-i", tmp_path / "nope.toml", "--to", "bob@example.test")
    assert result.exit_code == ExitCode.ERROR
    assert_one_error_line(result, "nope.toml")


def test_no_inventory_at_all_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("search", "--to", "bob@example.test")
    assert result.exit_code == ExitCode.ERROR
    assert_one_error_line(result, "no inventory")


def test_inventory_from_environment(inventory: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("search", "--to", "bob@example.test", "-f", "json",
                 env={"COLLECTOR_INVENTORY": str(inventory)})
    assert result.exit_code == 0
    assert json.loads(result.stdout)["results"]


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ('[[hosts]]\nname = "mx1"\ntransport = "local"\nroot = "."\ncolour = "red"\n', ("colour",)),
        ("[[hosts]\n", ("bad.toml",)),
        ('[[hosts]]\nname = "mx1"\ntransport = "carrier-pigeon"\n', ("transport",)),
    ],
)
def test_bad_inventory_exit_2(tmp_path: Path, text: str, parts: tuple[str, ...]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    result = run("search", "-i", bad, "--to", "bob@example.test")
    assert result.exit_code == ExitCode.ERROR
    assert result.stdout == ""
    assert_one_error_line(result, *parts)


def test_a_dead_host_is_partial_exit_3(inventory: Path, tmp_path: Path) -> None:
    text = inventory.read_text().replace('root = "', f'root = "{inventory.parent}/')
    text += '\n[[hosts]]\nname = "ghost"\nroot = "ghost-root"\n'
    inv = tmp_path / "inventory.toml"
    inv.write_text(text)
    result = run("search", "-i", inv, "--to", "bob@example.test", "-f", "json")
    assert result.exit_code == ExitCode.PARTIAL
    line = assert_one_error_line(result)
    assert line.startswith("collector: ghost: connect: ")
    assert "ghost-root" in line
    doc = json.loads(result.stdout)
    assert {r["host"] for r in doc["results"]} == set(HOSTS)
    ghost = doc["hosts"][-1]
    assert ghost["name"] == "ghost" and ghost["ok"] is False
    assert ghost["error"]["stage"] == "connect"
    # a table goes to stdout all the same
    result = run("search", "-i", inv, "--to", "bob@example.test")
    assert result.exit_code == ExitCode.PARTIAL
    assert "mbox1" in result.stdout
    # only dead hosts: nothing answered
    result = run("search", "-i", inv, "--host", "ghost", "--to", "bob@example.test")
    assert result.exit_code == ExitCode.ERROR
    assert_one_error_line(result, "ghost: connect:")


# --------------------------------------------------------------------------- other commands


def test_summary(inventory: Path) -> None:
    result = run("summary", "-i", inventory, "-f", "json")
    assert result.exit_code == 0, result.stderr
    hosts = json.loads(result.stdout)["hosts"]
    assert [h["name"] for h in hosts] == list(HOSTS)
    by = {h["name"]: h["summary"] for h in hosts}
    assert by["out1"].get("expired", 0) >= 3  # dave, erin, partner (and a returned bounce)
    assert by["mx1"]["rejected"] >= 4
    assert all(h["stats"]["unknown"] == 0 for h in hosts)
    table = run("summary", "-i", inventory)
    assert table.exit_code == 0
    assert table.stdout.splitlines()[0].split()[:4] == ["host", "lines", "msgs", "sent"]
    assert [x.split()[0] for x in table.stdout.splitlines()[2:]] == list(HOSTS)


def test_hosts_list(inventory: Path) -> None:
    result = run("hosts", "-i", inventory, "-f", "json")
    assert result.exit_code == 0
    hosts = json.loads(result.stdout)["hosts"]
    assert [h["name"] for h in hosts] == list(HOSTS)
    assert {h["transport"] for h in hosts} == {"local"}
    assert hosts[0]["aliases"] == [EXPECTED["hosts"]["mx1"]["fqdn"], EXPECTED["hosts"]["mx1"]["ip"]]
    table = run("hosts", "-i", inventory)
    assert table.exit_code == 0
    assert [x.split()[0] for x in table.stdout.splitlines()[2:]] == list(HOSTS)


def test_hosts_check(inventory: Path) -> None:
    result = run("hosts", "-i", inventory, "--check", "-f", "json")
    assert result.exit_code == 0, result.stderr
    hosts = json.loads(result.stdout)["hosts"]
    for h in hosts:
        (src,) = h["sources"]
        info = EXPECTED["hosts"][h["name"]]
        assert src["path"] == info["log"]["path"]
        assert src["format"] == info["log"]["format"]
        assert src["first"].startswith("2026-") and src["last"] >= src["first"]


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout.startswith("collector ")


# --------------------------------------------------------------------------- trace

# The outcome correlate concludes for each intended fate.
OUTCOME = {
    "delivered": "delivered",
    "forwarded": "delivered",
    "bounced": "bounced",
    "rejected": "rejected",
    "expired": "expired",
    "discarded": "discarded",
}


def _hosts(path: list[dict[str, str]]) -> list[str]:
    out: list[str] = []
    for hop in path:
        if not out or out[-1] != hop["host"]:
            out.append(hop["host"])
    return out


def _entered(s: dict[str, Any]) -> bool:
    """Whether a message got a queue file (NOQUEUE rejects never log the message-id)."""
    return not all(f["fate"] == "rejected" and f["path"] == ["mx1"] for f in s["fates"])


@pytest.fixture(scope="module")
def traces(inventory: Path) -> dict[str, dict[str, Any]]:
    ids = [s["message_id"] for s in EXPECTED["scenarios"] if _entered(s)]
    args = ["trace", "-i", str(inventory), "-f", "json"]
    for mid in ids:
        args += ["--message-id", mid]
    result = run(*args)
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert list(doc) == ["traces", "hosts", "verdict", "clock_skew"]
    return {t["message_id"]: t for t in doc["traces"]}


def _recipient(trace: dict[str, Any], address: str) -> dict[str, Any]:
    found = [r for r in trace["recipients"] if address in (r["address"], r["orig_address"])]
    assert found, (address, [r["address"] for r in trace["recipients"]])
    return found[0]


TRACE_MARKS: dict[str, list[pytest.MarkDecorator]] = {}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(s["name"], marks=TRACE_MARKS.get(s["name"], []))
        for s in EXPECTED["scenarios"]
        if _entered(s)
    ],
)
def test_trace_every_scenario(traces: dict[str, dict[str, Any]], name: str) -> None:
    s = SCENARIOS[name]
    trace = traces[s["message_id"]]
    assert trace["sender"] == s["sender"]
    hop_hosts = {h["host"] for h in trace["hops"]}
    for fate in s["fates"]:
        r = _recipient(trace, fate["recipient"])
        assert r["outcome"] == OUTCOME[fate["fate"]], r
        assert r["host"] == fate["at"]
        assert _hosts(r["path"]) == fate["path"]
        assert set(fate["path"]) <= hop_hosts | {fate["at"]}
    # every recipient the trace names is one of the scenario's, with a known outcome
    assert all(r["outcome"] != "unknown" for r in trace["recipients"])


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            s["name"],
            marks=[],
        )
        for s in EXPECTED["scenarios"]
        if s["notifications"] and _entered(s)
    ],
)
def test_trace_notifications(traces: dict[str, dict[str, Any]], name: str) -> None:
    s = SCENARIOS[name]
    trace = traces[s["message_id"]]
    got: list[tuple[str, str, str]] = []
    todo = list(trace["notifications"])
    while todo:  # a bounce of a bounce (to the postmaster) is nested one level deeper
        n = todo.pop(0)
        got += [(r["address"], r["outcome"], r["host"]) for r in n["recipients"]]
        todo += n["notifications"]
    for want in s["notifications"]:
        assert (want["to"], OUTCOME[want["fate"]], want["at"]) in got, (want, got)


@pytest.mark.parametrize(
    "name", [s["name"] for s in EXPECTED["scenarios"] if not _entered(s)]
)
def test_trace_noqueue_reject_by_recipient(inventory: Path, name: str) -> None:
    s = SCENARIOS[name]
    (fate,) = s["fates"]
    result = run("trace", "-i", inventory, "--to", fate["recipient"], "--from", s["sender"],
                 "-f", "json")
    assert result.exit_code == 0, result.stderr
    (trace,) = [t for t in json.loads(result.stdout)["traces"] if t["message_id"] is None]
    (r,) = trace["recipients"]
    assert (r["address"], r["status"], r["outcome"], r["host"]) == (
        fate["recipient"], "rejected", "rejected", "mx1"
    )
    assert trace["hops"][0]["queue_id"] == "NOQUEUE"


def test_trace_positional_query(inventory: Path) -> None:
    s = SCENARIOS["multi_split"]
    result = run("trace", "-i", inventory, s["message_id"], "-f", "json")
    assert result.exit_code == 0, result.stderr
    (trace,) = json.loads(result.stdout)["traces"]
    assert sorted(r["address"] for r in trace["recipients"]) == sorted(s["recipients"])
    # the same message by its queue ID on the entry host
    qid = trace["hops"][0]["queue_id"]
    result = run("trace", "-i", inventory, f"mx1:{qid}", "-f", "json")
    assert result.exit_code == 0, result.stderr
    assert [t["message_id"] for t in json.loads(result.stdout)["traces"]] == [s["message_id"]]


@pytest.mark.parametrize(
    ("fmt", "marker"),
    [
        ("text", "message <multi_split"),
        ("table", "mx1"),
        ("ndjson", '"message_id"'),
        ("csv", ","),
        ("dot", "digraph"),
        ("mermaid", "flowchart"),
    ],
)
def test_trace_formats(inventory: Path, fmt: str, marker: str) -> None:
    s = SCENARIOS["multi_split"]
    result = run("trace", "-i", inventory, s["message_id"], "-f", fmt)
    assert result.exit_code == 0, result.stderr
    assert marker in result.stdout
    assert "Traceback" not in result.output
    if fmt == "ndjson":
        assert [json.loads(x)["message_id"] for x in result.stdout.splitlines()] == [
            s["message_id"]
        ]


def test_trace_needs_a_query(inventory: Path) -> None:
    result = run("trace", "-i", inventory)
    assert result.exit_code == ExitCode.ERROR
    assert_one_error_line(result, "QUERY")


def test_trace_nothing_found_is_exit_1(inventory: Path) -> None:
    result = run("trace", "-i", inventory, "<nothing@lab.example.test>", "-f", "json")
    assert result.exit_code == ExitCode.NO_MATCH
    assert json.loads(result.stdout)["traces"] == []


# --------------------------------------------------------------------------- demo


def test_demo_prints_a_search_a_summary_and_a_trace() -> None:
    result = run("demo")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "$ collector search --to " in out
    assert "$ collector summary" in out
    assert "$ collector trace '<" in out
    trace_part = out.split("$ collector trace", 1)[1]
    assert "\nmessage <" in trace_part
    assert "delivered" in trace_part


def test_demo_inventory_searches() -> None:
    result = run("search", "-i", DEMO, "--to", "bob@example.test", "-f", "json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert [h["name"] for h in doc["hosts"]] == list(HOSTS)
    assert all(h["ok"] for h in doc["hosts"])


def test_demo_fleet_is_the_lab_copy() -> None:
    fleet = DEMO.parent / "fleet"
    lab = Path(__file__).parent / "fixtures" / "lab"
    for name in HOSTS:
        log = EXPECTED["hosts"][name]["log"]["path"].lstrip("/")
        assert (fleet / name / log).read_bytes() == (lab / name / log).read_bytes(), name

"""collector against real sshd hosts: hosts --check, search across the fleet, fetch, hostile input.

Every host is a real OpenSSH sshd in its own mount namespace (tests/sshfleet.py); the lab hosts
serve the committed output of the Postfix relay-chain lab (real logs in three formats).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from fleet_support import (
    ANSWERING,
    FILE_HOSTS,
    LAB_FIXTURES,
    LAB_HOSTS,
    FleetEnv,
    cli,
    host_entry,
    local_inventory,
    row_key,
    write_inventory,
)

pytest_plugins = ["fleet_support"]
pytestmark = pytest.mark.ssh

LAB_EXPECTED = json.loads((LAB_FIXTURES / "expected.json").read_text())


@pytest.fixture(scope="module")
def inv(fleet_env: FleetEnv, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_inventory(tmp_path_factory.mktemp("inv") / "inventory.toml", fleet_env.fleet)


def hosts_args(names: tuple[str, ...] | list[str]) -> list[str]:
    return [arg for name in names for arg in ("--host", name)]


def search_rows(
    inv: Path, *args: str, codes: tuple[int, ...] = (0, 1)
) -> tuple[int, list[dict[str, object]], dict[str, object]]:
    run = cli("search", "-i", str(inv), "-f", "json", *args)
    assert run.code in codes, (run.code, run.stderr)
    payload = run.json()
    return run.code, payload["results"], payload


def log_lines(fleet_env: FleetEnv, host: str, path: str) -> list[str]:
    import gzip

    real = fleet_env.fleet.host_path(host, path)
    data = real.read_bytes()
    if path.endswith(".gz"):
        data = gzip.decompress(data)
    return data.decode().splitlines()


# --------------------------------------------------------------------------- hosts --check


def test_hosts_check_json_reports_every_answering_host(fleet_env: FleetEnv, inv: Path) -> None:
    run = cli("hosts", "--check", "-i", str(inv), "--group", "ok", "-f", "json")
    assert run.code == 0, run.stderr
    payload = run.json()
    assert [h["name"] for h in payload["hosts"]] == list(ANSWERING)
    fleet = fleet_env.fleet
    for name in ANSWERING:
        entry = host_entry(payload, name)
        assert entry["ok"] and entry["reachable"] and entry["error"] is None, entry
        # postconf runs on every host (Postfix is installed, each host has its own main.cf).
        assert entry["postfix_version"] and re.fullmatch(r"\d+\.\d+\.\d+", entry["postfix_version"])
        assert entry["sources"], f"{name}: no source found"
        # the hosts share this machine's clock: `date` over SSH says so, and no note
        assert entry["clock_offset"] is not None and abs(entry["clock_offset"]) < 1.0, entry
        assert not any("clock" in n for n in entry["notes"])
        for src in entry["sources"]:
            assert src["needs_sudo"] is False, (name, src)
            assert src["first"] is not None and src["last"] is not None, (name, src)
            assert src["first"] <= src["last"], (name, src)
            if src["kind"] != "file":
                continue
            real = fleet.host_path(name, src["path"])
            assert src["size"] == real.stat().st_size, (name, src)
            lines = log_lines(fleet_env, name, src["path"])
            # first/last are the times of the file's first and last lines (no year in them).
            assert src["first"][5:19].replace("T", " ") == _month_day_time(lines[0]), src
            assert src["last"][5:19].replace("T", " ") == _month_day_time(lines[-1]), src
    # The paths each host really uses, as discovery found them.
    paths = {h["name"]: [s["path"] for s in h["sources"]] for h in payload["hosts"]}
    assert paths["rhel1"] == ["/var/log/maillog-20261122", "/var/log/maillog"]
    assert paths["deb1"] == ["/var/log/mail.log.2.gz", "/var/log/mail.log.1", "/var/log/mail.log"]
    assert paths["logfile1"] == ["/var/log/postfix/postfix.log"]
    assert [s["kind"] for s in host_entry(payload, "journal1")["sources"]] == ["journal"]
    assert host_entry(payload, "journal1")["sources"][0]["format"] == "journal"
    for name in LAB_HOSTS:
        assert paths[name] == [LAB_EXPECTED["hosts"][name]["log"]["path"]]
    assert host_entry(payload, "sudo1")["sudo"] is True


def _month_day_time(line: str) -> str:
    """``MM-DD HH:MM:SS`` of a log line in BSD/postlogd or RFC 3339 form."""
    import time as _time

    iso = re.match(r"\d{4}-(\d\d-\d\d)T(\d\d:\d\d:\d\d)", line)
    if iso:
        return f"{iso[1]} {iso[2]}"
    bsd = re.match(r"([A-Z][a-z]{2}) +(\d{1,2}) (\d\d:\d\d:\d\d)", line)
    assert bsd, line
    month = _time.strptime(bsd[1], "%b").tm_mon
    return f"{month:02d}-{int(bsd[2]):02d} {bsd[3]}"


@pytest.mark.parametrize("name", LAB_HOSTS)
def test_hosts_check_names_each_lab_log_format(fleet_env: FleetEnv, inv: Path, name: str) -> None:
    run = cli("hosts", "--check", "-i", str(inv), "--host", name, "-f", "json")
    assert run.code == 0, run.stderr
    (src,) = host_entry(run.json(), name)["sources"]
    assert src["format"] == LAB_EXPECTED["hosts"][name]["log"]["format"]


def test_hosts_check_table_lists_hosts_versions_and_sources(fleet_env: FleetEnv, inv: Path) -> None:
    run = cli("hosts", "--check", "-i", str(inv), "--group", "ok")
    assert run.code == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].split() == ["host", "status", "postfix", "source", "size", "first", "last",
                                "format"]
    for name in ANSWERING:
        row = next(line for line in lines if line.startswith(name + " "))
        assert " ok " in row and re.search(r"\d+\.\d+\.\d+", row), row
    assert "/var/log/mail.log.2.gz" in run.stdout
    assert "/var/log/maillog-20261122" in run.stdout
    assert "journal:" in run.stdout


def test_hosts_check_says_which_logs_need_sudo(fleet_env: FleetEnv, tmp_path: Path) -> None:
    # nosudo1's logs are root-only 0600 and it logs in as an unprivileged user: without
    # sudo = true they cannot be read, and the check says so instead of failing.
    inv = write_inventory(tmp_path / "inv.toml", fleet_env.fleet, {"nosudo1": {"sudo": False}})
    run = cli("hosts", "--check", "-i", str(inv), "--host", "nosudo1", "-f", "json")
    assert run.code == 0, run.stderr
    entry = host_entry(run.json(), "nosudo1")
    assert entry["ok"] and entry["sudo"] is False
    (src,) = entry["sources"]
    assert src["path"] == "/var/log/mail.log"
    assert src["needs_sudo"] is True and src["readable"] is False
    table = cli("hosts", "--check", "-i", str(inv), "--host", "nosudo1")
    assert "needs sudo" in table.stdout


# --------------------------------------------------------------------------- search


SELECTORS = [
    ("--to", "alice@example.test"),  # lab hosts, three log formats, many queue IDs
    ("--from", "alice@example.org"),  # every fixture host
    ("--to", "carol@example.net"),  # deb1: current, .1 and .2.gz
    ("--to", "bob@example.net"),  # rhel1: maillog and maillog-YYYYMMDD
    ("--to", "partner@example.net"),  # out1: deferred
]


@pytest.mark.parametrize(("option", "value"), SELECTORS)
def test_search_over_ssh_equals_search_of_local_copies(
    fleet_env: FleetEnv, inv: Path, tmp_path: Path, option: str, value: str
) -> None:
    local = local_inventory(tmp_path / "local.toml", fleet_env.fleet, FILE_HOSTS)
    code, live, payload = search_rows(inv, *hosts_args(FILE_HOSTS), option, value)
    local_code, copies, _ = search_rows(local, option, value)
    assert code == local_code == 0
    assert all(h["ok"] for h in payload["hosts"])
    assert sorted(map(row_key, live)) == sorted(map(row_key, copies))
    assert all(r["to" if option == "--to" else "from"] == value for r in live)


def test_search_across_the_whole_answering_fleet(fleet_env: FleetEnv, inv: Path) -> None:
    code, rows, payload = search_rows(inv, "--group", "ok", "--from", "alice@example.org")
    assert code == 0
    assert [h["name"] for h in payload["hosts"]] == list(ANSWERING)
    assert all(h["ok"] for h in payload["hosts"])
    ids = {(r["host"], r["queue_id"]) for r in rows}
    assert ids == {
        ("rhel1", "3A1F2C0101"), ("rhel1", "3A1F2C0102"),
        ("deb1", "4B2E3D0201"), ("deb1", "4B2E3D0202"), ("deb1", "4B2E3D0203"),
        ("logfile1", "5C3F4E0301"), ("journal1", "6D4A5F0401"), ("sudo1", "7E5B6A0501"),
        ("inner1", "9A7D8C0701"),
    }


def test_journald_only_host_is_read_through_journalctl(fleet_env: FleetEnv, inv: Path) -> None:
    assert not fleet_env.fleet.host_path("journal1", "/var/log/mail.log").exists()
    code, rows, payload = search_rows(inv, "--host", "journal1", "--to", "erin@example.net")
    assert code == 0
    assert [(r["host"], r["queue_id"], r["status"]) for r in rows] == [
        ("journal1", "6D4A5F0401", "sent")]
    assert rows[0]["message_id"] == "<6d4a5f0401@client.example.org>"
    sources = host_entry(payload, "journal1")["sources"]
    assert [s["kind"] for s in sources] == ["journal"]


def test_maillog_file_host_ignores_the_stale_syslog_file(fleet_env: FleetEnv, inv: Path) -> None:
    # logfile1 sets maillog_file; its /var/log/mail.log is left over from before and must not
    # be read (it holds stale@example.net and queue ID 5C3F4E0300).
    assert fleet_env.fleet.host_path("logfile1", "/var/log/mail.log").exists()
    code, rows, payload = search_rows(inv, "--host", "logfile1", "--from", "alice@example.org")
    assert code == 0
    assert [(r["queue_id"], r["to"]) for r in rows] == [("5C3F4E0301", "dave@example.net")]
    assert [s["path"] for s in host_entry(payload, "logfile1")["sources"]] == [
        "/var/log/postfix/postfix.log"]
    stale_code, stale_rows, _ = search_rows(inv, "--host", "logfile1", "--to", "stale@example.net")
    assert (stale_code, stale_rows) == (1, [])


def test_debian_rotation_is_searched_including_gzip(fleet_env: FleetEnv, inv: Path) -> None:
    code, rows, payload = search_rows(inv, "--host", "deb1", "--to", "carol@example.net")
    assert code == 0
    assert [r["queue_id"] for r in rows] == ["4B2E3D0201", "4B2E3D0202", "4B2E3D0203"]
    days = [r["time"][:10] for r in rows]
    assert days == sorted(days) and len(set(days)) == 3
    compressions = {s["path"]: s["compression"] for s in host_entry(payload, "deb1")["sources"]}
    assert compressions["/var/log/mail.log.2.gz"] == "gz"


def test_rhel_dated_rotation_is_searched(fleet_env: FleetEnv, inv: Path) -> None:
    code, rows, _ = search_rows(inv, "--host", "rhel1", "--to", "bob@example.net")
    assert code == 0
    assert [r["queue_id"] for r in rows] == ["3A1F2C0101", "3A1F2C0102"]
    assert rows[0]["time"] < rows[1]["time"]


def test_sudo_host_reads_root_only_logs_through_sudo(
    fleet_env: FleetEnv, inv: Path, tmp_path: Path
) -> None:
    fleet = fleet_env.fleet
    log = fleet.host_path("sudo1", "/var/log/mail.log")
    assert log.stat().st_mode & 0o777 == 0o600 and log.stat().st_uid == 0
    assert fleet.spec("sudo1").user != "root"
    code, rows, _ = search_rows(inv, "--host", "sudo1", "--to", "frank@example.net")
    assert code == 0
    assert [(r["host"], r["queue_id"]) for r in rows] == [("sudo1", "7E5B6A0501")]
    # The same host without sudo reads nothing: the rows above really came through sudo -n.
    no_sudo = write_inventory(tmp_path / "nosudo.toml", fleet, {"sudo1": {"sudo": False}})
    code, rows, payload = search_rows(
        no_sudo, "--host", "sudo1", "--to", "frank@example.net", codes=(3,)
    )
    assert (code, rows) == (3, [])  # partial: the log could not be read
    assert any("cannot read /var/log/mail.log" in n for n in host_entry(payload, "sudo1")["notes"])


def test_proxy_jump_host_is_reached_through_the_bastion(fleet_env: FleetEnv, inv: Path) -> None:
    fleet = fleet_env.fleet
    before = len(fleet.forwarded_to("bastion1"))
    code, rows, _ = search_rows(inv, "--host", "inner1", "--to", "grace@example.net")
    assert code == 0
    assert [(r["host"], r["queue_id"]) for r in rows] == [("inner1", "9A7D8C0701")]
    forwarded = fleet.forwarded_to("bastion1")[before:]
    assert fleet.address("inner1") in forwarded


def test_fetch_over_ssh_then_offline_search_equals_live(
    fleet_env: FleetEnv, inv: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "copy"
    selection = hosts_args(ANSWERING)
    fetched = cli("fetch", "-i", str(inv), "--dest", str(dest), *selection,
                  "--to", "alice@example.test")
    assert fetched.code == 0, fetched.stderr
    assert sorted(p.name for p in dest.iterdir() if p.is_dir()) == sorted(ANSWERING)
    for option, value in (("--to", "alice@example.test"), ("--to", "bob@example.test")):
        _, live, _ = search_rows(inv, *selection, option, value)
        if value == "alice@example.test":
            _, offline, _ = search_rows_offline(dest, option, value)
            assert live
            assert sorted(map(row_key, offline)) == sorted(map(row_key, live))
        else:
            # Only alice's messages were fetched; bob's rows there are those messages' too,
            # and the case cannot prove bob's other mail absent: never exit 1 ("absent").
            code, offline, payload = search_rows_offline(dest, option, value, codes=(0, 3))
            assert set(map(row_key, offline)) <= set(map(row_key, live))
            assert payload["verdict"] != "absent"
            if not offline:
                assert code == 3 and payload["verdict"] == "inconclusive"


def search_rows_offline(dest: Path, option: str, value: str, codes: tuple[int, ...] = (0, 1)
                        ) -> tuple[int, list[dict[str, object]], dict[str, object]]:
    run = cli("search", "--offline", str(dest), "-f", "json", option, value)
    assert run.code in codes, (run.code, run.stderr)
    payload = run.json()
    return run.code, payload["results"], payload


def test_fetch_all_then_offline_search_equals_live(
    fleet_env: FleetEnv, inv: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "all"
    names = [n for n in FILE_HOSTS if n != "quirk1"]
    fetched = cli("fetch", "-i", str(inv), "--dest", str(dest), "--all", *hosts_args(names))
    assert fetched.code == 0, fetched.stderr
    for option, value in SELECTORS:
        _, live, _ = search_rows(inv, *hosts_args(names), option, value)
        _, offline, _ = search_rows_offline(dest, option, value)
        assert sorted(map(row_key, offline)) == sorted(map(row_key, live)), (option, value)


# --------------------------------------------------------------------------- hostile input


def hostile_selectors(canary_dir: Path) -> list[str]:
    """Selectors that would run a command, change an option or widen a match if mishandled."""
    return [
        f"x'; touch {canary_dir}/single-quote; '",
        f'x"; touch {canary_dir}/double-quote; "',
        f"x; touch {canary_dir}/semicolon",
        f"$(touch {canary_dir}/dollar-paren)",
        f"`touch {canary_dir}/backtick`",
        "$(touch /root/CANARY-dollar)",
        "`touch /root/CANARY-backtick`",
        "-e.",  # as a grep option it would match every line
        "--help",
        "-",
        "*",
        "?",
        "[",
        ".*",
        "[a-z]*@*",
        "\\",
        "x|y",
    ]


def test_canaries_catch_a_command_that_ran(fleet_env: FleetEnv) -> None:
    """Control: the canaries below do show a selector that reached a shell unquoted."""
    fleet = fleet_env.fleet
    values = hostile_selectors(fleet_env.canary_dir)
    try:
        for value in values[:7]:
            # The value pasted into a remote command line bare, in '...' and in "...".
            for command in (f"echo {value}", f"echo '{value}'", f'echo "{value}"'):
                subprocess.run(["ssh", "-F", str(fleet.ssh_config), "rhel1", command],
                               check=False, capture_output=True, timeout=30)
        made = {Path(c).name for c in fleet_env.canaries()}
        wanted = {re.sub(r".*touch (\S+?)[`)]?(;.*)?$", r"\1", v).rsplit("/", 1)[1]
                  for v in values[:7]}
        assert made == wanted
    finally:
        for path in fleet_env.canaries():
            os.unlink(path)


def test_hostile_selectors_run_nothing_and_match_nothing(fleet_env: FleetEnv, inv: Path) -> None:
    assert fleet_env.canaries() == []
    values = hostile_selectors(fleet_env.canary_dir)
    # A repeated selector is an OR of its values: every value goes into the same remote
    # commands, next to each other, on every answering host.
    for option in ("--to", "--from", "--message-id", "--client"):
        run = cli("search", "-i", str(inv), "--group", "ok", "-f", "json",
                  *(f"{option}={value}" for value in values))
        assert run.code == 1, (option, run.code, run.stderr)
        payload = run.json()
        assert payload["results"] == [], option
        assert all(h["ok"] for h in payload["hosts"]), option
    for value in values[:7]:  # the ones that would run a command, as trace's free-text QUERY
        trace = cli("trace", "-i", str(inv), "--group", "ok", "-f", "json", "--", value)
        assert trace.code == 1, (value, trace.code, trace.stderr)
        assert trace.json()["traces"] == []
    assert fleet_env.canaries() == []


@pytest.mark.parametrize("option", ["--to", "--from", "--message-id", "--client", "--queue-id"])
def test_newline_in_a_selector_is_a_usage_error(fleet_env: FleetEnv, inv: Path,
                                                option: str) -> None:
    run = cli("search", "-i", str(inv), "--group", "ok", option,
              f"a@example.test\n$(touch {fleet_env.canary_dir}/newline)")
    assert run.code == 2
    assert run.stdout == ""
    assert run.stderr.startswith("collector: ") and option in run.stderr
    trace = cli("trace", "-i", str(inv), f"a@example.test\ntouch {fleet_env.canary_dir}/nl")
    assert trace.code == 2
    assert fleet_env.canaries() == []


def test_addresses_with_shell_and_glob_characters_are_matched(
    fleet_env: FleetEnv, inv: Path
) -> None:
    assert fleet_env.canaries() == []
    for address, qid in zip(fleet_env.quirk_addresses, fleet_env.quirk_ids, strict=True):
        code, rows, payload = search_rows(inv, "--group", "ok", f"--to={address}")
        assert code == 0, address
        assert [(r["host"], r["queue_id"], r["to"]) for r in rows] == [("quirk1", qid, address)]
        assert all(h["ok"] for h in payload["hosts"])
        trace = cli("trace", "-i", str(inv), "--group", "ok", "-f", "json", "--", address)
        assert trace.code == 0, (address, trace.stderr)
        (found,) = trace.json()["traces"]
        assert [r["address"] for r in found["recipients"]] == [address]
    assert fleet_env.canaries() == []

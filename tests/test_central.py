"""Central log hosts (``collects``): the lab's four hosts read through one log host.

The log host's files hold the real lines of the Postfix lab (tests/fixtures/lab), merged in
time order the way a syslog receiver writes them: one combined file, or one file per host
(``/var/log/remote/HOST/mail.log``, ``/var/log/hosts/HOST/*.log``). Every answer through the
log host must equal the answer of the per-host fleet, except that the JSON names the log
host a host was read on (``via``).

These cases merge the standard lab's lines in time order; tests/test_central_rsyslog.py runs
the same comparison on what a real rsyslog receiver wrote (the lab's central mode).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fleet_support import cli
from lab_fleet import (
    EXPECTED,
    SCENARIOS,
    build_central_fleet,
    build_journal_remote_fleet,
    build_lab_fleet,
    lab_lines,
)

from collector.errors import InventoryError
from collector.inventory.load import load_inventory
from collector.inventory.origins import (
    OriginResolver,
    carried_by,
    dns_hostname,
    plan_readings,
)
from collector.models import Host

HOSTS = tuple(EXPECTED["hosts"])


# --------------------------------------------------------------------------- inventory


def _load(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "inventory.toml"
    path.write_text(text, encoding="utf-8")
    return load_inventory(path, ssh_config_path=tmp_path / "none")


_BASE = """
[[hosts]]
name = "loghost"
address = "192.0.2.1"
{collects}

[[hosts]]
name = "mx1.example.test"
aliases = ["mx1-old"]

[[hosts]]
name = "mx2"
"""


def test_collected_hosts_need_no_address_and_name_their_log_host(tmp_path: Path) -> None:
    inv = _load(tmp_path, '[defaults]\nuser = "u"\nport = 2222\ntimezone = "UTC"\n'
                + _BASE.format(collects='collects = ["mx1.example.test", "mx2"]'))
    log, mx1, mx2 = inv.hosts
    assert log.collects == ("mx1.example.test", "mx2") and log.via is None
    assert (mx1.via, mx2.via) == ("loghost", "loghost")
    # inherited connection settings mean nothing for a host collector never connects to
    assert (mx1.address, mx1.user, mx1.port) == (None, None, None)
    assert mx1.timezone == log.timezone == "UTC"  # its stamps are placed on its log host
    assert log.address == "192.0.2.1" and log.user == "u" and log.port == 2222


def test_star_collects_every_host_not_collected_elsewhere(tmp_path: Path) -> None:
    text = _BASE.format(collects='collects = ["*"]') + (
        '\n[[hosts]]\nname = "log2"\naddress = "192.0.2.9"\ncollects = ["mx3"]\n'
        '\n[[hosts]]\nname = "mx3"\n'
    )
    inv = _load(tmp_path, text)
    via = {h.name: h.via for h in inv.hosts}
    assert via == {"loghost": None, "mx1.example.test": "loghost", "mx2": "loghost",
                   "log2": None, "mx3": "log2"}


@pytest.mark.parametrize(
    ("collects", "extra", "message", "line"),
    [
        ('collects = ["loghost"]', "", "a host cannot collect itself", 5),
        ('collects = ["mx9"]', "", "no host named 'mx9'", 5),
        ('collects = ["mx2", "*"]', "", 'list names or "*", not both', 5),
        ('collects = ["mx2"]', '\n[[hosts]]\nname = "log2"\ncollects = ["mx2"]\n',
         "host mx2 is collected twice (host loghost collects it already)", 16),
        ('collects = ["*"]', '\n[[hosts]]\nname = "log2"\ncollects = ["*"]\n',
         'only one host may collect "*" (host loghost does already)', 16),
        ('collects = ["log2"]', '\n[[hosts]]\nname = "log2"\ncollects = ["mx2"]\n',
         "host log2 collects other hosts itself: a log host cannot be collected", 5),
        ("collects = []", "", "'collects' must be an array of inventory host names", 5),
        ('collects = ["a/b"]', "", "'collects' must be an array of inventory host names", 5),
    ],
)
def test_bad_collects_are_config_errors_naming_file_line_and_host(
    tmp_path: Path, collects: str, extra: str, message: str, line: int
) -> None:
    with pytest.raises(InventoryError) as caught:
        _load(tmp_path, _BASE.format(collects=collects) + extra)
    text = str(caught.value)
    assert message in text and f"inventory.toml:{line}:" in text, text
    assert "host " in text


def test_a_collected_host_cannot_say_how_to_reach_it(tmp_path: Path) -> None:
    text = _BASE.format(collects='collects = ["mx2"]') + 'port = 2222\n'
    with pytest.raises(InventoryError) as caught:
        _load(tmp_path, text)
    assert "'port' has no meaning here: host mx2's lines are read on its log host loghost" in str(
        caught.value)


def test_bad_collects_exit_2_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "inventory.toml"
    path.write_text(_BASE.format(collects='collects = ["loghost"]'), encoding="utf-8")
    run = cli("search", "-i", str(path), "--to", "a@b")
    assert run.code == 2 and run.stdout == ""
    assert run.stderr.count("\n") == 1 and "cannot collect itself" in run.stderr


# --------------------------------------------------------------------------- origins


def _fleet(collects: tuple[str, ...] = ("mx1.example.test", "mx2")) -> list[Host]:
    return [
        Host("loghost", aliases=("central",), collects=collects),
        Host("mx1.example.test", aliases=("MX1-old",), via="loghost"),
        Host("mx2", via="loghost" if "mx2" in collects or collects == ("*",) else None),
        Host("out1", via="log2"),
        Host("log2", collects=("out1",)),
    ]


def test_a_line_hostname_is_a_name_its_first_label_or_an_alias_case_insensitive() -> None:
    fleet = _fleet()
    r = OriginResolver(carried_by(fleet, fleet[0]))
    assert r.origin("mx1.example.test") == "mx1.example.test"
    assert r.origin("MX1") == "mx1.example.test"  # the name's first label
    assert r.origin("mx1-old") == "mx1.example.test"  # an alias
    assert r.origin("Mx2") == "mx2"
    assert r.origin("loghost") == r.origin("CENTRAL") == "loghost"  # its own lines
    assert r.origin("out1") is None  # read on log2
    assert r.origin("mx9") is None  # not collected (no "*")
    notes = r.notes()
    assert "1 lines of hosts read on another log host not kept (out1)" in notes
    assert "1 lines of hostnames this log host does not collect not kept (mx9)" in notes
    assert r.origins() == ("loghost", "mx1.example.test", "mx2")


def test_star_makes_hosts_of_safe_names_only_and_at_most_the_cap() -> None:
    fleet = _fleet(("*",))
    r = OriginResolver(carried_by(fleet, fleet[0]), max_dynamic=2)
    assert r.origin("MX7.Example.Org") == "mx7.example.org"
    for hostile in ("../../etc", "a b", "mx\x1b[31m", "-x", "x" * 300, "a..b", "", "ünï"):
        assert r.origin(hostile) is None, hostile
    assert r.origin("mx8") == "mx8"
    assert r.origin("mx9") is None  # beyond the cap
    assert r.origin("mx7.example.org") == "mx7.example.org"  # made already
    assert r.dynamic == ["mx7.example.org", "mx8"]
    notes = " | ".join(r.notes())
    assert "whose hostname is not a valid DNS name" in notes
    assert "beyond the first 1000" in notes or "beyond the first" in notes
    assert not dns_hostname("mx1.") and dns_hostname("a-1.b")


def test_an_ambiguous_first_label_is_nobody_s() -> None:
    fleet = [Host("log", collects=("*",)), Host("mx1.a", via="log"), Host("mx1.b", via="log")]
    r = OriginResolver(carried_by(fleet, fleet[0]))
    assert r.origin("mx1") is None and r.dynamic == []
    assert r.origin("mx1.b") == "mx1.b"


def test_a_log_host_is_read_once_for_all_the_hosts_it_carries() -> None:
    fleet = _fleet()
    readings = plan_readings(fleet, [fleet[1], fleet[2], fleet[3]], everything=False)
    assert [(r.host.name, r.report, r.only) for r in readings] == [
        ("loghost", ("mx1.example.test", "mx2"), frozenset({"mx1.example.test", "mx2"})),
        ("log2", ("out1",), frozenset({"out1"})),
    ]
    every = plan_readings(fleet, fleet, everything=True)
    assert [(r.host.name, r.only) for r in every] == [("loghost", None), ("log2", None)]


# --------------------------------------------------------------------------- the lab


@pytest.fixture(scope="module")
def per_host(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_lab_fleet(tmp_path_factory.mktemp("per-host"))


#: (layout, collects): the log host layouts and both ways of naming what it carries.
CASES = [("combined", "names"), ("remote", "names"), ("hosts", "star")]


@pytest.fixture(scope="module", params=CASES, ids=["-".join(c) for c in CASES])
def central(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    layout, collects = request.param
    return build_central_fleet(tmp_path_factory.mktemp("central"), layout, collects=collects)


#: systemd-journal-remote: where Debian and Fedora install it (the SSH fleet needs it too).
JOURNAL_REMOTE = ("/usr/lib/systemd/systemd-journal-remote", "/lib/systemd/systemd-journal-remote")


@pytest.fixture(scope="module")
def journal_remote(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A log host whose systemd-journal-remote wrote each lab host's entries to
    /var/log/journal/remote/remote-HOST.journal (read with journalctl -D, hostname from
    _HOSTNAME)."""
    tool = next((t for t in JOURNAL_REMOTE if Path(t).is_file()), None)
    assert tool is not None, "systemd-journal-remote is not installed"
    return build_journal_remote_fleet(tmp_path_factory.mktemp("journal-remote"), tool)


def trace_args(scenario: dict[str, Any]) -> list[str]:
    if all(f["fate"] == "rejected" for f in scenario["fates"]):
        args = ["--from", scenario["sender"]]
        for recipient in scenario["recipients"]:
            args += ["--to", recipient]
        return args
    return ["--", scenario["message_id"]]


def _json(*args: str) -> tuple[int, Any]:
    run = cli(*args)
    assert run.code in (0, 1), (args, run.code, run.stderr)
    return run.code, run.json()


def test_merged_lines_carry_each_lab_host_s_own_hostname() -> None:
    names = {line.split()[1] if line[:4].isdigit() else line.split()[3]
             for _, line in lab_lines()}
    assert names == set(HOSTS)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_trace_through_the_log_host_equals_the_per_host_trace(
    per_host: Path, central: Path, name: str
) -> None:
    args = ["trace", "--format", "json", *trace_args(SCENARIOS[name])]
    code_a, direct = _json(*args[:3], "-i", str(per_host), *args[3:])
    code_b, through = _json(*args[:3], "-i", str(central), *args[3:])
    assert code_a == code_b == 0
    assert through["traces"] == direct["traces"]
    assert direct["traces"], name
    vias = {h["name"]: h.get("via") for h in through["hosts"]}
    assert {vias[h] for h in HOSTS if h in vias} == {"loghost"}
    assert all(h["ok"] for h in through["hosts"])


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_trace_through_a_journal_remote_log_host_equals_the_per_host_trace(
    per_host: Path, journal_remote: Path, name: str
) -> None:
    args = ["trace", "--format", "json", *trace_args(SCENARIOS[name])]
    _, direct = _json(*args[:3], "-i", str(per_host), *args[3:])
    _, through = _json(*args[:3], "-i", str(journal_remote), *args[3:])
    assert through["traces"] == direct["traces"] and direct["traces"]


def test_search_through_a_journal_remote_log_host_reads_it_with_journalctl_d(
    per_host: Path, journal_remote: Path
) -> None:
    args = ["--to", "alice@example.test", "--since", "2026-11-29T17:33:00Z", "-f", "json"]
    _, direct = _json("search", "-i", str(per_host), *args)
    _, through = _json("search", "-i", str(journal_remote), *args)
    assert through["results"] == direct["results"] and direct["results"]
    sources = {(s["path"], s["kind"]) for h in through["hosts"] for s in h["sources"]}
    assert sources == {("/var/log/journal/remote", "journal")}
    check = cli("hosts", "--check", "-i", str(journal_remote), "-f", "json").json()
    (source,) = check["hosts"][0]["sources"]
    assert sorted(h["hostname"] for h in source["hostnames"]) == sorted(HOSTS)


def test_search_and_summary_through_the_log_host_equal_the_per_host_answers(
    per_host: Path, central: Path
) -> None:
    recipients = sorted({r for s in SCENARIOS.values() for r in s["recipients"]})
    args = ["search", "--format", "json", *(a for r in recipients for a in ("--to", r))]
    _, direct = _json(*args[:3], "-i", str(per_host), *args[3:])
    _, through = _json(*args[:3], "-i", str(central), *args[3:])
    assert through["results"] == direct["results"] and len(direct["results"]) > 50
    _, s_direct = _json("summary", "-f", "json", "-i", str(per_host))
    _, s_through = _json("summary", "-f", "json", "-i", str(central))
    counts = {h["name"]: h["summary"] for h in s_through["hosts"]}
    assert {h["name"]: h["summary"] for h in s_direct["hosts"]} == {
        n: counts[n] for n in HOSTS
    }
    assert counts["loghost"] == {}  # the log host logged nothing of its own


def test_host_selects_a_collected_host_s_lines_on_its_log_host(
    per_host: Path, central: Path
) -> None:
    args = ["--to", "alice@example.test", "--host", "filter1", "--format", "json"]
    _, direct = _json("search", "-i", str(per_host), *args)
    _, through = _json("search", "-i", str(central), *args)
    assert through["results"] == direct["results"]
    assert {r["host"] for r in through["results"]} == {"filter1"}
    assert [(h["name"], h.get("via")) for h in through["hosts"]] == [("filter1", "loghost")]


# --------------------------------------------------------------------------- identity


def _relabelled(src: str, dest: str) -> list[tuple[float, str]]:
    """The lab's lines, plus every line of host ``src`` again as if host ``dest`` had
    logged it: the same queue IDs on two hosts, at the same times."""
    lines = lab_lines()
    copies = [(t, line.replace(f" {src} ", f" {dest} ", 1)) for t, line in lines
              if f" {src} postfix" in line]
    return sorted(lines + copies, key=lambda pair: pair[0])


def test_the_same_queue_id_on_two_hosts_never_merges(tmp_path: Path) -> None:
    """mx9 (not in the inventory; "*" makes it a host) logged every line mx1 did: each
    host's groups are its own, and equal."""
    inv = build_central_fleet(tmp_path, collects="star", lines=_relabelled("mx1", "mx9"))
    _, out = _json("search", "-i", str(inv), "--to", "alice@example.test", "-f", "json")
    by_host: dict[str, list[dict[str, Any]]] = {}
    for row in out["results"]:
        by_host.setdefault(row["host"], []).append(row)
    mx1 = [dict(r, host="-") for r in by_host["mx1"]]
    assert mx1 and [dict(r, host="-") for r in by_host["mx9"]] == mx1
    hosts = [(h["name"], h.get("via")) for h in out["hosts"]]
    assert hosts[-1] == ("mx9", "loghost") and ("mx1", "loghost") in hosts
    # with names instead of "*", mx9's lines are nobody's: not kept, and said so
    inv2 = build_central_fleet(tmp_path / "names", lines=_relabelled("mx1", "mx9"))
    run = cli("search", "-i", str(inv2), "--to", "alice@example.test", "-f", "json", "-v")
    assert {r["host"] for r in run.json()["results"]} == {"mx1", "filter1", "mbox1", "out1"}
    assert "lines of hostnames this log host does not collect not kept (mx9)" in run.stderr


def test_trace_of_a_relabelled_copy_stays_on_its_own_host(tmp_path: Path) -> None:
    """The copy's queue IDs are mx1's: following mx1's message never strays onto mx9."""
    inv = build_central_fleet(tmp_path, collects="star", lines=_relabelled("mx1", "mx9"))
    scenario = SCENARIOS["single"]
    _, out = _json("trace", "-f", "json", "-i", str(inv), "--", scenario["message_id"])
    hosts = sorted({hop["host"] for t in out["traces"] for hop in t["hops"]})
    assert hosts == ["filter1", "mbox1", "mx1", "mx9"]
    for t in out["traces"]:
        first = t["hops"][0]["host"]
        assert first in ("mx1", "mx9")
        if first == "mx9":  # mx9's copy relays to filter1, whose logs know only mx1's
            assert {h["host"] for h in t["hops"]} == {"mx9"}


def test_a_failed_log_host_fails_each_host_it_carries_by_name(tmp_path: Path) -> None:
    extra = '\n[[hosts]]\nname = "direct1"\ntransport = "local"\nroot = "direct1"\n'
    inv = build_central_fleet(tmp_path, extra=extra)
    build_lab_fleet(tmp_path / "lab")
    (tmp_path / "lab" / "mx1").rename(tmp_path / "direct1")
    (tmp_path / "loghost").rename(tmp_path / "gone")
    run = cli("search", "-i", str(inv), "--to", "alice@example.test", "-f", "json")
    assert run.code == 3
    lines = run.stderr.splitlines()
    assert lines[0].startswith("collector: loghost: connect: ")
    for name in HOSTS:
        assert any(x.startswith(f"collector: {name}: connect (via loghost): ") for x in lines)
    hosts = {h["name"]: h for h in run.json()["hosts"]}
    assert hosts["mx1"]["via"] == "loghost" and hosts["mx1"]["error"]["stage"] == "connect"
    assert hosts["direct1"]["ok"] and "via" not in hosts["direct1"]
    assert {r["host"] for r in run.json()["results"]} == {"direct1"}


# --------------------------------------------------------------------------- hosts


def test_hosts_check_says_which_hostnames_each_source_holds(tmp_path: Path) -> None:
    lines = _relabelled("mx1", "mx9")
    lines += [(t, x.replace(" out1 ", " out1.example.test ", 1)) for t, x in lab_lines()
              if " out1 postfix" in x]
    lines.sort(key=lambda pair: pair[0])
    inv = build_central_fleet(tmp_path, "remote", collects="star", lines=lines)
    run = cli("hosts", "--check", "-i", str(inv), "-f", "json")
    assert run.code == 0, run.stderr
    loghost, *carried = run.json()["hosts"]
    held = {s["path"]: [(h["hostname"], h["host"], h["new"]) for h in s["hostnames"]]
            for s in loghost["sources"]}
    assert held == {
        "/var/log/remote/filter1/mail.log": [("filter1", "filter1", False)],
        "/var/log/remote/mbox1/mail.log": [("mbox1", "mbox1", False)],
        "/var/log/remote/mx1/mail.log": [("mx1", "mx1", False)],
        "/var/log/remote/mx9/mail.log": [("mx9", "mx9", True)],
        "/var/log/remote/out1.example.test/mail.log": [("out1.example.test", "out1", False)],
        "/var/log/remote/out1/mail.log": [("out1", "out1", False)],
    }
    assert [(h["name"], h["via"], h["ok"]) for h in carried] == [
        (n, "loghost", True) for n in HOSTS
    ]
    table = cli("hosts", "--check", "-i", str(inv)).stdout
    assert "holds: mx9=new" in table and "holds: out1.example.test=out1" in table
    assert "mx1      via loghost" in table
    listed = cli("hosts", "-i", str(inv), "-f", "json").json()["hosts"]
    assert listed[0]["collects"] == ["*"] and "via" not in listed[0]
    assert {h["via"] for h in listed[1:]} == {"loghost"}


def test_the_committed_central_fixture_is_the_merged_lab(tmp_path: Path) -> None:
    """tests/fixtures/central (the README's examples) is what build_central_fleet writes."""
    committed = Path(__file__).parent / "fixtures" / "central"
    build_central_fleet(tmp_path)
    made = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    have = {p.relative_to(committed): p.read_bytes() for p in committed.rglob("*") if p.is_file()}
    assert have.keys() == made.keys()
    for rel, data in made.items():
        if rel.name == "inventory.toml":  # the committed one starts with a comment
            assert have[rel].endswith(data)
        else:
            assert have[rel] == data, rel


def test_fetch_reads_on_the_log_host_and_offline_splits_by_origin(
    per_host: Path, tmp_path: Path
) -> None:
    inv = build_central_fleet(tmp_path / "fleet")
    case = tmp_path / "case"
    run = cli("fetch", "-i", str(inv), "--dest", str(case), "--to", "bob@example.test",
              "--host", "mbox1")
    assert run.code == 0, run.stderr
    assert sorted(p.name for p in case.iterdir()) == ["collector-fleet.json", "loghost"]
    args = ["--to", "bob@example.test", "-f", "json"]
    _, offline = _json("search", "--offline", str(case), *args)
    _, direct = _json("search", "-i", str(per_host), *args)
    assert offline["results"] == direct["results"] and direct["results"]
    assert {h["name"]: h.get("via") for h in offline["hosts"]} == {
        "loghost": None, **{n: "loghost" for n in HOSTS}}
    scenario = SCENARIOS["multi_split"]  # bob is one of its recipients
    _, t_off = _json("trace", "--offline", str(case), "-f", "json", "--", scenario["message_id"])
    # the same fetch of the per-host fleet holds the same lines: the same trace offline
    per_case = tmp_path / "per-host-case"
    assert cli("fetch", "-i", str(per_host), "--dest", str(per_case), "--to",
               "bob@example.test").code == 0
    _, t_dir = _json("trace", "--offline", str(per_case), "-f", "json", "--",
                     scenario["message_id"])
    assert t_off["traces"] == t_dir["traces"] and t_dir["traces"]


def test_collector_never_connects_to_a_collected_host() -> None:
    """A collected host inherits its log host's transport: as a local host without a root
    it would be this machine. Opening a session to it is refused."""
    from collector.errors import TransportError
    from collector.models import Settings, TransportKind
    from collector.transport import open_session

    host = Host("mx1", transport=TransportKind.LOCAL, via="loghost")
    with pytest.raises(TransportError, match="its lines are read on loghost"):
        open_session(host, Settings())

"""``sudo = true`` through a narrow sudoers rule: exactly what ``hosts --sudoers`` prints.

The narrow hosts (tests/sshfleet.py ``narrow_specs``) start with no rule at all. The module's
fixture installs what ``collector hosts --sudoers`` prints for each, again until the output
stops changing (a directory only root can list shows its files once its ``ls`` line is in
place), so every test below runs through the printed lines and nothing else: no ``ALL``, no
shell. The same files read by root directly (the client key logs in as root too) are the
reference answer.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet_support import Run, cli, row_key
from sshfleet import HOSTILE_NAME, Fleet, HostSpec, fleet_fixture, narrow_specs

from collector.errors import TransportError
from collector.inventory.load import load_inventory
from collector.models import Stage
from collector.transport import open_session

pytestmark = pytest.mark.ssh

NARROW = ("narrow1", "narrowdir1", "narrowjournal1")
RULES = "/etc/sudoers.d/collector"

narrow_fleet = fleet_fixture(narrow_specs, scope="module")


def inventory(fleet: Fleet, path: Path, *, as_root: bool = False) -> Path:
    # A named zone: a whole-log read parses in worker processes, and this machine's zone read
    # from /etc/localtime (TZ unset) cannot be pickled to them.
    keys: dict[str, dict[str, object]] = {n: {"timezone": "UTC"} for n in NARROW}
    if as_root:
        for values in keys.values():
            values.update(user="root", sudo=False)
    path.write_text(fleet.inventory_toml(keys))
    return path


def sudoers_output(inv: Path, name: str) -> str:
    run = cli("hosts", "--sudoers", "-i", str(inv), "--host", name)
    assert run.code == 0, run.stderr
    return run.stdout


def install(fleet: Fleet, name: str, text: str, file: str = RULES) -> None:
    target = fleet.host_path(name, file)
    target.write_text(text)
    target.chmod(0o440)
    check = subprocess.run(["visudo", "-cqf", str(target)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.fixture(scope="module")
def envs(narrow_fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[Fleet, Path, Path]]:
    """(fleet, the narrow inventory, the same hosts as root) with the printed rules installed."""
    base = tmp_path_factory.mktemp("narrow")
    inv = inventory(narrow_fleet, base / "narrow.toml")
    root = inventory(narrow_fleet, base / "root.toml", as_root=True)
    for name in NARROW:
        printed = ""
        for _ in range(4):
            again = sudoers_output(inv, name)
            if again == printed:
                break
            printed = again
            install(narrow_fleet, name, printed)
        else:
            pytest.fail(f"{name}: hosts --sudoers did not settle:\n{printed}")
    yield narrow_fleet, inv, root


def rules_of(fleet: Fleet, name: str) -> list[str]:
    text = fleet.host_path(name, RULES).read_text()
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_the_installed_rules_are_narrow_and_what_sudoers_prints(
        envs: tuple[Fleet, Path, Path]) -> None:
    fleet, inv, _ = envs
    for name in NARROW:
        assert fleet.host_path(name, RULES).read_text() == sudoers_output(inv, name)
        rules = rules_of(fleet, name)
        assert rules
        for rule in rules:
            assert rule.startswith("collector ALL=(root) NOPASSWD: /"), rule
            command = rule.split("NOPASSWD: ", 1)[1]
            program = command.split()[0]
            assert program.rsplit("/", 1)[1] in ("cat", "journalctl", "ls", "tail"), rule
            assert "*" not in command and "?" not in command and " ALL" not in command, rule
    cat = rules_of(fleet, "narrow1")[0].split()[3]
    tail = rules_of(fleet, "narrow1")[1].split()[3]
    assert tail.endswith("/tail")
    assert rules_of(fleet, "narrow1") == [
        f"collector ALL=(root) NOPASSWD: {cat} /var/log/mail.log",
        f"collector ALL=(root) NOPASSWD: {tail} -n0 -F -q -- /var/log/mail.log",
        f"collector ALL=(root) NOPASSWD: {cat} /var/log/mail.log.[0-9]",
        f"collector ALL=(root) NOPASSWD: {cat} /var/log/mail.log.[0-9].gz",
    ]
    dir_rules = rules_of(fleet, "narrowdir1")
    assert any(r.endswith(" -AQLn --full-time /var/log/postfix") for r in dir_rules)
    assert any(r.endswith("/postfix.log.[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]-"
                          "[0-9][0-9][0-9][0-9][0-9][0-9].gz") for r in dir_rules)
    assert not any("journalctl" in r for r in dir_rules)  # its files were found, not the journal
    assert [r.split()[3].rsplit("/", 1)[1] for r in rules_of(fleet, "narrowjournal1")] == [
        "journalctl", "journalctl", "journalctl"]


def narrow_session(fleet: Fleet, inv: Path, name: str) -> object:
    inventory_ = load_inventory(inv)
    (host,) = [h for h in inventory_.hosts if h.name == name]
    return open_session(host, inventory_.settings)


@pytest.mark.parametrize("argv", [
    ["sh", "-c", "cat /var/log/mail.log"],  # what collector ran before: a root shell
    ["/usr/bin/cat", "/var/log/mail.log", "/etc/shadow"],  # one more file
    ["/usr/bin/cat", "/etc/shadow"],
    ["/usr/bin/cat", "/var/log/mail.log.1 /etc/shadow"],
    ["timeout", "5", "/usr/bin/cat", "/var/log/mail.log"],
    ["/usr/bin/journalctl", "--vacuum-size=1"],
])
def test_anything_else_is_refused(envs: tuple[Fleet, Path, Path], argv: list[str]) -> None:
    fleet, inv, _ = envs
    session = narrow_session(fleet, inv, "narrow1")
    try:
        with pytest.raises(TransportError) as caught:
            session.run(argv, sudo=True)  # type: ignore[attr-defined]
        assert caught.value.stage is Stage.SUDO
        # ...while the line it names does run as root.
        ok = session.run(["/usr/bin/cat", "/var/log/mail.log"], sudo=True)  # type: ignore[attr-defined]
        assert ok.exit_code == 0 and b"narrow1 postfix/" in ok.stdout
    finally:
        session.close()  # type: ignore[attr-defined]


def both(envs: tuple[Fleet, Path, Path], *args: str) -> tuple[Run, Run]:
    _, inv, root = envs
    narrow = cli(*args[:1], "-i", str(inv), *args[1:])
    direct = cli(*args[:1], "-i", str(root), *args[1:])
    assert narrow.code == direct.code, (narrow.stderr, direct.stderr)
    assert narrow.stderr == direct.stderr
    return narrow, direct


@pytest.mark.parametrize("selector", [
    ["--from", "alice@example.org"], ["--to", "carol@example.net"],
    ["--queue-id", "5C3F4E0302"], ["--status", "sent"], ["--since", "2000-01-01"],
])
def test_search_answers_as_root_does(envs: tuple[Fleet, Path, Path], selector: list[str]) -> None:
    narrow, direct = both(envs, "search", "-f", "json", *selector)
    assert narrow.code == 0
    rows = sorted(map(row_key, narrow.json()["results"]))
    assert rows == sorted(map(row_key, direct.json()["results"]))
    hosts = {r["host"] for r in narrow.json()["results"]}
    if selector[0] in ("--from", "--status", "--since"):
        assert hosts == set(NARROW)


def test_trace_summary_and_check_answer_as_root_does(envs: tuple[Fleet, Path, Path]) -> None:
    narrow, direct = both(envs, "trace", "-f", "json", "5c3f4e0302@client.example.org")
    assert narrow.code == 0 and narrow.json()["traces"] == direct.json()["traces"]
    narrow, direct = both(envs, "summary", "-f", "json")
    assert narrow.code == 0
    apart = ("notes", "coverage")
    counts = [{k: v for k, v in h.items() if k not in apart} for h in narrow.json()["hosts"]]
    assert counts == [{k: v for k, v in h.items() if k not in apart} for h in direct.json()["hosts"]]
    # a root file's last line is its mtime (no `tail` runs as root); the first lines agree
    for mine, theirs in zip(narrow.json()["hosts"], direct.json()["hosts"], strict=True):
        assert mine["coverage"]["complete"] and theirs["coverage"]["complete"]
        assert [s["first"] for s in mine["coverage"]["sources"]] == [
            s["first"] for s in theirs["coverage"]["sources"]]
    narrow, direct = both(envs, "hosts", "--check", "-f", "json")
    assert narrow.code == 0
    for mine, theirs in zip(narrow.json()["hosts"], direct.json()["hosts"], strict=True):
        assert mine["sources"] == theirs["sources"]
        assert mine["sudo"] is True and all(not s["needs_sudo"] for s in mine["sources"])


def test_incidents_answer_as_root_does(envs: tuple[Fleet, Path, Path]) -> None:
    # These logs hold no problem: nothing found, and not proven (they start after 2000).
    narrow, direct = both(envs, "incidents", "-f", "json", "--since", "2000-01-01")
    assert narrow.code == 3 and narrow.json()["verdict"] == "inconclusive"
    assert all(h["ok"] for h in narrow.json()["hosts"]) and "sudo" not in narrow.stderr
    assert narrow.json()["incidents"] == direct.json()["incidents"] == []
    assert [h["stats"] for h in narrow.json()["hosts"]] == [
        h["stats"] for h in direct.json()["hosts"]]


def test_fetch_copies_what_root_copies(envs: tuple[Fleet, Path, Path], tmp_path: Path) -> None:
    _, inv, root = envs
    for n, what in enumerate((["--all"], ["--to", "carol@example.net"])):
        dests = [tmp_path / f"narrow{n}", tmp_path / f"root{n}"]
        for source, dest in zip((inv, root), dests, strict=True):
            run = cli("fetch", "-i", str(source), *what, "--dest", str(dest))
            assert run.code == 0, run.stderr
        for name in NARROW:
            mine, theirs = (
                sorted(p.relative_to(d) for p in (d / name).rglob("*")
                       if p.is_file() and p.name != "collector-manifest.json")
                for d in dests
            )
            assert mine and mine == theirs
            for rel in mine:
                assert (dests[0] / rel).read_bytes() == (dests[1] / rel).read_bytes(), rel
    copy = tmp_path / "narrow0/narrow1/var/log/mail.log.2.gz"
    assert gzip.decompress(copy.read_bytes()).count(b"\n") == 7


def test_a_hostile_name_in_a_root_directory_is_listed_not_run(
        envs: tuple[Fleet, Path, Path]) -> None:
    fleet, inv, _ = envs
    run = cli("hosts", "--check", "-i", str(inv), "--host", "narrowdir1", "-f", "json")
    assert run.code == 0
    (entry,) = run.json()["hosts"]
    paths = [s["path"] for s in entry["sources"]]
    assert paths == ["/var/log/postfix/postfix.log.20241121-080300.gz",
                     "/var/log/postfix/postfix.log"]
    assert HOSTILE_NAME not in json.dumps(paths)
    assert list(fleet.host_path("narrowdir1", "/root").glob("CANARY*")) == []


def test_without_the_rules_it_is_a_sudo_error_naming_the_command(
        envs: tuple[Fleet, Path, Path]) -> None:
    fleet, inv, _ = envs
    saved = fleet.host_path("narrow1", RULES).read_text()
    fleet.host_path("narrow1", RULES).unlink()
    try:
        run = cli("search", "-i", str(inv), "--host", "narrow1", "--to", "carol@example.net")
        assert run.code == 2
        assert run.stderr.startswith("collector: narrow1: sudo: /var/log/mail.log")
        assert "sudo -n refused (sudo: a password is required)" in run.stderr
        assert "collector hosts --sudoers" in run.stderr
        assert len(run.stderr.splitlines()) == 1
    finally:
        install(fleet, "narrow1", saved)


def cats(fleet: Fleet, name: str) -> list[int]:
    found = []
    for pid in fleet.namespace_pids(name):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[-2:-1] == [
                    b"/var/log/stuck.fifo"]:
                found.append(pid)
        except OSError:
            pass
    return found


def test_a_root_cat_stuck_on_a_fifo_ends_with_the_timeout(
        envs: tuple[Fleet, Path, Path], tmp_path: Path) -> None:
    fleet, _, _ = envs
    inv = tmp_path / "fifo.toml"
    inv.write_text("command_timeout = 2\n" + fleet.inventory_toml(
        {"narrow1": {"logs": ["/var/log/stuck.fifo"]}}))
    printed = sudoers_output(inv, "narrow1")
    assert "/usr/bin/cat /var/log/stuck.fifo" in printed or " /var/log/stuck.fifo\n" in printed
    install(fleet, "narrow1", printed, RULES + "-fifo")
    try:
        started = time.monotonic()
        run = cli("search", "-i", str(inv), "--host", "narrow1", "--to", "carol@example.net")
        assert run.code == 2, run.stderr
        assert "timed out after 2 s" in run.stderr
        assert time.monotonic() - started < 15
        deadline = time.monotonic() + 10
        while cats(fleet, "narrow1") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert cats(fleet, "narrow1") == []
    finally:
        fleet.host_path("narrow1", RULES + "-fifo").unlink()


def test_narrow_specs_are_what_the_docstring_says() -> None:
    specs: list[HostSpec] = narrow_specs()
    assert [s.name for s in specs] == list(NARROW)
    assert all(s.sudo and s.sudo_rules is None and s.user == "collector" for s in specs)


def test_the_readme_shows_the_real_lines(envs: tuple[Fleet, Path, Path]) -> None:
    _, inv, _ = envs
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    shown = readme.split("```sudoers\n", 1)[1].split("```\n", 1)[0]
    run = cli("hosts", "--sudoers", "-i", str(inv), "--host", "narrow1", "--host", "narrowdir1")
    assert run.code == 0, run.stderr
    real = run.stdout
    for name in ("cat", "ls"):  # where this machine keeps them; the README says /usr/bin
        found = shutil.which(name) or f"/usr/bin/{name}"
        real = real.replace(f" {found} ", f" /usr/bin/{name} ")
    assert real == shown
    payload = cli("hosts", "--sudoers", "-i", str(inv), "--host", "narrow1", "-f", "json").json()
    (entry,) = payload["hosts"]
    assert entry["ok"] is True and entry["user"] == "collector" and entry["own"] == []
    assert "\n".join(entry["sudoers"]) + "\n" == sudoers_output(inv, "narrow1").split("\n", 1)[1]
    assert cli("hosts", "--sudoers", "-i", str(inv), "-f", "csv").code == 2

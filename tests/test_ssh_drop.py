"""``search --to`` over real sshd: the host's pass 2 leaves the delivery lines out (fewer bytes
come back) and the rows stay the same, on plain files, rotations with a .gz, the journal,
root-only logs read through sudo, a host behind a bastion and the Postfix lab's hosts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fleet_support import LAB_FIXTURES, LAB_HOSTS, FleetEnv, cli, row_key, write_inventory
from test_drop_deliveries import answers

from collector.inventory.load import load_inventory
from collector.models import Query
from collector.render.rows import row_dict
from collector.transport import open_session

pytest_plugins = ["fleet_support"]
pytestmark = pytest.mark.ssh

#: Each host and recipients its logs name (the lab's: every to= and orig_to= address).
LAB_ADDRESSES = sorted({
    a for name in LAB_HOSTS for log in (LAB_FIXTURES / name / "var" / "log").iterdir()
    for a in re.findall(r"to=<([^>]*)>", log.read_text(encoding="utf-8"))
})
CASES = {
    "rhel1": ["bob@example.net"],  # maillog and maillog-YYYYMMDD
    "deb1": ["carol@example.net"],  # mail.log, .1 and .2.gz
    "journal1": ["erin@example.net"],  # journald only
    "sudo1": ["frank@example.net"],  # root-only, read through sudo -n cat
    "inner1": ["grace@example.net"],  # behind bastion1
    **{name: LAB_ADDRESSES for name in LAB_HOSTS},
}


@pytest.fixture(scope="module")
def inv(fleet_env: FleetEnv, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_inventory(tmp_path_factory.mktemp("inv") / "inventory.toml", fleet_env.fleet)


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_host_sends_fewer_bytes_and_the_rows_are_the_same(inv: Path, name: str) -> None:
    inventory = load_inventory(inv)
    (host,) = [h for h in inventory.hosts if h.name == name]
    rows = kept = dropped = 0
    for who in CASES[name]:
        query = Query(recipients=(who,))
        session = open_session(host, inventory.settings)
        try:
            full, keep = answers(session, query, drop=False)
            less, drop = answers(session, query, drop=True)
        finally:
            session.close()
        assert less == full, (name, who)
        assert keep.dropping == 0 and (drop.dropping or not keep.pass2)
        rows += sum(len(r) for r in full.values())
        kept += keep.pass2
        dropped += drop.pass2
    assert rows and dropped < kept, (name, rows, kept, dropped)


def test_the_cli_search_gives_the_rows_of_a_search_that_drops_nothing(inv: Path) -> None:
    inventory = load_inventory(inv)
    hosts = [h for h in inventory.hosts if h.name in LAB_HOSTS]
    args = [a for who in ("dave@example.net", "fwd@mbox1.example.test", "blocked@example.test")
            for a in ("--to", who)]
    run = cli("search", "-i", str(inv), "-f", "json", *(a for h in hosts for a in ("--host",
                                                                                  h.name)), *args)
    assert run.code == 0, run.stderr
    query = Query(recipients=tuple(args[1::2]))
    expected = []
    for host in hosts:
        session = open_session(host, inventory.settings)
        try:
            full, _ = answers(session, query, drop=False)
        finally:
            session.close()
        expected += [r for rows in full.values() for r in rows]
    # every field of every row (JSON's own shape), in any order
    assert len(expected) > 5
    assert sorted(map(row_key, run.json()["results"])) == sorted(
        row_key(json.loads(json.dumps(row_dict(r)))) for r in expected)

"""fetch and --offline against hostile or unlucky names: every file gets its own copy, nothing
is written outside --dest, a case folder is read only inside itself and remembers what it lacks.

Runs the real CLI over a copy of the demo fleet (real Postfix logs, local transport).
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest
from support import run

from collector.cli.app import ExitCode
from collector.search.fetch import UnsafeDestination, _local_path


def rotate_in_two_schemes(inventory: Path) -> None:
    """filter1's log in thirds: maillog.1.gz (oldest), maillog.1, maillog (newest).

    A host that changed its logrotate scheme (or uses delaycompress) has both names; the text
    slice of maillog.1.gz must not overwrite the copy of maillog.1.
    """
    log = inventory.parent / "fleet" / "filter1" / "var" / "log"
    lines = (log / "maillog").read_bytes().splitlines(keepends=True)
    third = len(lines) // 3
    (log / "maillog.1.gz").write_bytes(gzip.compress(b"".join(lines[:third])))
    (log / "maillog.1").write_bytes(b"".join(lines[third : 2 * third]))
    (log / "maillog").write_bytes(b"".join(lines[2 * third :]))
    manifest = json.loads((log.parent.parent / "collector-manifest.json").read_text())
    mtime = manifest["files"]["/var/log/maillog"]["mtime"]  # the demo's own, kept by its copy
    os.utime(log / "maillog.1", (mtime - 3600, mtime - 3600))
    os.utime(log / "maillog.1.gz", (mtime - 7200, mtime - 7200))


def test_a_compressed_and_a_plain_rotation_of_one_name_both_arrive(
    demo_fleet: Path, tmp_path: Path
) -> None:
    rotate_in_two_schemes(demo_fleet)
    args = ("--host", "filter1", "--since", "2000-01-01")
    online = run("search", "-i", demo_fleet, *args, "-f", "json")
    assert online.exit_code == ExitCode.FOUND, online.stderr
    dest = tmp_path / "case"
    fetched = run("fetch", "-i", demo_fleet, *args, "--dest", dest)
    assert fetched.exit_code == ExitCode.FOUND, fetched.stderr
    copies = sorted(p.name for p in (dest / "filter1" / "var" / "log").iterdir())
    assert copies == ["maillog", "maillog.1", "maillog.1.gz-text"]
    offline = run("search", "--offline", dest, *args, "-f", "json")
    assert offline.exit_code == ExitCode.FOUND, offline.stderr
    assert json.loads(offline.stdout)["results"] == json.loads(online.stdout)["results"]


@pytest.mark.parametrize("name", ["../x", "/abs", "a/b", "..", ".", "", "mx1\x1b[2J"])
def test_a_copy_is_never_written_outside_dest(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafeDestination):
        _local_path(tmp_path / "case", name, "/var/log/maillog")


def test_a_path_that_climbs_out_of_the_host_copy_is_refused(tmp_path: Path) -> None:
    (tmp_path / "case").mkdir()
    for climbing in ("/../../etc/passwd", "/var/../../x"):
        target = _local_path(tmp_path / "case", "mx1", climbing)
        assert target.is_relative_to(tmp_path / "case" / "mx1")


def test_a_symlink_planted_in_dest_is_not_followed_out(demo_fleet: Path, tmp_path: Path) -> None:
    dest = tmp_path / "case"
    outside = tmp_path / "outside"
    (dest / "mx1").mkdir(parents=True)
    outside.mkdir()
    (dest / "mx1" / "var").symlink_to(outside)
    (dest / "filter1").symlink_to(outside)
    result = run("fetch", "-i", demo_fleet, "--all", "--dest", dest)
    assert result.exit_code == ExitCode.PARTIAL, result.stderr
    assert list(outside.iterdir()) == []
    errors = sorted(line for line in result.stderr.splitlines())
    assert errors[0].startswith("collector: filter1: read: refusing to write outside")
    assert errors[1].startswith("collector: mx1: read: refusing to write outside")
    assert (dest / "mbox1" / "var" / "log" / "mail.log").is_file()


def test_dest_that_is_a_file_is_a_usage_error(demo_fleet: Path, tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    result = run("fetch", "-i", demo_fleet, "--all", "--dest", afile)
    assert result.exit_code == ExitCode.ERROR
    assert result.stderr == f"collector: --dest: {afile} exists and is not a directory\n"


def test_a_case_folder_entry_that_is_a_symlink_is_refused(demo_fleet: Path, tmp_path: Path) -> None:
    dest = tmp_path / "case"
    assert run("fetch", "-i", demo_fleet, "--all", "--dest", dest).exit_code == ExitCode.FOUND
    (dest / "root1").symlink_to("/")
    result = run("search", "--offline", dest, "--from", "alice@example.test")
    assert result.exit_code == ExitCode.ERROR
    assert result.stderr == (
        f"collector: {dest / 'root1'}: is a symbolic link, not a fetched host's copy\n"
    )


def test_a_case_remembers_what_it_lacks(demo_fleet: Path, tmp_path: Path) -> None:
    # filter1 has a damaged rotation; out1 cannot be reached at all.
    log = demo_fleet.parent / "fleet" / "filter1" / "var" / "log"
    packed = gzip.compress((log / "maillog").read_bytes())
    (log / "maillog.1.gz").write_bytes(packed[: len(packed) // 2])
    demo_fleet.write_text(demo_fleet.read_text().replace('root = "fleet/out1"', 'root = "fleet/gone"'))
    dest = tmp_path / "case"
    fetched = run("fetch", "-i", demo_fleet, "--all", "--dest", dest)
    assert fetched.exit_code == ExitCode.PARTIAL
    for command in (["search", "--from", "alice@example.test"], ["summary"],
                    ["trace", "--from", "alice@example.test"]):
        result = run(*command, "--offline", dest)
        assert result.exit_code == ExitCode.PARTIAL, (command, result.stderr)
        assert sorted(result.stderr.splitlines()) == [
            "collector: filter1: read: /var/log/maillog.1.gz is damaged: lines after the "
            "damage are missing",
            f"collector: out1: connect: not in this copy: no such directory: "
            f"{demo_fleet.parent / 'fleet' / 'gone'}",
        ], command

"""Tests of the sshd test fleet itself: real sshd processes, real paramiko and ssh clients."""

from __future__ import annotations

import bz2
import calendar
import gzip
import lzma
import os
import socket
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from sshfleet import (
    FIXTURES,
    Fleet,
    HostSpec,
    bsd_time,
    fleet_fixture,
    journal_export_from_syslog,
    last_line_time,
    machine_id,
    namespace_members,
    running_fleet,
    spec_from_tree,
    standard_specs,
    stop_from_state,
    toml_table,
)

pytestmark = pytest.mark.ssh

REPO = Path(__file__).resolve().parent.parent
fleet = fleet_fixture(scope="module")


@pytest.fixture(scope="module")
def client_key(fleet: Fleet) -> paramiko.PKey:
    return paramiko.Ed25519Key.from_private_key_file(str(fleet.client_key))


def connect(fleet: Fleet, name: str, key: paramiko.PKey) -> paramiko.SSHClient:
    """A strict paramiko client (known_hosts only), through the host's bastion if it has one."""
    addr, port = fleet.address(name)
    via = fleet.spec(name).via
    sock: socket.socket | paramiko.Channel
    if via is None:
        sock = socket.create_connection((addr, port), 10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    else:
        bastion = connect(fleet, via, key)
        transport = bastion.get_transport()
        assert transport is not None
        sock = transport.open_channel("direct-tcpip", (addr, port), ("127.0.0.1", 0))
    client = paramiko.SSHClient()
    client.load_host_keys(str(fleet.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(addr, port, username=fleet.spec(name).user, pkey=key, sock=sock,
                   allow_agent=False, look_for_keys=False, timeout=10)
    return client


def run(client: paramiko.SSHClient, command: str, timeout: float = 10) -> tuple[int, str, str]:
    _, stdout, stderr = client.exec_command(command, timeout=timeout)
    out, err = stdout.read().decode(), stderr.read().decode()
    return stdout.channel.recv_exit_status(), out, err


def run_on(fleet: Fleet, key: paramiko.PKey, name: str, command: str) -> tuple[int, str, str]:
    client = connect(fleet, name, key)
    try:
        return run(client, command)
    finally:
        client.close()


def running(pid: int) -> bool:
    """Alive and not a zombie (orphans are left for init to reap, which may take a while)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


MAIL_HOSTS = ["rhel1", "deb1", "logfile1", "journal1", "sudo1", "nosudo1", "inner1", "fifo1"]


# --------------------------------------------------------------------------- standard fleet


def test_standard_fleet_starts_quickly(fleet: Fleet) -> None:
    print(f"\nstandard fleet of {len(fleet.names)} hosts started in "
          f"{fleet.startup_seconds:.3f} s")
    assert fleet.names == MAIL_HOSTS[:6] + ["bastion1", "inner1", "fifo1"]
    assert 0 < fleet.startup_seconds < 10
    for name in fleet.names:
        title = Path(f"/proc/{fleet.listener_pid(name)}/cmdline").read_text()
        assert title.startswith("sshd: /usr/sbin/sshd -D")
        assert f"/{name}/sshd_config [listener]" in title


@pytest.mark.parametrize("name", MAIL_HOSTS)
def test_each_host_sees_its_own_files(fleet: Fleet, client_key: paramiko.PKey,
                                      name: str) -> None:
    code, out, err = run_on(fleet, client_key, name,
                            "hostname; cat /etc/hostname; cat /etc/postfix/main.cf; "
                            "ls -A /var/log; ls -A ~; cat /etc/machine-id")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[:2] == [name, name]
    main_cf = fleet.host_path(name, "/etc/postfix/main.cf").read_text()
    assert main_cf in out
    assert f"myhostname = {name}.example.test" in out
    listing = sorted(p.name for p in fleet.host_path(name, "/var/log").iterdir())
    assert listing and all(entry in lines for entry in listing)
    # A clean home: only the authorized key, no .bashrc whose output would pollute commands.
    assert ".ssh" in lines and ".bashrc" not in lines and ".profile" not in lines
    assert lines[-1] == machine_id(name)


def test_logs_are_the_fixture_logs(fleet: Fleet, client_key: paramiko.PKey) -> None:
    code, out, _ = run_on(fleet, client_key, "deb1",
                          "cat /var/log/mail.log; zcat /var/log/mail.log.2.gz")
    fixture = FIXTURES / "deb1/var/log"
    assert code == 0
    assert out == (fixture / "mail.log").read_text() + \
        gzip.decompress((fixture / "mail.log.2.gz").read_bytes()).decode()


@pytest.mark.parametrize(("name", "newest_first"), [
    ("rhel1", ["maillog", "maillog-20261122"]),
    ("deb1", ["mail.log", "mail.log.1", "mail.log.2.gz"]),
])
def test_rotated_logs_have_ordered_mtimes(fleet: Fleet, client_key: paramiko.PKey, name: str,
                                          newest_first: list[str]) -> None:
    code, out, _ = run_on(fleet, client_key, name, "cd /var/log && ls -t")
    assert (code, out.split()) == (0, newest_first)
    # The mtime is the time of the file's last line, as if Postfix had just written it.
    newest = fleet.host_path(name, "/var/log/" + newest_first[0])
    assert newest.stat().st_mtime == last_line_time(newest.read_bytes(), time.time())


def test_maillog_file_host_has_a_stale_trap(fleet: Fleet, client_key: paramiko.PKey) -> None:
    code, out, err = run_on(fleet, client_key, "logfile1",
                            "/usr/sbin/postconf -h maillog_file; "
                            "stat -c %Y /var/log/postfix/postfix.log /var/log/mail.log")
    assert (code, err) == (0, "")
    configured, fresh, stale = out.split()
    assert configured == "/var/log/postfix/postfix.log"
    assert int(stale) < int(fresh)


def test_sudo_host_needs_and_allows_sudo(fleet: Fleet, client_key: paramiko.PKey) -> None:
    client = connect(fleet, "sudo1", client_key)
    try:
        assert run(client, "id -un")[1] == "collector\n"
        code, _, err = run(client, "cat /var/log/mail.log")
        assert code == 1 and "Permission denied" in err
        code, out, err = run(client, "sudo -n cat /var/log/mail.log")
    finally:
        client.close()
    assert (code, err) == (0, "")  # no "unable to resolve host": the host has its /etc/hosts
    assert out == (FIXTURES / "sudo1/var/log/mail.log").read_text()


def test_host_without_sudo_rule_fails_fast(fleet: Fleet, client_key: paramiko.PKey) -> None:
    client = connect(fleet, "nosudo1", client_key)
    try:
        began = time.monotonic()
        code, out, err = run(client, "sudo -n cat /var/log/mail.log")
        elapsed = time.monotonic() - began
    finally:
        client.close()
    assert (code, out) == (1, "")
    assert "a password is required" in err
    assert elapsed < 3


def test_journal_host_reads_its_journal(fleet: Fleet, client_key: paramiko.PKey) -> None:
    journal_dir = f"/var/log/journal/{machine_id('journal1')}"
    code, out, err = run_on(
        fleet, client_key, "journal1",
        "journalctl --no-pager -o short SYSLOG_FACILITY=2; echo --; "
        f"journalctl --no-pager -D {journal_dir} -u postfix@-.service -t postfix/smtpd; "
        "echo --; ls /var/log",
    )
    assert (code, err) == (0, "")
    everything, smtpd, listing = out.split("--\n")
    source = (FIXTURES / "journal1/journal.log").read_text()
    assert everything == source
    assert smtpd.splitlines() == [line for line in source.splitlines()
                                  if " postfix/smtpd[" in line]
    assert listing.split() == ["journal"]  # journald only: no mail.log to find


def test_fifo_log_hangs_a_reader(fleet: Fleet, client_key: paramiko.PKey) -> None:
    began = time.monotonic()
    code, out, _ = run_on(fleet, client_key, "fifo1",
                          "test -p /var/log/maillog && timeout 1 cat /var/log/maillog")
    assert (code, out) == (124, "")
    assert time.monotonic() - began >= 1


def test_inner_host_through_the_bastion(fleet: Fleet, client_key: paramiko.PKey) -> None:
    inner = fleet.address("inner1")
    before = fleet.forwarded_to("bastion1").count(inner)
    code, out, _ = run_on(fleet, client_key, "inner1", "hostname")
    assert (code, out) == (0, "inner1\n")
    assert fleet.forwarded_to("bastion1").count(inner) == before + 1
    # OpenSSH's client through the generated ssh_config (ProxyJump by host name).
    ssh = subprocess.run(["ssh", "-F", str(fleet.ssh_config), "inner1", "hostname"],
                         check=False, capture_output=True, text=True, timeout=20)
    assert (ssh.returncode, ssh.stdout) == (0, "inner1\n")
    assert fleet.forwarded_to("bastion1").count(inner) == before + 2


def test_bastion_runs_no_commands(fleet: Fleet, client_key: paramiko.PKey) -> None:
    assert run_on(fleet, client_key, "bastion1", "echo hello") == (1, "", "")


def test_inventory_toml(fleet: Fleet) -> None:
    text = fleet.inventory_toml({"rhel1": {"timezone": "Europe/Paris"},
                                 "dead1": {"address": "127.0.0.1", "port": 9}})
    inventory = tomllib.loads(text)
    assert inventory["known_hosts"] == str(fleet.known_hosts)
    assert inventory["defaults"] == {"user": "root", "identity_file": str(fleet.client_key),
                                     "port": 22}
    hosts = {host["name"]: host for host in inventory["hosts"]}
    assert list(hosts) == [*MAIL_HOSTS[:6], "inner1", "fifo1", "dead1"]
    assert hosts["rhel1"] == {"name": "rhel1", "address": "127.0.0.1",
                              "port": fleet.address("rhel1")[1], "user": "root",
                              "sudo": False, "timezone": "Europe/Paris"}
    assert (hosts["sudo1"]["user"], hosts["sudo1"]["sudo"]) == ("collector", True)
    assert (hosts["nosudo1"]["user"], hosts["nosudo1"]["sudo"]) == ("collector", True)
    bastion_addr, bastion_port = fleet.address("bastion1")
    assert hosts["inner1"]["proxy_jump"] == f"root@{bastion_addr}:{bastion_port}"
    assert hosts["inner1"]["address"] == "127.0.0.2"
    assert hosts["dead1"] == {"name": "dead1", "address": "127.0.0.1", "port": 9}


def test_host_path_catches_a_canary(fleet: Fleet, client_key: paramiko.PKey) -> None:
    canary = f"/var/log/canary-{uuid.uuid4().hex}"
    assert run_on(fleet, client_key, "rhel1", f"touch {canary}")[0] == 0
    assert fleet.host_path("rhel1", canary).exists()
    assert not Path(canary).exists()
    assert not fleet.host_path("deb1", canary).exists()
    with pytest.raises(ValueError, match="shared with the machine"):
        fleet.host_path("rhel1", "/etc/passwd")
    with pytest.raises(ValueError):
        fleet.host_path("rhel1", "/var/log/../../etc/passwd")


# --------------------------------------------------------------------------- own small fleets


def small_specs() -> list[HostSpec]:
    return [
        HostSpec(name="a1", files={"/var/log/maillog": "a1 log\n"}),
        HostSpec(name="f1", fifo_logs=["/var/log/maillog"]),
    ]


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Fleet]:
    with running_fleet(tmp_path, small_specs()) as fleet:
        yield fleet


def test_stop_host_refuses_connections_until_started(small: Fleet) -> None:
    key = paramiko.Ed25519Key.from_private_key_file(str(small.client_key))
    pid = small.listener_pid("a1")
    small.stop_host("a1")
    assert not running(pid)
    assert small.namespace_pids("a1") == []
    with pytest.raises(ConnectionRefusedError):
        connect(small, "a1", key)
    assert run_on(small, key, "f1", "hostname")[1] == "f1\n"  # the others stay up
    small.start_host("a1")
    assert run_on(small, key, "a1", "cat /var/log/maillog") == (0, "a1 log\n", "")


def test_regenerate_host_key(small: Fleet) -> None:
    key = paramiko.Ed25519Key.from_private_key_file(str(small.client_key))
    old = small.host_public_key("a1")
    new = small.regenerate_host_key("a1")
    assert new != old and new == small.host_public_key("a1")
    assert old in small.known_hosts.read_text()
    with pytest.raises(paramiko.BadHostKeyException):
        connect(small, "a1", key)
    ssh = subprocess.run(["ssh", "-F", str(small.ssh_config), "a1", "true"],
                         check=False, capture_output=True, text=True, timeout=20)
    assert ssh.returncode == 255 and "HOST IDENTIFICATION HAS CHANGED" in ssh.stderr
    small.write_known_hosts()
    assert run_on(small, key, "a1", "hostname")[1] == "a1\n"


def test_stop_ends_listeners_and_open_sessions(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path, small_specs())
    fleet.start()
    key = paramiko.Ed25519Key.from_private_key_file(str(fleet.client_key))
    client = connect(fleet, "f1", key)
    try:
        # A session stuck on the FIFO: it outlives its listener unless stop() ends it.
        client.exec_command("cat /var/log/maillog")
        deadline = time.monotonic() + 5
        while not any(Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"cat\0")
                      for p in fleet.namespace_pids("f1") if Path(f"/proc/{p}").exists()):
            assert time.monotonic() < deadline, "the hanging cat never started"
            time.sleep(0.02)
        pids = [pid for name in fleet.names for pid in fleet.namespace_pids(name)]
        assert len(pids) >= 4  # two listeners, one session sshd, one cat
        # Membership needs the host's own mounts, not just a namespace inode number (reusable).
        ns = os.stat(f"/proc/{fleet.listener_pid('f1')}/ns/mnt")
        assert namespace_members((ns.st_dev, ns.st_ino), fleet.host_path("f1", "/root").parent) \
            == fleet.namespace_pids("f1")
        assert namespace_members((ns.st_dev, ns.st_ino),
                                 fleet.host_path("a1", "/root").parent) == []
        fleet.stop()
    finally:
        client.close()
    assert [pid for pid in pids if running(pid)] == []
    for name in fleet.names:
        assert fleet.listener_pid(name) == 0
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(fleet.address(name), 2)


def test_command_line_up_and_down(tmp_path: Path) -> None:
    up = subprocess.run([sys.executable, "-m", "tests.sshfleet", "up", "--dir", str(tmp_path)],
                        cwd=REPO, check=False, capture_output=True, text=True, timeout=60)
    assert up.returncode == 0, up.stderr
    assert "started 9 hosts in" in up.stdout
    pids = [int(line.split("pid ")[1]) for line in up.stdout.splitlines() if " pid " in line]
    assert len(pids) == 9 and all(running(pid) for pid in pids)
    inventory = tomllib.loads((tmp_path / "inventory.toml").read_text())
    assert len(inventory["hosts"]) == 8
    down = subprocess.run([sys.executable, "-m", "tests.sshfleet", "down", "--dir",
                           str(tmp_path)], cwd=REPO, check=False, capture_output=True, text=True, timeout=60)
    assert down.returncode == 0, down.stderr
    assert down.stdout.count("stopped ") == 9
    assert [pid for pid in pids if running(pid)] == []
    assert stop_from_state(tmp_path) == []  # idempotent


def test_failed_start_cleans_up(tmp_path: Path) -> None:
    bad = HostSpec(name="bad1", files={"/etc/shadow": "x"})
    fleet = Fleet(tmp_path, [HostSpec(name="ok1"), bad])
    with pytest.raises(ValueError, match="shared with the machine"):
        fleet.start()
    assert fleet.listener_pid("ok1") == 0


# --------------------------------------------------------------------------- pure helpers


def test_toml_table_round_trips_awkward_values() -> None:
    values = {"name": 'a "quoted" \\ name\twith tab', "port": 2222, "sudo": True,
              "logs": ["/var/log/a", "/var/log/ü"], "ratio": 0.5, "odd key": {"x": 1}}
    assert tomllib.loads(toml_table("[t]", values)) == {"t": values}


def test_journal_export_from_syslog_fields() -> None:
    line = "Nov 28 12:30:00 journal1 postfix/smtpd[5101]: connect from a[192.0.2.1]"
    now = time.mktime((2026, 11, 29, 0, 0, 0, 0, 0, -1))
    fields = dict(f.split("=", 1) for f in journal_export_from_syslog(line, "ab" * 16, now)
                  .splitlines() if f)
    assert fields["SYSLOG_IDENTIFIER"] == "postfix/smtpd"
    assert fields["SYSLOG_FACILITY"] == "2"
    assert fields["_SYSTEMD_UNIT"] == "postfix@-.service"
    assert fields["_PID"] == "5101" and fields["_HOSTNAME"] == "journal1"
    assert fields["MESSAGE"] == "connect from a[192.0.2.1]"
    expected = time.mktime((2026, 11, 28, 12, 30, 0, 0, 0, -1))
    assert int(fields["__REALTIME_TIMESTAMP"]) // 1_000_000 == int(expected)
    with pytest.raises(ValueError, match="line 1"):
        journal_export_from_syslog("not syslog", "ab" * 16, now)


def test_journal_export_from_rfc3339_lines_keeps_the_exact_time() -> None:
    text = ("2026-11-28T12:30:00.250001+01:00 loghost1 postfix-out1/smtp[77]: A1: to=<a@b>\n"
            "2026-11-28T12:30:00.250001+01:00 loghost1 postfix-out1/smtp[77]: A1: removed\n")
    entries = journal_export_from_syslog(text, "ab" * 16).strip().split("\n\n")
    fields = [dict(f.split("=", 1) for f in e.splitlines()) for e in entries]
    expected = calendar.timegm((2026, 11, 28, 11, 30, 0)) * 1_000_000 + 250001
    assert [f["__REALTIME_TIMESTAMP"] for f in fields] == [str(expected)] * 2
    assert fields[0]["SYSLOG_IDENTIFIER"] == "postfix-out1/smtp"
    assert [f["MESSAGE"] for f in fields] == ["A1: to=<a@b>", "A1: removed"]


def test_bsd_time_picks_the_year_before_a_new_year() -> None:
    january = time.mktime((2027, 1, 2, 0, 0, 0, 0, 0, -1))
    assert time.localtime(bsd_time("Dec 31 23:59:59", january)).tm_year == 2026
    assert time.localtime(bsd_time("Jan  1 00:00:01", january)).tm_year == 2027


def test_last_line_time_reads_compressed_logs_and_rfc3339() -> None:
    now = time.time()
    plain = b"Nov  1 00:00:00 h postfix/x[1]: a\nNov  2 00:00:00 h postfix/x[1]: b\n"
    expected = last_line_time(plain, now)
    assert expected is not None and time.localtime(expected)[1:3] == (11, 2)
    for compress in (gzip.compress, bz2.compress, lzma.compress):
        assert last_line_time(compress(plain), now) == expected
    iso = b"2026-11-28T10:00:00.5+00:00 h postfix/x[1]: a\n"
    assert last_line_time(iso, now) == 1795860000.5
    assert last_line_time(b"no stamps\n", now) is None


def test_standard_specs_take_lab_hosts_and_fall_back(tmp_path: Path) -> None:
    (tmp_path / "sudo1/var/log").mkdir(parents=True)
    (tmp_path / "sudo1/var/log/maillog").write_text("Nov 28 10:00:00 sudo1 postfix/x[1]: a\n")
    specs = {spec.name: spec for spec in standard_specs(tmp_path)}
    assert specs["sudo1"].files == {"/var/log/maillog": tmp_path / "sudo1/var/log/maillog"}
    assert specs["sudo1"].modes == {"/var/log/maillog": 0o600}
    assert specs["rhel1"].files["/var/log/maillog"] == FIXTURES / "rhel1/var/log/maillog"
    assert specs["journal1"].journal_export is not None


def test_spec_from_tree(tmp_path: Path) -> None:
    (tmp_path / "etc/postfix").mkdir(parents=True)
    (tmp_path / "etc/postfix/main.cf").write_text("myhostname = t1.example\n")
    (tmp_path / "journal.log").write_text("Nov 28 12:30:00 t1 postfix/qmgr[9]: X: removed\n")
    spec = spec_from_tree("t1", tmp_path, user="collector", sudo=True)
    assert spec.files == {"/etc/postfix/main.cf": tmp_path / "etc/postfix/main.cf"}
    assert spec.journal_export is not None and "MESSAGE=X: removed" in spec.journal_export
    assert (spec.user, spec.sudo, spec.mtimes) == ("collector", True, {})


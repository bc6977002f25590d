"""Transport: LocalSession on temporary directories, SSHSession against real sshd processes."""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sshfleet import Fleet, HostSpec, running_fleet
from support import AGENT_KEYS, keygen

from collector.errors import TransportError
from collector.models import Host, HostKeyPolicy, Settings, Stage, TransportKind
from collector.transport import open_session
from collector.transport.base import Session
from collector.transport.local import LocalSession
from collector.transport.ssh import _KEYS, SSHSession, parse_proxy_jump

USER = "collector"  # the non-root login user sshfleet creates

# --------------------------------------------------------------------------- local


@pytest.fixture
def local(tmp_path: Path) -> LocalSession:
    root = tmp_path / "host"
    (root / "var/log").mkdir(parents=True)
    (root / "var/log/maillog").write_text("one\ntwo\n")
    return LocalSession(Host("lo", transport=TransportKind.LOCAL, root=str(root)))


def test_open_session_local_returns_local_session(tmp_path: Path) -> None:
    host = Host("lo", transport=TransportKind.LOCAL, root=str(tmp_path))
    session = open_session(host, Settings())
    assert isinstance(session, LocalSession)
    assert session.path("/var/log/maillog") == f"{tmp_path}/var/log/maillog"


def test_local_root_must_exist(tmp_path: Path) -> None:
    host = Host("lo", transport=TransportKind.LOCAL, root=str(tmp_path / "missing"))
    with pytest.raises(TransportError) as caught:
        LocalSession(host)
    assert caught.value.stage is Stage.CONNECT
    assert "no such directory" in caught.value.message


def test_local_run_captures_stdout_stderr_and_exit_code(local: LocalSession) -> None:
    maillog = local.path("/var/log/maillog")
    result = local.run(["sh", "-c", 'cat "$1"; echo oops >&2; exit 3', "sh", maillog])
    assert result.stdout == b"one\ntwo\n"
    assert result.stderr == b"oops\n"
    assert result.exit_code == 3
    assert result.command == shlex.join(
        ["sh", "-c", 'cat "$1"; echo oops >&2; exit 3', "sh", maillog]
    )


def test_local_run_grep_no_match_is_exit_1(local: LocalSession) -> None:
    result = local.run(["grep", "-F", "-e", "absent", local.path("/var/log/maillog")])
    assert (result.exit_code, result.stdout) == (1, b"")


def test_local_run_missing_program_is_exit_127(local: LocalSession) -> None:
    result = local.run(["no-such-program-here"])
    assert result.exit_code == 127
    assert b"no-such-program-here" in result.stderr


def test_local_runs_in_the_root_without_a_shell(local: LocalSession) -> None:
    result = local.run(["printf", "%s", "$(echo hi);`id`"])
    assert result.stdout == b"$(echo hi);`id`"
    assert local.run(["pwd"]).stdout.decode().strip() == local.root


@pytest.mark.parametrize(
    "path",
    ["/../etc/passwd", "/var/../../etc/passwd", "/var/log/../../../x", "var/log/maillog", ""],
)
def test_local_path_refuses_escapes(local: LocalSession, path: str) -> None:
    with pytest.raises(TransportError) as caught:
        local.path(path)
    assert caught.value.stage is Stage.READ


def test_local_path_refuses_symlink_out_of_root(local: LocalSession) -> None:
    os.symlink("/etc", os.path.join(local.root, "var/log/etc"))
    with pytest.raises(TransportError, match="escapes the host root"):
        local.path("/var/log/etc/passwd")


def test_local_path_allows_dotdot_inside_root(local: LocalSession) -> None:
    assert local.path("/var/log/../log/maillog") == os.path.join(local.root, "var/log/maillog")


def test_local_timeout(local: LocalSession) -> None:
    started = time.monotonic()
    with pytest.raises(TransportError, match=r"timed out after 0\.5 s") as caught:
        local.run(["sleep", "30"], timeout=0.5)
    assert caught.value.stage is Stage.READ
    assert time.monotonic() - started < 5


def test_local_stream_timeout(local: LocalSession) -> None:
    started = time.monotonic()
    with pytest.raises(TransportError, match="timed out"):
        list(local.stream(["sh", "-c", "echo first; exec sleep 30"], timeout=0.5))
    assert time.monotonic() - started < 5


def test_local_stream_50mb_with_large_stderr_does_not_deadlock(
    local: LocalSession, tmp_path: Path
) -> None:
    big = tmp_path / "host/var/log/big"
    line = b"Mar  3 10:00:00 mx postfix/smtp[1]: ABC: to=<a@example.org>, status=sent %08d\n"
    count = 50_000_000 // len(line) + 1
    big.write_bytes(b"".join(line.replace(b"%08d", b"%08d" % i) for i in range(count)))
    seen: list[int] = []
    lines = 0
    # stderr gets the same 50 MB at the same time: both pipes must be drained.
    script = 'cat "$1" >&2 & cat "$1"; wait'
    for got in local.stream(["sh", "-c", script, "sh", str(big)], on_bytes=seen.append):
        assert got.endswith(b"status=sent %08d" % lines)
        lines += 1
    assert lines == count
    assert sum(seen) == big.stat().st_size > 50_000_000


def test_local_stream_writes_stdin_while_reading_stdout(local: LocalSession) -> None:
    # 20 MB in, 20 MB out at the same time: written before reading, both pipes would fill.
    data = b"".join(b"line %08d\n" % i for i in range(1_500_000))
    got = b"".join(local.stream_chunks(["cat"], stdin=data))
    assert got == data and len(data) > 20_000_000
    assert list(local.stream(["sh", "-c", "cat; echo end"])) == [b"end"]  # no stdin: empty


def test_local_stream_stdin_unread_by_the_command(local: LocalSession) -> None:
    # A command that exits without reading its stdin is no error.
    assert list(local.stream(["echo", "x"], stdin=b"y\n" * 1_000_000)) == [b"x"]


def test_local_stream_keeps_last_line_without_newline(local: LocalSession) -> None:
    assert list(local.stream(["printf", "a\n\nb"])) == [b"a", b"", b"b"]


def test_local_stream_exit_1_is_no_match(local: LocalSession) -> None:
    assert list(local.stream(["grep", "-F", "-e", "zzz", local.path("/var/log/maillog")])) == []


def test_local_stream_exit_2_raises_with_stderr_tail(local: LocalSession) -> None:
    with pytest.raises(TransportError) as caught:
        list(local.stream(["grep", "-F", "-e", "x", local.path("/var/log/absent")]))
    assert caught.value.stage is Stage.READ
    assert "exited with 2" in caught.value.message
    assert "No such file or directory" in caught.value.message


def test_local_stream_stopped_early_ends_the_process(local: LocalSession) -> None:
    stream = local.stream(["sh", "-c", "echo $$; exec sleep 30"])
    pid = int(next(stream))
    stream.close()  # type: ignore[attr-defined]
    assert not os.path.exists(f"/proc/{pid}") or Path(f"/proc/{pid}/stat").read_text().split()[
        2
    ] in ("Z", "X")


# --------------------------------------------------------------------------- ssh fleet

BIG_LINE = b"Mar  3 10:00:00 mx1 postfix/qmgr[42]: 4F2A51C0A3: from=<a@example.org>, size=1 %07d\n"
BIG_COUNT = 20_000_000 // len(BIG_LINE) + 1
BIG_SIZE = BIG_COUNT * len(BIG_LINE % 0)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    files = tmp_path_factory.mktemp("files")
    big = files / "big"
    big.write_bytes(b"".join(BIG_LINE % i for i in range(BIG_COUNT)))
    specs = [
        HostSpec("mx1", files={"/var/log/maillog": "hello\n", "/var/log/big": big}),
        HostSpec("rekey"),
        HostSpec("down"),
        HostSpec("lost"),
        HostSpec("user1", user=USER),
        HostSpec("sudo1", user=USER, sudo=True, sudo_rules=f"{USER} ALL=(root) NOPASSWD: ALL\n"),
        HostSpec("nosudo1", user=USER, sudo=True),
        HostSpec("fifo1", fifo_logs=["/var/log/maillog"]),
        HostSpec("bastion1", jump_only=True),
        HostSpec("inner1", via="bastion1"),
    ]
    with running_fleet(tmp_path_factory.mktemp("sshfleet"), specs) as running:
        yield running


@pytest.fixture(autouse=True)
def no_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the keys a test names: a developer's ssh-agent must not log a test in."""
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.delenv("COLLECTOR_KEY_PASSPHRASE", raising=False)


def host_of(fleet: Fleet, name: str, **changes: object) -> Host:
    address, port = fleet.address(name)
    spec = fleet.spec(name)
    fields: dict[str, object] = {
        "address": address,
        "port": port,
        "user": spec.user,
        "sudo": spec.sudo,
        "identity_file": str(fleet.client_key),
    }
    if spec.via is not None:
        jump_address, jump_port = fleet.address(spec.via)
        fields["proxy_jump"] = f"root@{jump_address}:{jump_port}"
    fields.update(changes)
    return Host(name, **fields)  # type: ignore[arg-type]


def settings_of(fleet: Fleet, **changes: object) -> Settings:
    return Settings(known_hosts=str(fleet.known_hosts), connect_timeout=10, **changes)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def mx1(fleet: Fleet) -> Iterator[Session]:
    session = open_session(host_of(fleet, "mx1"), settings_of(fleet))
    yield session
    session.close()


def connect_error(host: Host, settings: Settings) -> TransportError:
    with pytest.raises(TransportError) as caught:
        open_session(host, settings).close()
    return caught.value


def test_ssh_run(mx1: Session) -> None:
    assert isinstance(mx1, SSHSession)
    result = mx1.run(["sh", "-c", 'cat "$1"; echo warn >&2; exit 4', "sh", "/var/log/maillog"])
    assert (result.stdout, result.stderr, result.exit_code) == (b"hello\n", b"warn\n", 4)
    assert mx1.run(["hostname"]).stdout == b"mx1\n"
    assert mx1.path("/var/log/maillog") == "/var/log/maillog"


def test_ssh_stream_20mb(mx1: Session) -> None:
    seen: list[int] = []
    count = 0
    for line in mx1.stream(["cat", "/var/log/big"], on_bytes=seen.append):
        assert line == (BIG_LINE % count).rstrip(b"\n")
        count += 1
    assert count == BIG_COUNT
    assert sum(seen) == BIG_SIZE > 20_000_000


def test_ssh_stream_writes_stdin_while_reading_stdout(mx1: Session) -> None:
    # 20 MB in, 20 MB out at once through the channel, then end of input (shutdown_write).
    data = b"".join(b"line %08d\n" % i for i in range(1_500_000))
    got = b"".join(mx1.stream_chunks(["cat"], stdin=data, timeout=60))
    assert got == data and len(data) > 20_000_000
    assert list(mx1.stream(["echo", "x"], stdin=b"y\n" * 1_000_000)) == [b"x"]


def test_ssh_stream_drains_stderr_concurrently(mx1: Session) -> None:
    # 20 MB on each pipe at once: reading only stdout would stall the shared window.
    script = 'cat "$1" >&2 & cat "$1"; wait'
    lines = sum(1 for _ in mx1.stream(["sh", "-c", script, "sh", "/var/log/big"], timeout=60))
    assert lines == BIG_COUNT


def test_ssh_run_drains_stderr_concurrently(fleet: Fleet) -> None:
    script = 'cat "$1" >&2 & cat "$1"; wait'
    roomy = settings_of(fleet, run_output_max=64 * 1024 * 1024)
    with contextlib.closing(open_session(host_of(fleet, "mx1"), roomy)) as session:
        result = session.run(["sh", "-c", script, "sh", "/var/log/big"], timeout=60)
    assert len(result.stdout) == BIG_SIZE
    assert 65536 <= len(result.stderr) <= 2 * 65536  # only the tail is kept


def test_ssh_run_stops_a_command_that_prints_too_much(mx1: Session) -> None:
    # run() is for small outputs: a host that sends more is cut off, not held in memory.
    started = time.monotonic()
    with pytest.raises(TransportError) as caught:
        mx1.run(["cat", "/var/log/big"], timeout=60)
    assert caught.value.stage is Stage.READ
    assert caught.value.message == (
        "cat /var/log/big printed more than 4 MiB, the most collector reads from such a "
        "command; it was stopped"
    )
    with pytest.raises(TransportError) as caught:
        mx1.run(["yes"], timeout=60)  # never stops talking
    assert "yes printed more than 4 MiB" in caught.value.message
    assert time.monotonic() - started < 10
    assert mx1.run(["hostname"]).stdout == b"mx1\n"  # the connection is still good


def test_ssh_stream_grep_exit_codes(mx1: Session) -> None:
    assert list(mx1.stream(["grep", "-F", "-e", "hello", "/var/log/maillog"])) == [b"hello"]
    assert list(mx1.stream(["grep", "-F", "-e", "absent", "/var/log/maillog"])) == []
    with pytest.raises(TransportError) as caught:
        list(mx1.stream(["grep", "-F", "-e", "x", "/var/log/absent"]))
    assert caught.value.stage is Stage.READ
    assert "exited with 2" in caught.value.message
    assert "/var/log/absent: No such file or directory" in caught.value.message


HOSTILE = [
    "it's",
    'say "hi"',
    "a; touch CANARY",
    "$(touch CANARY)",
    "`touch CANARY`",
    "line1\nline2; touch CANARY",
    "-n",
    "--help",
    "",
    " spaced  out ",
    "*",
    "$HOME ~ \\ | & > CANARY < /dev/null",
    "ünïcødé\t✓",
]


@pytest.mark.parametrize("word", HOSTILE)
def test_ssh_hostile_argument_arrives_intact(mx1: Session, tmp_path: Path, word: str) -> None:
    canary = tmp_path / "canary"  # /tmp is shared with the host's namespace
    word = word.replace("CANARY", str(canary))
    result = mx1.run(["printf", "%s", word])
    assert result.stdout == word.encode()
    assert result.exit_code == 0
    # The same word as a positional parameter of a constant script.
    result = mx1.run(["sh", "-c", 'printf %s "$1"', "sh", word])
    assert result.stdout == word.encode()
    assert not canary.exists()


def test_ssh_unknown_host_key_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    error = connect_error(host_of(fleet, "mx1"), Settings(known_hosts=str(known_hosts)))
    assert error.stage is Stage.HOST_KEY
    address, port = fleet.address("mx1")
    assert f"unknown host key for [{address}]:{port} (not in {known_hosts})" in error.message
    assert known_hosts.read_text() == ""


def test_ssh_accept_new_records_the_key_then_strict_accepts_it(
    fleet: Fleet, tmp_path: Path
) -> None:
    known_hosts = tmp_path / "new" / "known_hosts"  # neither file nor directory exists
    host = host_of(fleet, "mx1")
    open_session(
        host, Settings(known_hosts=str(known_hosts), host_key_policy=HostKeyPolicy.ACCEPT_NEW)
    ).close()
    lines = known_hosts.read_text().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("|1|")  # hashed, like Debian's HashKnownHosts yes
    assert lines[0].split()[1:] == fleet.host_public_key("mx1").split()
    # ssh-keygen finds the hashed [addr]:port entry too.
    address, port = fleet.address("mx1")
    found = subprocess.run(
        ["ssh-keygen", "-F", f"[{address}]:{port}", "-f", str(known_hosts)],
        capture_output=True,
        check=False,
    )
    assert found.returncode == 0
    session = open_session(host, Settings(known_hosts=str(known_hosts)))
    assert session.run(["hostname"]).stdout == b"mx1\n"
    session.close()


def test_ssh_changed_host_key_is_refused_even_with_accept_new(fleet: Fleet, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(fleet.known_hosts.read_text())
    host = host_of(fleet, "rekey")
    open_session(host, Settings(known_hosts=str(known_hosts))).close()
    fleet.regenerate_host_key("rekey")
    host = host_of(fleet, "rekey")
    before = known_hosts.read_text()
    for policy in HostKeyPolicy:
        error = connect_error(host, Settings(known_hosts=str(known_hosts), host_key_policy=policy))
        assert error.stage is Stage.HOST_KEY
        assert "has CHANGED and was refused" in error.message
        assert known_hosts.read_text() == before


def test_ssh_unauthorized_key(fleet: Fleet, tmp_path: Path) -> None:
    key = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    error = connect_error(host_of(fleet, "mx1", identity_file=str(key)), settings_of(fleet))
    assert error.stage is Stage.AUTH
    assert error.message.startswith("Authentication failed for root@")
    assert str(key) in error.message


def test_ssh_encrypted_key_passphrase_asked_once(
    fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = tmp_path / "locked"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "s3cret", "-f", str(key)], check=True
    )
    authorized = fleet.host_path("mx1", "/root/.ssh/authorized_keys")
    authorized.write_text(authorized.read_text() + key.with_suffix(".pub").read_text())
    host = host_of(fleet, "mx1", identity_file=str(key))
    asked: list[str] = []

    def prompt(path: str) -> str:
        asked.append(path)
        return "s3cret"

    _KEYS.clear()
    for _ in range(2):
        open_session(host, settings_of(fleet), passphrase_provider=prompt).close()
    assert asked == [str(key)]

    _KEYS.clear()
    monkeypatch.setenv("COLLECTOR_KEY_PASSPHRASE", "s3cret")
    open_session(host, settings_of(fleet)).close()

    _KEYS.clear()
    monkeypatch.setenv("COLLECTOR_KEY_PASSPHRASE", "wrong")
    error = connect_error(host, settings_of(fleet))
    assert error.stage is Stage.AUTH
    assert f"wrong passphrase for {key}" in error.message

    _KEYS.clear()
    monkeypatch.delenv("COLLECTOR_KEY_PASSPHRASE")
    error = connect_error(host, settings_of(fleet))
    assert "is encrypted and no passphrase was given" in error.message
    _KEYS.clear()


# --------------------------------------------------------------------------- keys and the agent

def test_sshd_keeps_the_default_max_auth_tries(fleet: Fleet) -> None:
    config = fleet._hosts["mx1"].config  # noqa: SLF001 (the test fleet's own sshd_config)
    effective = subprocess.run(
        ["/usr/sbin/sshd", "-T", "-f", str(config)], check=True, capture_output=True, text=True
    ).stdout.splitlines()
    assert "maxauthtries 6" in effective and AGENT_KEYS > 6


def test_identity_file_is_offered_before_many_agent_keys(
    fleet: Fleet, crowded_agent: Path
) -> None:
    # Agent keys first would use up MaxAuthTries before the authorized identity_file.
    session = open_session(host_of(fleet, "mx1"), settings_of(fleet))
    assert session.run(["hostname"]).stdout == b"mx1\n"
    session.close()


def test_without_identity_file_agent_keys_then_default_files(
    fleet: Fleet, crowded_agent: Path, tmp_path: Path
) -> None:
    # The agent's keys are offered (here the 8th, authorized, key is the agent's).
    key = keygen(tmp_path / "wanted")
    authorized = fleet.host_path("mx1", "/root/.ssh/authorized_keys")
    before = authorized.read_text()
    env = {**os.environ, "SSH_AUTH_SOCK": str(crowded_agent)}
    subprocess.run(["ssh-add", "-q", "-D"], env=env, check=True, capture_output=True)
    subprocess.run(["ssh-add", "-q", str(key)], env=env, check=True, capture_output=True)
    authorized.write_text(before + key.with_name("wanted.pub").read_text())
    try:
        host = host_of(fleet, "mx1", identity_file=None)
        open_session(host, settings_of(fleet)).close()
        error = connect_error(replace(host, identities_only=True), settings_of(fleet))
        assert error.stage is Stage.AUTH  # no agent, and no default ~/.ssh/id_* accepted
        assert "agent" not in error.message
    finally:
        authorized.write_text(before)


def test_identities_only_never_asks_the_agent(
    fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An "agent" that only counts who connects to it.
    sock_path = tmp_path / "fake-agent.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    server.listen(8)
    server.settimeout(0.2)
    asked: list[int] = []
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            asked.append(1)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    monkeypatch.setenv("SSH_AUTH_SOCK", str(sock_path))
    try:
        host = host_of(fleet, "mx1", identities_only=True)
        with contextlib.closing(open_session(host, settings_of(fleet))) as session:
            assert session.run(["hostname"]).stdout == b"mx1\n"
        assert asked == []
        # Without identities_only the agent is asked; one that hangs up is skipped.
        open_session(host_of(fleet, "mx1"), settings_of(fleet)).close()
        assert asked
        error = connect_error(host_of(fleet, "mx1", identity_file=None), settings_of(fleet))
        assert error.stage is Stage.AUTH
        assert "ssh-agent at $SSH_AUTH_SOCK did not answer" in error.message
    finally:
        done.set()
        thread.join()
        server.close()


def test_the_agents_copy_of_an_encrypted_identity_file_needs_no_passphrase(
    fleet: Fleet, crowded_agent: Path, tmp_path: Path
) -> None:
    key = keygen(tmp_path / "locked", "s3cret")
    authorized = fleet.host_path("mx1", "/root/.ssh/authorized_keys")
    before = authorized.read_text()
    authorized.write_text(before + key.with_name("locked.pub").read_text())
    askpass = tmp_path / "askpass"
    askpass.write_text("#!/bin/sh\necho s3cret\n")
    askpass.chmod(0o755)
    env = {**os.environ, "SSH_AUTH_SOCK": str(crowded_agent), "SSH_ASKPASS": str(askpass),
           "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"}  # fmt: skip
    subprocess.run(["ssh-add", "-q", str(key)], env=env, check=True, capture_output=True,
                   stdin=subprocess.DEVNULL)
    asked: list[str] = []

    def prompt(path: str) -> str | None:
        asked.append(path)
        return None

    try:
        _KEYS.clear()
        host = host_of(fleet, "mx1", identity_file=str(key))
        open_session(host, settings_of(fleet), passphrase_provider=prompt).close()
        assert asked == []
    finally:
        _KEYS.clear()
        authorized.write_text(before)


def test_ssh_connection_refused(fleet: Fleet) -> None:
    host = host_of(fleet, "down")
    open_session(host, settings_of(fleet)).close()
    fleet.stop_host("down")
    error = connect_error(host, settings_of(fleet))
    assert error.stage is Stage.CONNECT
    assert error.message == f"connection refused ({host.address}:{host.port})"


def test_ssh_connection_lost_mid_command(fleet: Fleet) -> None:
    session = open_session(host_of(fleet, "lost"), settings_of(fleet))
    killer = threading.Timer(0.5, fleet.stop_host, args=("lost",))
    killer.start()
    try:
        with pytest.raises(TransportError) as caught:
            session.run(["sleep", "20"], timeout=10)
    finally:
        killer.join()
        session.close()
    assert caught.value.stage is Stage.READ
    assert caught.value.message == "connection lost while a command ran"
    assert caught.value.command == "sleep 20"  # for --debug; never in the message


def test_ssh_unresolvable_name() -> None:
    error = connect_error(Host("ghost", address="no-such-host.invalid"), Settings())
    assert error.stage is Stage.CONNECT
    assert error.message.startswith("cannot resolve no-such-host.invalid")


def test_ssh_silent_server_times_out() -> None:
    with socket_that_never_answers() as port:
        started = time.monotonic()
        error = connect_error(
            Host("mute", address="127.0.0.1", port=port), Settings(connect_timeout=1)
        )
    assert error.stage is Stage.CONNECT
    assert "127.0.0.1" in error.message
    assert time.monotonic() - started < 5


@contextlib.contextmanager
def socket_that_never_answers() -> Iterator[int]:
    """A TCP listener on loopback that accepts and then says nothing (no SSH banner)."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            accepted.append(server.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield server.getsockname()[1]
    finally:
        server.close()
        for conn in accepted:
            conn.close()


def test_ssh_command_timeout_then_session_still_usable(mx1: Session) -> None:
    started = time.monotonic()
    with pytest.raises(TransportError) as caught:
        mx1.run(["sleep", "30"], timeout=2)
    elapsed = time.monotonic() - started
    assert caught.value.stage is Stage.READ
    assert caught.value.message == "command timed out after 2 s"
    assert caught.value.command is not None and caught.value.command.endswith("sleep 30")
    assert 1.9 < elapsed < 6
    assert mx1.run(["echo", "ok"]).stdout == b"ok\n"


def test_ssh_timeout_ends_a_non_root_command(fleet: Fleet) -> None:
    # sshd honours the "signal" request only in a privilege-separated (non-root) session.
    session = open_session(host_of(fleet, "user1"), settings_of(fleet))
    try:
        with pytest.raises(TransportError, match="timed out after 2 s"):
            session.run(["sleep", "31"], timeout=2)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and sleepers(fleet, "user1"):
            time.sleep(0.05)
        assert sleepers(fleet, "user1") == []
    finally:
        session.close()


def sleepers(fleet: Fleet, name: str) -> list[int]:
    found = []
    for pid in fleet.namespace_pids(name):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sleep\x0031"):
                found.append(pid)
        except OSError:
            pass
    return found


def test_ssh_stream_from_fifo_times_out(fleet: Fleet) -> None:
    session = open_session(host_of(fleet, "fifo1"), settings_of(fleet))
    try:
        started = time.monotonic()
        with pytest.raises(TransportError) as caught:
            list(session.stream(["cat", "/var/log/maillog"], timeout=2))
        assert caught.value.stage is Stage.READ
        assert "timed out after 2 s" in caught.value.message
        assert time.monotonic() - started < 6
    finally:
        session.close()


def test_ssh_sudo_missing_rule(fleet: Fleet) -> None:
    session = open_session(host_of(fleet, "nosudo1"), settings_of(fleet))
    try:
        with pytest.raises(TransportError) as caught:
            session.run(["id", "-u"])
        assert caught.value.stage is Stage.SUDO
        assert "sudo -n refused (sudo: a password is required)" in caught.value.message
        with pytest.raises(TransportError) as caught:
            list(session.stream(["id", "-u"]))
        assert caught.value.stage is Stage.SUDO
        # Without sudo the same user runs the command as itself.
        assert session.run(["id", "-un"], sudo=False).stdout == f"{USER}\n".encode()
    finally:
        session.close()


def test_ssh_sudo_with_rule(fleet: Fleet) -> None:
    session = open_session(host_of(fleet, "sudo1"), settings_of(fleet))
    try:
        result = session.run(["id", "-u"])
        assert result.command == "sudo -n -- id -u"
        assert result.stdout == b"0\n"
        assert list(session.stream(["printf", "%s\n", "a b", "$(x)"])) == [b"a b", b"$(x)"]
    finally:
        session.close()


def test_ssh_proxy_jump(fleet: Fleet) -> None:
    host = host_of(fleet, "inner1")
    session = open_session(host, settings_of(fleet))
    try:
        assert session.run(["hostname"]).stdout == b"inner1\n"
    finally:
        session.close()
    assert (host.address, host.port) in fleet.forwarded_to("bastion1")


def test_ssh_proxy_jump_checks_the_bastion_host_key(fleet: Fleet, tmp_path: Path) -> None:
    inner_address, inner_port = fleet.address("inner1")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[{inner_address}]:{inner_port} {fleet.host_public_key('inner1')}\n")
    error = connect_error(host_of(fleet, "inner1"), Settings(known_hosts=str(known_hosts)))
    bastion_address, bastion_port = fleet.address("bastion1")
    assert error.stage is Stage.HOST_KEY
    assert f"unknown host key for [{bastion_address}]:{bastion_port}" in error.message


def test_ssh_proxy_jump_unreachable_target(fleet: Fleet) -> None:
    host = host_of(fleet, "inner1", port=1)  # nothing listens on port 1
    error = connect_error(host, settings_of(fleet))
    assert error.stage is Stage.CONNECT
    assert f"could not reach {host.address}:1" in error.message


@pytest.mark.parametrize(
    ("spec", "hops"),
    [
        ("bastion", [("me", "bastion", 22)]),
        ("ops@b1:2222", [("ops", "b1", 2222)]),
        ("a@b1:1, c@b2", [("a", "b1", 1), ("c", "b2", 22)]),
        ("[::1]:2200", [("me", "::1", 2200)]),
    ],
)
def test_parse_proxy_jump(spec: str, hops: list[tuple[str, str, int]]) -> None:
    assert [(h.user, h.address, h.port) for h in parse_proxy_jump(spec, "me")] == hops


@pytest.mark.parametrize("spec", ["", "a@", "b:0", "b:notaport", "x,"])
def test_parse_proxy_jump_rejects(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_proxy_jump(spec, "me")


def test_a_local_timeout_ends_the_whole_command(tmp_path: Path) -> None:
    # `sh` waits on a reader of a FIFO that no one writes: killing only `sh` would leave the
    # reader running, holding the output pipe open (and the host's worker) for ever.
    fifo = tmp_path / "var" / "log" / "maillog"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    session = LocalSession(Host("fifo1", transport=TransportKind.LOCAL, root=str(tmp_path)),
                           Settings(command_timeout=1))
    script = 'cat -- "$1" | grep -F x; echo done'
    for read in (
        lambda: session.run(["sh", "-c", script, "sh", "var/log/maillog"]),
        lambda: list(session.stream(["sh", "-c", script, "sh", "var/log/maillog"])),
    ):
        started = time.monotonic()
        with pytest.raises(TransportError, match="timed out after 1 s"):
            read()
        assert time.monotonic() - started < 5
    left = subprocess.run(["pgrep", "-f", "cat -- var/log/maillog"], capture_output=True,
                          check=False)
    assert left.stdout == b"", "a reader of the FIFO is still running"


def test_a_bastion_channel_closes_quietly_when_the_bastion_is_gone() -> None:
    """The next hop's transport closes its socket (the channel) from its own thread; with the
    bastion's connection gone paramiko raises EOFError there, a traceback on stderr."""
    from collector.transport.ssh import QuietClose

    class Gone:
        closed = 0

        def close(self) -> None:
            Gone.closed += 1
            raise EOFError()

        def recv(self, n: int) -> bytes:
            return b"x" * n

    sock = QuietClose(Gone())  # type: ignore[arg-type]
    sock.close()
    assert Gone.closed == 1 and sock.recv(2) == b"xx"


def test_paramiko_is_imported_without_invoke_and_match_exec_still_works() -> None:
    """invoke (paramiko's runner for ssh_config's ``Match exec``) costs ~50 ms of every SSH
    run's start-up: it is imported when a config uses it, not with paramiko."""
    import subprocess
    import sys

    script = (
        "import sys, collector.transport.ssh, paramiko\n"
        "print(type(sys.modules['invoke']).__name__)\n"
        "cfg = paramiko.SSHConfig.from_text("
        "'Match exec \"true\"\\n  User bob\\nMatch exec \"false\"\\n  Port 2222\\n')\n"
        "print(sorted(cfg.lookup('x').items()))\n"
        "print(type(sys.modules['invoke']).__name__, callable(sys.modules['invoke'].run))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out == ["_Deferred", "[('hostname', 'x'), ('user', 'bob')]", "module True"]

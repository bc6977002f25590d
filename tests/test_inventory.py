"""Inventory loading: every key, the cascade, ~/.ssh/config, validation messages, selection."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from collector.errors import CollectorError, InventoryError, TransportError, UsageError
from collector.inventory.load import (
    HOST_NAME_RULE,
    JumpHop,
    find_inventory,
    host_zone,
    load_inventory,
    parse_proxy_jump,
    select_hosts,
)
from collector.models import (
    Host,
    HostError,
    HostKeyPolicy,
    Inventory,
    Settings,
    SourceMode,
    Stage,
    TransportKind,
)

FIXTURES = Path(__file__).parent / "fixtures" / "inventory"
REPO = Path(__file__).parent.parent
NO_SSH_CONFIG = Path("/nonexistent/ssh_config")


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private $HOME, so `~` never points at the real user's keys or ssh config."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    return home


def write(tmp_path: Path, text: str, name: str = "inv.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load(tmp_path: Path, text: str, ssh_config: str | None = None) -> Inventory:
    ssh_path = NO_SSH_CONFIG
    if ssh_config is not None:
        ssh_path = write(tmp_path, ssh_config, "ssh_config")
    return load_inventory(write(tmp_path, text), ssh_config_path=ssh_path)


def error(tmp_path: Path, text: str, ssh_config: str | None = None) -> str:
    with pytest.raises(InventoryError) as info:
        load(tmp_path, text, ssh_config)
    return str(info.value).replace(str(tmp_path / "inv.toml"), "INV")


# --------------------------------------------------------------------------- every key


def test_fixture_fleet_sets_every_key() -> None:
    inv = load_inventory(FIXTURES / "fleet.toml", ssh_config_path=NO_SSH_CONFIG)
    assert inv.path == str(FIXTURES / "fleet.toml")
    assert inv.groups == ("inbound", "us")
    assert inv.settings == Settings(
        known_hosts=str(FIXTURES / "keys" / "known_hosts"),
        host_key_policy=HostKeyPolicy.ACCEPT_NEW,
        workers=3,
        connect_timeout=2.5,
        command_timeout=60.0,
    )
    key = str(FIXTURES / "keys" / "id_ed25519")
    jump = "jump@bastion.example.net:2222"
    assert inv.hosts == (
        Host(
            name="mx1", address="192.0.2.10", port=2202, user="collector", identity_file=key,
            proxy_jump=jump, sudo=True, timezone="UTC", groups=("inbound",),
            aliases=("mx1.example.com", "192.0.2.10"), source=SourceMode.FILES,
        ),
        # groups apply in the host's order: "us" sets port 2203, then "inbound" 2202
        Host(
            name="mx2", address="mx2", port=2202, user="admin", identity_file=key,
            proxy_jump=jump, sudo=True, timezone="America/New_York", groups=("us", "inbound"),
            logs=("/var/log/mail.log", "/var/log/mail.log.*"), source=SourceMode.FILES,
        ),
        Host(
            name="mbox", address="mbox.internal", port=2201, user="collector",
            identity_file=key, timezone="UTC", source=SourceMode.JOURNAL,
        ),
        # inherited ssh settings do not apply to a directory
        Host(
            name="archive", transport=TransportKind.LOCAL, timezone="UTC",
            root=str(FIXTURES / "fleet" / "archive"), source=SourceMode.AUTO,
        ),
    )  # fmt: skip


def test_example_inventory_loads() -> None:
    inv = load_inventory(REPO / "inventory.example.toml", ssh_config_path=NO_SSH_CONFIG)
    names = [h.name for h in inv.hosts]
    assert names == ["mx1", "mx2", "filter1", "mbox1", "out1", "archive", "loghost", "out2",
                     "out3"]
    by_name = {h.name: h for h in inv.hosts}
    assert by_name["mx1"].proxy_jump == "jump@bastion.example.net:2222"
    assert by_name["mx1"].sudo is True
    assert by_name["mx2"].timezone == "America/New_York"
    assert by_name["filter1"].logs == ("/var/log/mail.log", "/var/log/mail.log.*")
    assert by_name["mbox1"].source is SourceMode.JOURNAL
    assert by_name["out1"].proxy_jump is None
    assert by_name["archive"].transport is TransportKind.LOCAL
    assert by_name["archive"].root == str(REPO / "archive" / "mx-old")
    assert by_name["loghost"].collects == ("out2", "out3")
    assert (by_name["out2"].via, by_name["out2"].address) == ("loghost", None)


def test_example_documents_every_key() -> None:
    text = (REPO / "inventory.example.toml").read_text()
    keys = (
        "known_hosts", "host_key_policy", "workers", "connect_timeout", "command_timeout",
        "[defaults]", "[groups.", "[[hosts]]", "name", "address", "port", "user",
        "identity_file", "identities_only", "proxy_jump", "sudo", "timezone", "groups", "aliases", "transport",
        "root", "logs", "source", "accept-new", '"journal"', '"local"', "collects",
    )  # fmt: skip
    assert [k for k in keys if k not in text] == []


def test_minimal_host_gets_model_defaults(tmp_path: Path) -> None:
    inv = load(tmp_path, '[[hosts]]\nname = "mx1"\n')
    assert inv.hosts == (Host(name="mx1", address="mx1"),)
    assert inv.settings == Settings()
    assert inv.groups == ()


def test_cascade_defaults_then_groups_in_host_order_then_host(tmp_path: Path) -> None:
    inv = load(
        tmp_path,
        """
[defaults]
user = "d"
port = 1
sudo = true
timezone = "UTC"
[groups.a]
port = 2
user = "a"
[groups.b]
port = 3
[[hosts]]
name = "ab"
groups = ["a", "b"]
[[hosts]]
name = "ba"
groups = ["b", "a"]
[[hosts]]
name = "own"
groups = ["a", "b"]
port = 4
sudo = false
""",
    )
    got = {h.name: (h.user, h.port, h.sudo, h.timezone) for h in inv.hosts}
    assert got == {
        "ab": ("a", 3, True, "UTC"),
        "ba": ("a", 2, True, "UTC"),
        "own": ("a", 4, False, "UTC"),
    }


def test_duplicate_group_and_log_entries_are_kept_once(tmp_path: Path) -> None:
    inv = load(
        tmp_path,
        '[groups.a]\n[[hosts]]\nname = "h"\ngroups = ["a", "a"]\nlogs = ["/x", "/x", "/y"]\n'
        'aliases = ["h2", "h2"]\n',
    )
    assert inv.hosts[0].groups == ("a",)
    assert inv.hosts[0].logs == ("/x", "/y")
    assert inv.hosts[0].aliases == ("h2",)


def test_proxy_jump_none_clears_a_group_jump(tmp_path: Path) -> None:
    inv = load(
        tmp_path,
        '[defaults]\nproxy_jump = "b1,u@b2:2"\n[[hosts]]\nname = "a"\n'
        '[[hosts]]\nname = "b"\nproxy_jump = "none"\n',
    )
    assert [h.proxy_jump for h in inv.hosts] == ["b1,u@b2:2", None]


# --------------------------------------------------------------------------- paths


def test_relative_paths_are_relative_to_the_inventory_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf").mkdir()
    write(
        tmp_path,
        'known_hosts = "kh"\n[[hosts]]\nname = "a"\nidentity_file = "../keys/id"\n'
        '[[hosts]]\nname = "l"\ntransport = "local"\nroot = "dirs/l"\n',
        "conf/inv.toml",
    )
    monkeypatch.chdir(tmp_path)  # a relative inventory path, a different working directory
    inv = load_inventory("conf/inv.toml", ssh_config_path=NO_SSH_CONFIG)
    assert inv.path == "conf/inv.toml"
    assert inv.settings.known_hosts == str(tmp_path / "conf" / "kh")
    assert inv.hosts[0].identity_file == str(tmp_path / "conf" / ".." / "keys" / "id")
    assert inv.hosts[1].root == str(tmp_path / "conf" / "dirs" / "l")


def test_tilde_is_expanded(tmp_path: Path, home: Path) -> None:
    inv = load(
        tmp_path,
        'known_hosts = "~/kh"\n[[hosts]]\nname = "a"\nidentity_file = "~/.ssh/id"\n'
        '[[hosts]]\nname = "l"\ntransport = "local"\nroot = "~/root"\n',
    )
    assert inv.settings.known_hosts == str(home / "kh")
    assert inv.hosts[0].identity_file == str(home / ".ssh" / "id")
    assert inv.hosts[1].root == str(home / "root")


def test_absolute_paths_stay(tmp_path: Path) -> None:
    inv = load(tmp_path, 'known_hosts = "/etc/ssh/kh"\n[[hosts]]\nname = "a"\n')
    assert inv.settings.known_hosts == "/etc/ssh/kh"


# --------------------------------------------------------------------------- ~/.ssh/config


PLAIN_HOSTS = """
[[hosts]]
name = "mx1"
[[hosts]]
name = "mx2"
[[hosts]]
name = "relay1"
[[hosts]]
name = "other"
[[hosts]]
name = "lab"
transport = "local"
root = "lab"
"""


def test_ssh_config_fills_what_the_inventory_leaves_unset(home: Path) -> None:
    (home / ".ssh" / "other_key").write_text("")  # the first IdentityFile does not exist
    inv = load_inventory(FIXTURES / "fleet.toml", ssh_config_path=FIXTURES / "ssh_config")
    # everything the fleet sets wins over ssh config; only mx2's address comes from it
    assert [h.address for h in inv.hosts] == ["192.0.2.10", "mx2.lan", "mbox.internal", None]
    assert [h.user for h in inv.hosts[:3]] == ["collector", "admin", "collector"]

    inv = load_inventory(write(home, PLAIN_HOSTS), ssh_config_path=FIXTURES / "ssh_config")
    got = {h.name: (h.address, h.user, h.port, h.identity_file, h.proxy_jump) for h in inv.hosts}
    assert got == {
        "mx1": ("mx1.ssh-config.example", "sshuser", 2022, None, None),
        "mx2": ("mx2.lan", "fallback", 22, str(home / ".ssh" / "other_key"), None),
        # Match originalhost; the jump host comes from an Include'd file
        "relay1": ("relay1", "relayuser", 22, None, "jumper@bastion.ssh-config.example:2200"),
        "other": ("other", "fallback", 22, None, None),
        "lab": (None, None, None, None, None),  # a local host never reads ssh config
    }


def test_identity_file_falls_back_to_the_first_listed(home: Path) -> None:
    inv = load_inventory(write(home, PLAIN_HOSTS), ssh_config_path=FIXTURES / "ssh_config")
    assert inv.hosts[1].identity_file == str(home / ".ssh" / "missing_key")


def test_inventory_values_win_over_ssh_config(tmp_path: Path) -> None:
    inv = load(
        tmp_path,
        '[defaults]\nuser = "inv"\n[[hosts]]\nname = "mx1"\naddress = "10.0.0.1"\nport = 2\n'
        'identity_file = "/k"\nproxy_jump = "none"\n',
        "Host mx1\n  HostName cfg\n  User cfg\n  Port 9\n  IdentityFile /cfg\n  ProxyJump b\n",
    )
    assert inv.hosts == (
        Host(name="mx1", address="10.0.0.1", port=2, user="inv", identity_file="/k"),
    )


def test_identities_only_from_the_inventory_or_ssh_config(tmp_path: Path) -> None:
    hosts = (
        '[defaults]\nidentity_file = "/k"\n[[hosts]]\nname = "a"\n[[hosts]]\nname = "b"\n'
        '[[hosts]]\nname = "c"\nidentities_only = false\n[[hosts]]\nname = "d"\n'
        'identities_only = true\n[[hosts]]\nname = "e"\n'
    )
    config = (
        "Host a c\n  IdentitiesOnly yes\nHost b\n  IdentitiesOnly no\n"
        "Host d\n  IdentitiesOnly no\n"
    )
    inv = load(tmp_path, hosts, config)
    assert {h.name: h.identities_only for h in inv.hosts} == {
        "a": True,  # from ssh config
        "b": False,
        "c": False,  # the inventory wins
        "d": True,
        "e": False,  # the default
    }
    assert load(tmp_path, '[[hosts]]\nname = "a"\n').hosts == (Host(name="a", address="a"),)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[[hosts]]\nname = "mx1"\nidentities_only = "yes"\n',
         "INV:3: host mx1: 'identities_only' must be true or false, got \"yes\""),
        ('[[hosts]]\nname = "mx1"\ntransport = "local"\nroot = "."\nidentities_only = true\n',
         "INV:5: host mx1: 'identities_only' is for ssh hosts; this host has transport \"local\""),
    ],
)  # fmt: skip
def test_identities_only_errors(tmp_path: Path, text: str, expected: str) -> None:
    assert error(tmp_path, text).startswith(expected)


def test_jump_hosts_are_resolved_through_ssh_config(tmp_path: Path) -> None:
    inv = load(
        tmp_path,
        '[[hosts]]\nname = "mx1"\nproxy_jump = "b1,ops@b2:7,b3"\n',
        "Host b1\n  HostName b1.example\n  Port 2200\nHost b2\n  HostName b2.example\n"
        "  User cfg\n  Port 9\nHost b3\n  User u3\n",
    )
    assert inv.hosts[0].proxy_jump == "b1.example:2200,ops@b2.example:7,u3@b3"


def test_ssh_config_first_value_wins_and_patterns_match(tmp_path: Path) -> None:
    inv = load(
        tmp_path,
        '[[hosts]]\nname = "mx1.example.com"\n[[hosts]]\nname = "mx2.example.com"\n',
        "Host !mx2* *.example.com\n  User first\nHost *\n  User second\n  Port 2022\n",
    )
    assert [(h.user, h.port) for h in inv.hosts] == [("first", 2022), ("second", 2022)]


def test_missing_ssh_config_is_fine(tmp_path: Path) -> None:
    inv = load_inventory(
        write(tmp_path, '[[hosts]]\nname = "a"\n'), ssh_config_path=tmp_path / "absent"
    )
    assert inv.hosts[0].address == "a"


def test_default_ssh_config_is_the_users(home: Path) -> None:
    (home / ".ssh" / "config").write_text("Host a\n  HostName from-home\n")
    inv = load_inventory(write(home, '[[hosts]]\nname = "a"\n'))
    assert inv.hosts[0].address == "from-home"


@pytest.mark.parametrize(
    ("ssh_config", "expected"),
    [
        ("Host a\n  Port http\n", "CFG: host a: Port 'http' is not a port number"),
        ("Host a\n  ProxyJump b\nHost b\n  Port 0\n", "CFG: host b: Port '0' is not a port number"),
        ("Host a\n  ProxyJump x@@:\n", "CFG: host a: ProxyJump: bad ProxyJump hop 'x@@:'"),
        ("Host a\nthis-line-has-no-value\n", "CFG: bad ssh config: Unparsable line this-line-has-no-value"),
    ],
)  # fmt: skip
def test_bad_ssh_config_is_an_inventory_error(
    tmp_path: Path, ssh_config: str, expected: str
) -> None:
    message = error(tmp_path, '[[hosts]]\nname = "a"\n', ssh_config)
    assert message.replace(str(tmp_path / "ssh_config"), "CFG") == expected


# --------------------------------------------------------------------------- validation

H = '[[hosts]]\nname = "mx1"\n'  # a valid host to append to settings-only cases

VALIDATION_CASES = [
    # unknown keys, each place they can be
    ("wokers = 4\n" + H, "INV:1: top level: unknown key 'wokers' (did you mean 'workers'?)"),
    ('user = "x"\n' + H, ("INV:1: top level: unknown key 'user' "
     "(host keys belong in [defaults], [groups.NAME] or [[hosts]])")),
    ("[defaults]\nsudoo = true\n" + H,
     "INV:2: [defaults]: unknown key 'sudoo' (did you mean 'sudo'?)"),
    ("[defaults]\nworkers = 2\n" + H, ("INV:2: [defaults]: unknown key 'workers' "
     "(a file-wide setting: put it above the first [table])")),
    ("[groups.in]\nport = 1\n\nproxyjump = 'b'\n" + H,
     "INV:4: [groups.in]: unknown key 'proxyjump' (did you mean 'proxy_jump'?)"),
    (H + H.replace("mx1", "mx2") + 'adress = "x"\n',
     "INV:5: host mx2: unknown key 'adress' (did you mean 'address'?)"),
    (H + "[hosts.extra]\nx = 1\n", "INV:3: host mx1: unknown key 'extra'"),
    # host-only keys outside a host
    ('[defaults]\nname = "x"\n' + H, "INV:2: [defaults]: 'name' can only be set in a [[hosts]] table"),
    ('[groups.a]\ngroups = ["b"]\n' + H,
     "INV:2: [groups.a]: 'groups' can only be set in a [[hosts]] table"),
    ('[defaults]\naliases = ["x"]\n' + H,
     "INV:2: [defaults]: 'aliases' can only be set in a [[hosts]] table"),
    # wrong types and values, globals
    ('host_key_policy = "ask"\n' + H,
     "INV:1: top level: 'host_key_policy' must be one of \"strict\", \"accept-new\", got \"ask\""),
    ("workers = 0\n" + H, "INV:1: top level: 'workers' must be an integer of at least 1, got 0"),
    ("workers = 1.5\n" + H,
     "INV:1: top level: 'workers' must be an integer of at least 1, got 1.5"),
    ("workers = true\n" + H,
     "INV:1: top level: 'workers' must be an integer of at least 1, got true"),
    ("connect_timeout = -1\n" + H,
     "INV:1: top level: 'connect_timeout' must be a number of seconds above 0, got -1"),
    ("connect_timeout = nan\n" + H,
     "INV:1: top level: 'connect_timeout' must be a number of seconds above 0, got nan"),
    ('command_timeout = "5m"\n' + H,
     "INV:1: top level: 'command_timeout' must be a number of seconds above 0, got \"5m\""),
    ("known_hosts = 1\n" + H, "INV:1: top level: 'known_hosts' must be a non-empty string, got 1"),
    # wrong types and values, host keys
    (H + 'port = "22"\n', "INV:3: host mx1: 'port' must be an integer from 1 to 65535, got \"22\""),
    (H + "port = 70000\n", "INV:3: host mx1: 'port' must be an integer from 1 to 65535, got 70000"),
    ("[defaults]\nport = true\n" + H,
     "INV:2: [defaults]: 'port' must be an integer from 1 to 65535, got true"),
    (H + 'sudo = "yes"\n', "INV:3: host mx1: 'sudo' must be true or false, got \"yes\""),
    (H + "address = 5\n", "INV:3: host mx1: 'address' must be a non-empty string, got 5"),
    (H + 'user = ""\n', "INV:3: host mx1: 'user' must be a non-empty string, got \"\""),
    (H + "identity_file = []\n",
     "INV:3: host mx1: 'identity_file' must be a non-empty string, got an array"),
    (H + 'timezone = "CEST"\n', ("INV:3: host mx1: 'timezone' must be an IANA time zone name "
     "like \"Europe/Berlin\", got \"CEST\"")),
    (H + 'timezone = "../etc/passwd"\n', ("INV:3: host mx1: 'timezone' must be an IANA time "
     "zone name like \"Europe/Berlin\", got \"../etc/passwd\"")),
    (H + 'proxy_jump = "a@b:99999"\n', ("INV:3: host mx1: 'proxy_jump' must be "
     "\"[user@]host[:port]\" hops separated by commas, or \"none\", got \"a@b:99999\"")),
    (H + 'groups = "in"\n', "INV:3: host mx1: 'groups' must be an array of strings, got \"in\""),
    (H + 'aliases = ["a b"]\n', ("INV:3: host mx1: 'aliases' must be an array of non-empty "
     "strings without spaces, got [\"a b\"]")),
    (H + 'transport = "sftp"\n',
     "INV:3: host mx1: 'transport' must be one of \"ssh\", \"local\", got \"sftp\""),
    ('[groups.j]\nsource = "syslog"\n' + H, ("INV:2: [groups.j]: 'source' must be one of "
     "\"auto\", \"files\", \"journal\", got \"syslog\"")),
    (H + 'logs = ["mail.log"]\n', ("INV:3: host mx1: 'logs' must be an array of absolute paths "
     "or globs, got [\"mail.log\"]")),
    (H + "logs = []\n",
     "INV:3: host mx1: 'logs' must be an array of absolute paths or globs, got an array"),
    # names
    ("[[hosts]]\nname = 5\n",
     "INV:2: host #1: 'name' must be " + HOST_NAME_RULE + ", got 5"),
    ('[[hosts]]\nname = "mx 1"\n',
     "INV:2: host #1: 'name' must be " + HOST_NAME_RULE + ", got \"mx 1\""),
    ('[[hosts]]\nname = "../x"\n',
     "INV:2: host #1: 'name' must be " + HOST_NAME_RULE + ", got \"../x\""),
    ('[[hosts]]\nname = "/abs"\n',
     "INV:2: host #1: 'name' must be " + HOST_NAME_RULE + ", got \"/abs\""),
    ('[[hosts]]\nname = "mx1\\u001b[31m"\n',
     "INV:2: host #1: 'name' must be " + HOST_NAME_RULE + ", got \"mx1\\u001b[31m\""),
    (H + '[[hosts]]\nport = 1\n', "INV:3: host #2: missing required key 'name'"),
    (H + '\n[[hosts]]\nname = "MX1"\n',
     "INV:5: host MX1: name 'MX1' is already the name of host mx1"),
    (H + 'aliases = ["relay"]\n[[hosts]]\nname = "relay"\n',
     "INV:5: host relay: name 'relay' is already the alias of host mx1"),
    (H + 'aliases = ["10.0.0.1"]\n[[hosts]]\nname = "mx2"\naliases = ["10.0.0.1"]\n',
     "INV:6: host mx2: alias '10.0.0.1' is already the alias of host mx1"),
    # groups
    ('[groups.inbound]\n[[hosts]]\nname = "mx1"\ngroups = ["inbund"]\n',
     "INV:4: host mx1: unknown group 'inbund' (did you mean 'inbound'?)"),
    ('[groups.a]\n[groups.b]\n[[hosts]]\nname = "mx1"\ngroups = ["zzz"]\n',
     "INV:5: host mx1: unknown group 'zzz' (known: a, b)"),
    (H + 'groups = ["in"]\n', ("INV:3: host mx1: unknown group 'in' "
     "(no [groups.NAME] tables are defined)")),
    # transport and root
    (H + 'transport = "local"\n',
     "INV:1: host mx1: transport \"local\" needs 'root' (the directory that is its /)"),
    (H + 'root = "/srv/mx1"\n', "INV:3: host mx1: 'root' is for transport \"local\" only"),
    ('[defaults]\nroot = "/srv"\n' + H,
     "INV:2: host mx1: 'root' is for transport \"local\" only (set in [defaults])"),
    (H + 'transport = "local"\nroot = "r"\nuser = "u"\n',
     "INV:5: host mx1: 'user' is for ssh hosts; this host has transport \"local\""),
    ('[groups.j]\nsource = "journal"\n' + H + 'groups = ["j"]\nlogs = ["/x"]\n',
     "INV:6: host mx1: 'logs' lists files but 'source' is \"journal\" (set in [groups.j])"),
    # structure
    ("workers = 2\n", "INV: no hosts: add at least one [[hosts]] table"),
    ('hosts = "mx1"\n', ("INV:1: top level: 'hosts' must be an array of [[hosts]] tables, "
     "got \"mx1\"")),
    ('[hosts]\nname = "mx1"\n',
     "INV:1: top level: 'hosts' must be an array of [[hosts]] tables, got a table"),
    ('groups = ["a"]\n' + H,
     "INV:1: top level: 'groups' must be a table of [groups.NAME] tables, got [\"a\"]"),
    ("[groups]\nin = 3\n" + H, "INV:2: [groups.in] must be a table, got 3"),
    ("defaults = 1\n" + H, "INV:1: [defaults] must be a table, got 1"),
    # TOML syntax
    ('[[hosts]]\nname = "mx1"\nport = \n', "INV:3:8: invalid TOML: Invalid value"),
    ('[[hosts]]\nname = "mx1\n', "INV:2:12: invalid TOML: Illegal character '\\n'"),
    ('[[hosts]]\nname = "a"\nname = "b"\n',
     "INV:3:11: invalid TOML: Cannot overwrite a value"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), VALIDATION_CASES)
def test_validation_error_message(tmp_path: Path, text: str, expected: str) -> None:
    assert error(tmp_path, text) == expected


def test_validation_error_keeps_its_parts(tmp_path: Path) -> None:
    with pytest.raises(InventoryError) as info:
        load(tmp_path, '[[hosts]]\nname = "mx1"\nport = "22"\n')
    err = info.value
    assert isinstance(err, CollectorError)
    assert (err.path, err.line, err.section, err.key, err.host) == (
        str(tmp_path / "inv.toml"), 3, "host mx1", "port", "mx1",
    )  # fmt: skip


def test_inline_hosts_are_reported_without_a_line(tmp_path: Path) -> None:
    message = error(tmp_path, 'hosts = [{ name = "a" }, { name = "b", port = 0 }]\n')
    assert message == "INV: host b: 'port' must be an integer from 1 to 65535, got 0"


def test_multiline_strings_do_not_confuse_line_numbers(tmp_path: Path) -> None:
    # line 7 looks like `port = ...` but is inside a string
    text = '[[hosts]]\nname = "a"\nlogs = [\n  "/x",\n]\naddress = """\\\nport = 1"""\nport = 0\n'
    assert error(tmp_path, text) == (
        "INV:8: host a: 'port' must be an integer from 1 to 65535, got 0"
    )


def test_unreadable_inventory(tmp_path: Path) -> None:
    with pytest.raises(InventoryError) as info:
        load_inventory(tmp_path / "absent.toml", ssh_config_path=NO_SSH_CONFIG)
    assert str(info.value) == (
        f"{tmp_path / 'absent.toml'}: cannot read the inventory: No such file or directory"
    )
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'[[hosts]]\nname = "m\xe9"\n')
    with pytest.raises(InventoryError) as info:
        load_inventory(bad, ssh_config_path=NO_SSH_CONFIG)
    assert str(info.value) == f"{bad}: not UTF-8 text (byte 19)"


# --------------------------------------------------------------------------- find_inventory


def test_find_inventory_order(tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    explicit = write(tmp_path, "", "explicit.toml")
    from_env = write(tmp_path, "", "env.toml")
    env = {"COLLECTOR_INVENTORY": str(from_env)}
    assert find_inventory(None, env, cwd) == from_env
    local = write(cwd, "", "inventory.toml")
    assert find_inventory(None, env, cwd) == local
    assert find_inventory(str(explicit), env, cwd) == explicit
    assert find_inventory("../explicit.toml", env, cwd) == cwd / ".." / "explicit.toml"


def test_find_inventory_errors(tmp_path: Path) -> None:
    with pytest.raises(InventoryError) as info:
        find_inventory(None, {}, tmp_path)
    assert str(info.value) == (
        "no inventory: pass --inventory FILE, create ./inventory.toml or set $COLLECTOR_INVENTORY"
    )
    with pytest.raises(InventoryError) as info:
        find_inventory("nope.toml", {}, tmp_path)
    assert str(info.value) == "nope.toml: inventory file not found (from --inventory)"
    with pytest.raises(InventoryError) as info:
        find_inventory(None, {"COLLECTOR_INVENTORY": "/no/inv.toml"}, tmp_path)
    assert str(info.value) == "/no/inv.toml: inventory file not found (from $COLLECTOR_INVENTORY)"


def test_find_inventory_ignores_an_empty_env_var(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="^no inventory"):
        find_inventory(None, {"COLLECTOR_INVENTORY": ""}, tmp_path)


# --------------------------------------------------------------------------- select_hosts


@pytest.fixture
def fleet(tmp_path: Path) -> Inventory:
    return load(
        tmp_path,
        """
[groups.inbound]
[groups.outbound]
[groups.empty]
[[hosts]]
name = "mx1"
groups = ["inbound"]
aliases = ["mx1.example.com"]
[[hosts]]
name = "mx2"
groups = ["inbound"]
[[hosts]]
name = "filter"
[[hosts]]
name = "out1"
groups = ["outbound"]
""",
    )


@pytest.mark.parametrize(
    ("names", "groups", "expected"),
    [
        ((), (), ["mx1", "mx2", "filter", "out1"]),
        (("out1", "mx1"), (), ["mx1", "out1"]),
        ((), ("outbound", "inbound"), ["mx1", "mx2", "out1"]),
        (("filter",), ("outbound",), ["filter", "out1"]),
        (("mx1",), ("inbound",), ["mx1", "mx2"]),
        (("MX1.example.COM",), (), ["mx1"]),
        ((), ("empty",), []),
    ],
)
def test_select_hosts(
    fleet: Inventory, names: tuple[str, ...], groups: tuple[str, ...], expected: list[str]
) -> None:
    assert [h.name for h in select_hosts(fleet, names, groups)] == expected


def test_select_hosts_rejects_unknown_names(fleet: Inventory) -> None:
    with pytest.raises(InventoryError) as info:
        select_hosts(fleet, ["mx3"], [])
    assert info.value.problem == "no host named 'mx3' (did you mean 'mx2'?)"
    with pytest.raises(InventoryError) as info:
        select_hosts(fleet, ["zzz"], [])
    assert info.value.problem == "no host named 'zzz' (known: mx1, mx2, filter, out1)"
    with pytest.raises(InventoryError) as info:
        select_hosts(fleet, [], ["inbund"])
    assert info.value.problem == "no group named 'inbund' (did you mean 'inbound'?)"


# --------------------------------------------------------------------------- host_zone


@pytest.fixture
def restore_tz() -> Iterator[None]:
    yield
    time.tzset()  # monkeypatch has put TZ back by now


def test_host_zone_uses_the_hosts_timezone() -> None:
    assert host_zone(Host(name="a", timezone="America/New_York")) == ZoneInfo("America/New_York")


@pytest.mark.usefixtures("restore_tz")
def test_host_zone_defaults_to_the_named_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Australia/Sydney")
    time.tzset()
    zone = host_zone(Host(name="a"))
    # a named zone, not a fixed offset: it knows both sides of a DST change
    assert zone == ZoneInfo("Australia/Sydney")
    assert (
        datetime(2024, 1, 1, tzinfo=zone).utcoffset()
        != datetime(2024, 7, 1, tzinfo=zone).utcoffset()
    )


@pytest.mark.usefixtures("restore_tz")
def test_host_zone_falls_back_to_the_current_offset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "XYZ-3")  # a POSIX rule, no IANA name
    time.tzset()
    zone = host_zone(Host(name="a"))
    assert datetime.now(zone).utcoffset() == datetime.now().astimezone().utcoffset()
    assert datetime.now(zone).utcoffset() is not None
    assert datetime.now(zone).utcoffset().total_seconds() == 3 * 3600  # type: ignore[union-attr]


@pytest.mark.usefixtures("restore_tz")
def test_host_zone_without_tz_reads_etc_localtime(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TZ", raising=False)
    time.tzset()
    zone = host_zone(Host(name="a"))
    assert datetime.now(zone).utcoffset() == datetime.now().astimezone().utcoffset()
    if os.path.exists("/etc/localtime"):
        # The named zone it links to (a copy that no name matches stays "localtime").
        _, linked, key = os.path.realpath("/etc/localtime").partition("/zoneinfo/")
        assert getattr(zone, "key", None) == (key if linked else "localtime")


# --------------------------------------------------------------------------- proxy_jump


@pytest.mark.parametrize(
    ("spec", "hops"),
    [
        ("bastion", (JumpHop("bastion"),)),
        ("ops@bastion:2222", (JumpHop("bastion", "ops", 2222),)),
        ("a, u@b:2", (JumpHop("a"), JumpHop("b", "u", 2))),
        ("u@[2001:db8::1]:22", (JumpHop("2001:db8::1", "u", 22),)),
        ("ssh://u@h:7", (JumpHop("h", "u", 7),)),
        ("me@corp@h", (JumpHop("h", "me@corp"),)),
        ("none", ()),
        ("NONE", ()),
    ],
)
def test_parse_proxy_jump(spec: str, hops: tuple[JumpHop, ...]) -> None:
    assert parse_proxy_jump(spec) == hops


@pytest.mark.parametrize("spec", ["", "u@", "h:0", "h:x", "a b", "a,,b", "::1", "h:65536"])
def test_parse_proxy_jump_rejects(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_proxy_jump(spec)


def test_jump_hop_round_trips() -> None:
    for text in ("h", "u@h", "u@h:2", "[2001:db8::1]:22", "u@[2001:db8::1]"):
        assert str(parse_proxy_jump(text)[0]) == text


# --------------------------------------------------------------------------- errors


def test_error_types_keep_their_inputs() -> None:
    err = TransportError("mx2", Stage.AUTH, "authentication failed")
    assert (err.host, err.stage, err.message) == ("mx2", Stage.AUTH, "authentication failed")
    assert str(err) == "mx2: auth: authentication failed"
    assert err.to_host_error() == HostError("mx2", Stage.AUTH, "authentication failed")
    usage = UsageError("not a time: 'yesterdayish'", option="--since")
    assert str(usage) == "--since: not a time: 'yesterdayish'"
    assert str(UsageError("no pattern")) == "no pattern"
    assert all(issubclass(e, CollectorError) for e in (InventoryError, UsageError, TransportError))
    assert str(InventoryError(None, "x", section="s")) == "s: x"

"""discovery: main.cf/postconf parsing, rotations, the plan, and the probe through a view."""

from __future__ import annotations

import os
import posixpath
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from collector.logs.discovery import (
    POSTCONF_NAMES,
    DiscoveryResult,
    FileInfo,
    PostconfError,
    PostconfStatus,
    PostfixConfig,
    config_from_main_cf,
    config_from_postconf,
    directories_to_list,
    discover,
    expand,
    order_sources,
    parse_main_cf,
    plan_sources,
    postconf_argv,
    postconf_status,
    rotation_candidates,
    strftime_regex,
)
from collector.models import (
    CommandResult,
    Compression,
    Host,
    LogSource,
    Origin,
    SourceKind,
    SourceMode,
)

DAY = 86400.0
T0 = 1705276800.0  # 2024-01-15 00:00:00 UTC


def cmd(stdout: str = "", stderr: str = "", exit_code: int = 0) -> CommandResult:
    return CommandResult("postconf", stdout.encode(), stderr.encode(), exit_code)


def files(directory: str, *entries: tuple[str, float]) -> list[FileInfo]:
    return [FileInfo(posixpath.join(directory, n), 100, m) for n, m in entries]


def paths(result: DiscoveryResult) -> list[str]:
    return [s.path for s in result.sources]


# --------------------------------------------------------------------------- main.cf


MAIN_CF = """\
# See /usr/share/postfix/main.cf.dist for a commented, more complete version
smtpd_banner = $myhostname ESMTP $mail_name (Debian/GNU)
myhostname = mx1.example.test
maillog_file = /var/log/postfix.log
smtpd_recipient_restrictions =
    permit_mynetworks,
#   reject_unknown_sender_domain,
\treject_unauth_destination
  # an indented comment does not end the value either
    check_policy_service unix:private/policy
header_checks = regexp:/etc/postfix/header_checks # not a comment: part of the value
maillog_file = /var/log/postfix/$myhostname.log
not a parameter line
   orphan continuation
"""


def test_parse_main_cf_continuations_comments_last_wins() -> None:
    params = parse_main_cf(MAIN_CF)
    assert params["smtpd_recipient_restrictions"] == (
        "permit_mynetworks, reject_unauth_destination check_policy_service unix:private/policy"
    )
    assert params["maillog_file"] == "/var/log/postfix/$myhostname.log"
    assert params["header_checks"].endswith("# not a comment: part of the value")
    assert "not a parameter line" not in " ".join(params)
    assert set(params) == {
        "smtpd_banner",
        "myhostname",
        "maillog_file",
        "smtpd_recipient_restrictions",
        "header_checks",
    }


def test_parse_main_cf_crlf_and_empty_value() -> None:
    assert parse_main_cf("maillog_file =\r\nsyslog_name=mx \r\n") == {
        "maillog_file": "",
        "syslog_name": "mx",
    }


PARAMS = {
    "myhostname": "mx1.example.test",
    "multi_instance_name": "postfix-out",
    "empty": "",
    "dir": "/var/log/$sub",
    "sub": "${multi_instance_name}",
    "loop_a": "$loop_b",
    "loop_b": "$loop_a",
}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("$myhostname", "mx1.example.test"),
        ("${myhostname}.log", "mx1.example.test.log"),
        ("$(myhostname)x", "mx1.example.testx"),
        ("$dir/x.log", "/var/log/postfix-out/x.log"),  # recursive
        ("${multi_instance_name?{$multi_instance_name}:{postfix}}", "postfix-out"),
        ("${empty?{yes}:{no}}", "no"),
        ("${undefined?{yes}:{no}}", "no"),
        ("${empty?{yes}}", ""),
        ("${myhostname?set}", "set"),
        ("${empty:unset $myhostname}", "unset mx1.example.test"),
        ("${myhostname:unset}", ""),
        ("${empty:{braced}}", "braced"),
        ("$$HOME", "$HOME"),
        ("cost: 5$", "cost: 5$"),
        ("$undefined_name", ""),
        ("$loop_a", ""),  # Postfix would refuse; discovery must not hang or crash
        ("${{$myhostname} == {x}?{a}:{b}}", "${{$myhostname} == {x}?{a}:{b}}"),
        ("${unclosed", "${unclosed"),
    ],
)
def test_expand(value: str, expected: str) -> None:
    assert expand(PARAMS, value) == expected


def test_expand_uses_postfix_defaults() -> None:
    assert expand({}, "$syslog_name") == "postfix"
    assert expand({"multi_instance_name": "postfix-in"}, "$syslog_name") == "postfix-in"
    assert expand({}, "[$maillog_file]") == "[]"


def test_config_from_main_cf_defaults_and_expansion() -> None:
    config = config_from_main_cf(MAIN_CF, "/etc/postfix")
    assert config == PostfixConfig(
        config_dir="/etc/postfix",
        maillog_file="/var/log/postfix/mx1.example.test.log",
        origin="main.cf",
    )
    assert config.instance == "postfix"


def test_config_from_main_cf_secondary_instance() -> None:
    text = """\
multi_instance_name = postfix-out
multi_instance_enable = yes
syslog_facility = local1
syslog_name = ${multi_instance_name}/relay
enable_long_queue_ids = yes
maillog_file_rotate_suffix = %Y%m%d
"""
    config = config_from_main_cf(text, "/etc/postfix-out")
    assert config.syslog_name == "postfix-out/relay"
    assert config.instance == "postfix-out"
    assert config.syslog_facility == "local1"
    assert config.multi_instance_enable and config.enable_long_queue_ids
    assert config.maillog_file == ""
    assert config.maillog_file_rotate_suffix == "%Y%m%d"


def test_config_from_main_cf_instance_directories_list() -> None:
    text = "multi_instance_directories = /etc/postfix-out,\n  /etc/postfix-in\n"
    config = config_from_main_cf(text, "/etc/postfix")
    assert config.multi_instance_directories == ("/etc/postfix-out", "/etc/postfix-in")


# --------------------------------------------------------------------------- postconf

# `postconf -c DIR -x <POSTCONF_NAMES>` from Postfix 3.7.11 (Debian 12).
POSTCONF_OUT = """\
mail_version = 3.7.11
maillog_file = /var/log/postfix.log
maillog_file_rotate_suffix = %Y%m%d-%H%M%S
maillog_file_compressor = gzip
syslog_name = postfix-out
syslog_facility = local1
multi_instance_name = postfix-out
multi_instance_directories =
multi_instance_enable = no
enable_long_queue_ids = no
"""


def test_postconf_argv_names_every_parameter() -> None:
    argv = postconf_argv("/usr/sbin/postconf", "/etc/postfix-out")
    assert argv[:3] == ["sh", "-c", argv[2]] and argv[3:5] == ["sh", "/etc/postfix-out"]
    assert argv[5:] == [
        "/usr/sbin/postconf",
        "-c",
        "/etc/postfix-out",
        "-x",
        *POSTCONF_NAMES,
    ]
    assert postconf_argv("postconf", None, expand_values=False) == ["postconf", *POSTCONF_NAMES]


def test_config_from_postconf() -> None:
    config = config_from_postconf(POSTCONF_OUT, "/etc/postfix-out")
    assert config == PostfixConfig(
        config_dir="/etc/postfix-out",
        maillog_file="/var/log/postfix.log",
        syslog_name="postfix-out",
        syslog_facility="local1",
        multi_instance_name="postfix-out",
        mail_version="3.7.11",
        origin="postconf",
    )


def test_config_from_postconf_without_x_expands_itself() -> None:
    out = "multi_instance_name = postfix-in\nsyslog_name = ${multi_instance_name?{$multi_instance_name}:{postfix}}\n"
    assert config_from_postconf(out, "/etc/postfix-in").syslog_name == "postfix-in"


@pytest.mark.parametrize(
    "output",
    [
        "postconf: fatal: open /etc/postfix/main.cf: No such file or directory\n",
        "bash: postconf: command not found\n",
        "",
    ],
)
def test_config_from_postconf_refuses_failure_output(output: str) -> None:
    with pytest.raises(PostconfError):
        config_from_postconf(output, "/etc/postfix")


@pytest.mark.parametrize(
    ("result", "status"),
    [
        (cmd(POSTCONF_OUT), PostconfStatus.OK),
        # A non-root user's PATH has no /usr/sbin: bash, dash, and an absent absolute path.
        (
            cmd(stderr="bash: postconf: command not found\n", exit_code=127),
            PostconfStatus.NOT_FOUND,
        ),
        (cmd(stderr="sh: 1: postconf: not found\n", exit_code=127), PostconfStatus.NOT_FOUND),
        (
            cmd(
                stderr="bash: /usr/local/sbin/postconf: No such file or directory\n", exit_code=127
            ),
            PostconfStatus.NOT_FOUND,
        ),
        (
            cmd(
                stderr="postconf: fatal: open /etc/postfix/main.cf: No such file or directory\n",
                exit_code=1,
            ),
            PostconfStatus.NO_MAIN_CF,
        ),
        (
            cmd(
                stderr="/usr/sbin/postconf: fatal: open /tmp/pc/main.cf: Permission denied\n",
                exit_code=1,
            ),
            PostconfStatus.NO_MAIN_CF,
        ),
        (cmd(stderr="postconf: invalid option -- 'x'\n", exit_code=1), PostconfStatus.FAILED),
        (cmd("", exit_code=0), PostconfStatus.FAILED),
    ],
)
def test_postconf_status(result: CommandResult, status: PostconfStatus) -> None:
    assert postconf_status(result) is status


def run_local(argv: Sequence[str]) -> CommandResult:
    done = subprocess.run(list(argv), capture_output=True, check=False)
    return CommandResult(" ".join(argv), done.stdout, done.stderr, done.returncode)


def test_real_postconf_output_shapes(tmp_path: Path) -> None:
    """The machine's own postconf (Postfix is a test dependency): both shapes, for real."""
    (tmp_path / "main.cf").write_text(
        "myhostname = mx1.example.test\n"  # else -x may look the host's name up in DNS
        "multi_instance_name = postfix-out\n"
        "maillog_file = /var/log/$multi_instance_name.log\n"
        "syslog_facility =\n  local3\n"
    )
    (tmp_path / "master.cf").write_text("")
    # Postfix re-reads a main.cf modified within the last second until it is older (~1.5 s).
    os.utime(tmp_path / "main.cf", (T0, T0))
    result = run_local(postconf_argv("/usr/sbin/postconf", str(tmp_path)))
    assert postconf_status(result) is PostconfStatus.OK
    config = config_from_postconf(result.stdout.decode(), str(tmp_path))
    assert (config.maillog_file, config.syslog_name, config.syslog_facility) == (
        "/var/log/postfix-out.log",
        "postfix-out",
        "local3",
    )
    assert config.mail_version is not None and config.mail_version[0].isdigit()

    # without a readable main.cf postconf is not run: its fatal error sleeps a second
    # (Postfix's msg_fatal) on every host that has none
    missing = run_local(postconf_argv("/usr/sbin/postconf", str(tmp_path / "nowhere")))
    assert postconf_status(missing) is PostconfStatus.NO_MAIN_CF
    assert b"main.cf is missing or unreadable" in missing.stderr


@pytest.mark.parametrize(
    "name",
    [
        "x\\cy",  # dash's echo would stop at \c
        "-n",  # an option to echo, test or postconf
        "$(touch pwned)",
        "`touch pwned`",
        "a b;touch pwned",
        "x\\n%s%n",
    ],
)
def test_postconf_guard_takes_a_hostile_config_directory_as_data(
    tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host's ``postconf -d`` chooses the directory: it reaches the guard as an argument,
    and the reason it was not run names it whole."""
    monkeypatch.chdir(tmp_path)
    config_dir = str(tmp_path / name)
    missing = run_local(postconf_argv("/usr/sbin/postconf", config_dir))
    assert postconf_status(missing) is PostconfStatus.NO_MAIN_CF
    assert missing.stderr.decode() == (
        f"not run: {config_dir}/main.cf is missing or unreadable\n")
    assert not (tmp_path / "pwned").exists()


# --------------------------------------------------------------------------- rotations


@pytest.mark.parametrize(
    ("base", "names", "suffix", "expected"),
    [
        (  # Debian/Ubuntu logrotate: delaycompress leaves .1 plain
            "mail.log",
            ["mail.log", "mail.log.1", "mail.log.2.gz", "mail.log.3.gz", "mail.err", "mail.err.1"],
            None,
            ["mail.log.3.gz", "mail.log.2.gz", "mail.log.1"],
        ),
        (  # RHEL dateext, no compression
            "maillog",
            ["maillog", "maillog-20240107", "maillog-20240114", "messages-20240114"],
            None,
            ["maillog-20240107", "maillog-20240114"],
        ),
        (  # SUSE dateext + xz; mail.info/mail.warn rotations belong to other files
            "mail",
            ["mail", "mail-20240108.xz", "mail-20240115.xz", "mail.info", "mail.info-20240115.xz"],
            None,
            ["mail-20240108.xz", "mail-20240115.xz"],
        ),
        (  # FreeBSD newsyslog bzip2 (older releases gzip)
            "maillog",
            ["maillog", "maillog.0.bz2", "maillog.1.bz2", "maillog.6.gz"],
            None,
            ["maillog.6.gz", "maillog.1.bz2", "maillog.0.bz2"],
        ),
        (  # postfix logrotate: $maillog_file.$maillog_file_rotate_suffix, then gzip
            "postfix.log",
            ["postfix.log", "postfix.log.20240115-000000.gz", "postfix.log.20240108-000000.gz"],
            "%Y%m%d-%H%M%S",
            ["postfix.log.20240108-000000.gz", "postfix.log.20240115-000000.gz"],
        ),
        (  # a custom rotate suffix, zstd compressor
            "postfix.log",
            ["postfix.log.2024-01-15_00h.zst", "postfix.log.2024-01-14_00h"],
            "%Y-%m-%d_%Hh",
            ["postfix.log.2024-01-14_00h", "postfix.log.2024-01-15_00h.zst"],
        ),
        (  # logrotate hourly / epoch dateformats
            "maillog",
            ["maillog-2024011513", "maillog-20240115-1705276800.gz", "maillog-20240114"],
            None,
            ["maillog-20240114", "maillog-20240115-1705276800.gz", "maillog-2024011513"],
        ),
        (  # things that are not rotations
            "mail.log",
            ["mail.log.old", "mail.log.1.tmp", "mail.log~", "mail.logger.1", "mail.log.gz"],
            None,
            [],
        ),
    ],
)
def test_rotation_candidates(
    base: str, names: list[str], suffix: str | None, expected: list[str]
) -> None:
    assert rotation_candidates(base, names, suffix) == expected


def test_rotation_candidates_takes_a_path() -> None:
    assert rotation_candidates("/var/log/mail.log", ["mail.log.1"], None) == ["mail.log.1"]


def test_strftime_regex() -> None:
    assert strftime_regex("%Y%m%d-%H%M%S") == r"\d{4}\d{2}\d{2}\-\d{2}\d{2}\d{2}"


def test_order_sources_by_mtime_then_name() -> None:
    # .1 and the base share an mtime (copytruncate); the .2.gz mtime is older.
    entries = files(
        "/var/log",
        ("mail.log", T0),
        ("mail.log.1", T0),
        ("mail.log.3.gz", T0 - 14 * DAY),
        ("mail.log.2.gz", T0 - 7 * DAY),
    )
    ordered = order_sources(entries, origin="default", instance="postfix")
    assert [s.path for s in ordered] == [
        "/var/log/mail.log.3.gz",
        "/var/log/mail.log.2.gz",
        "/var/log/mail.log.1",
        "/var/log/mail.log",
    ]
    assert [s.compression for s in ordered] == [
        Compression.GZIP,
        Compression.GZIP,
        Compression.NONE,
        Compression.NONE,
    ]
    assert ordered[0] == LogSource(
        path="/var/log/mail.log.3.gz",
        origin="default",
        compression=Compression.GZIP,
        size=100,
        mtime=T0 - 14 * DAY,
        instance="postfix",
    )


def test_order_sources_real_mtime_beats_names() -> None:
    # Someone touched an old rotation: the mtime is the truth, names only break ties.
    entries = files("/var/log", ("maillog-20240114", T0 + DAY), ("maillog", T0))
    assert [s.path for s in order_sources(entries)] == [
        "/var/log/maillog",
        "/var/log/maillog-20240114",
    ]


def test_order_sources_without_mtimes_uses_names() -> None:
    entries = [
        FileInfo("/var/log/maillog"),
        FileInfo("/var/log/maillog.0.bz2"),
        FileInfo("/var/log/maillog.1.bz2", mtime=T0),
        FileInfo("/var/log/mail-20240115.xz"),
        FileInfo("/var/log/maillog.20240115-000000.zst"),
    ]
    ordered = order_sources(entries)
    assert [s.path for s in ordered] == [
        "/var/log/maillog.1.bz2",
        "/var/log/maillog.0.bz2",
        "/var/log/mail-20240115.xz",
        "/var/log/maillog.20240115-000000.zst",
        "/var/log/maillog",
    ]
    assert [s.compression for s in ordered][2:4] == [Compression.XZ, Compression.ZSTD]


# --------------------------------------------------------------------------- plan

HOST = Host(name="mx1")
PRIMARY = PostfixConfig(config_dir="/etc/postfix", origin="main.cf")


def test_plan_syslog_instance_uses_distro_default_with_rotations() -> None:
    listing = {
        "/var/log": files(
            "/var/log", ("mail.log", T0), ("mail.log.1", T0 - DAY), ("mail.log.2.gz", T0 - 8 * DAY)
        )
    }
    result = plan_sources([PRIMARY], listing, HOST)
    assert paths(result) == ["/var/log/mail.log.2.gz", "/var/log/mail.log.1", "/var/log/mail.log"]
    assert {s.origin for s in result.sources} == {"default"}
    assert all(s.origin is Origin.DEFAULT and s.kind is SourceKind.FILE for s in result.sources)
    assert {s.instance for s in result.sources} == {"postfix"}
    assert "syslog (postfix): /var/log/mail.log + 2 rotated" in result.notes


def test_plan_stale_default_file_is_not_read() -> None:
    config = PostfixConfig(config_dir="/etc/postfix", maillog_file="/var/log/postfix.log")
    listing = {
        "/var/log": files(
            "/var/log",
            ("postfix.log", T0),
            ("postfix.log.20240108-000000.gz", T0 - 7 * DAY),
            ("mail.log", T0 - 30 * DAY),  # left over from before maillog_file was set
            ("mail.log.1", T0 - 37 * DAY),
        )
    }
    result = plan_sources([config], listing, HOST)
    assert paths(result) == ["/var/log/postfix.log.20240108-000000.gz", "/var/log/postfix.log"]
    assert {s.origin for s in result.sources} == {"maillog_file"}
    assert all(s.origin is Origin.MAILLOG_FILE for s in result.sources)
    assert (
        "ignored (stale): /var/log/mail.log + 1 rotated: main.cf names maillog_file, not this file"
        in result.notes
    )


def test_plan_maillog_file_that_is_a_default_path_is_not_stale() -> None:
    config = PostfixConfig(config_dir="/etc/postfix", maillog_file="/var/log/mail.log")
    listing = {"/var/log": files("/var/log", ("mail.log", T0))}
    result = plan_sources([config], listing, HOST)
    assert [(s.path, s.origin) for s in result.sources] == [("/var/log/mail.log", "maillog_file")]
    assert not any("stale" in n for n in result.notes)


def test_plan_multi_instance_file_and_syslog() -> None:
    primary = PostfixConfig(
        config_dir="/etc/postfix", multi_instance_directories=("/etc/postfix-out",)
    )
    out = PostfixConfig(
        config_dir="/etc/postfix-out",
        maillog_file="/var/log/postfix/out.log",
        syslog_name="postfix-out",
        multi_instance_name="postfix-out",
    )
    listing = {
        "/var/log": files("/var/log", ("maillog", T0), ("maillog-20240114", T0 - DAY)),
        "/var/log/postfix": files("/var/log/postfix", ("out.log", T0)),
    }
    assert directories_to_list([primary, out], HOST) == [
        "/var/log/postfix",
        "/var/log",
        "/run/log",
    ]
    result = plan_sources([primary, out], listing, HOST)
    assert [(s.path, s.origin, s.instance) for s in result.sources] == [
        ("/var/log/postfix/out.log", "maillog_file", "postfix-out"),
        ("/var/log/maillog-20240114", "default", "postfix"),
        ("/var/log/maillog", "default", "postfix"),
    ]
    assert result.instances == (primary, out)


def test_plan_two_instances_share_one_maillog_file() -> None:
    a = PostfixConfig(config_dir="/etc/postfix", maillog_file="/var/log/postfix.log")
    b = replace(a, config_dir="/etc/postfix-b", syslog_name="postfix-b")
    listing = {"/var/log": files("/var/log", ("postfix.log", T0))}
    result = plan_sources([a, b], listing, HOST)
    assert [(s.path, s.instance) for s in result.sources] == [("/var/log/postfix.log", None)]


def test_plan_dev_stdout_is_not_a_file_and_falls_back_to_journal() -> None:
    config = PostfixConfig(config_dir="/etc/postfix", maillog_file="/dev/stdout")
    listing = {"/var/log": files("/var/log", ("mail.log", T0))}
    result = plan_sources([config], listing, HOST)
    assert any("maillog_file = /dev/stdout: not a file" in n for n in result.notes)
    assert any(n.startswith("ignored (stale): /var/log/mail.log") for n in result.notes)
    assert result.sources == (
        LogSource(
            path="journal:SYSLOG_FACILITY=2", kind="journal", origin="journal", instance="postfix"
        ),
    )


def test_plan_journal_fallback_when_nothing_found() -> None:
    listing = {
        "/var/log": [FileInfo("/var/log/journal", is_dir=True), *files("/var/log", ("syslog", T0))]
    }
    result = plan_sources([PRIMARY], listing, HOST)
    assert paths(result) == ["journal:SYSLOG_FACILITY=2"]
    assert result.sources[0].kind == "journal"
    assert result.sources[0].kind is SourceKind.JOURNAL
    assert result.sources[0].origin is Origin.JOURNAL
    assert "journal fallback: journal:SYSLOG_FACILITY=2" in result.notes
    assert "/var/log/syslog exists and may hold mail lines: name it in logs to read it" in (
        result.notes
    )
    assert not any("no journal directory" in n for n in result.notes)


def test_plan_journal_fallback_per_syslog_instance_facility() -> None:
    out = PostfixConfig(
        config_dir="/etc/postfix-out", syslog_name="postfix-out", syslog_facility="local1"
    )
    listing: dict[str, list[FileInfo]] = {"/var/log": []}
    result = plan_sources([PRIMARY, out], listing, HOST)
    assert [(s.path, s.instance) for s in result.sources] == [
        ("journal:SYSLOG_FACILITY=2", "postfix"),
        ("journal:SYSLOG_FACILITY=17", "postfix-out"),
    ]
    assert "no journal directory seen (/var/log/journal, /run/log/journal)" in result.notes


def test_plan_no_config_at_all_still_tries_defaults() -> None:
    listing = {"/var/log": files("/var/log", ("maillog", T0))}
    assert paths(plan_sources([], listing, HOST)) == ["/var/log/maillog"]


def test_plan_source_files_never_uses_journal() -> None:
    result = plan_sources([PRIMARY], {"/var/log": []}, Host(name="mx1", source=SourceMode.FILES))
    assert result.sources == ()
    assert "source = files: the journal is not used" in result.notes


def test_plan_source_journal_ignores_files() -> None:
    listing = {"/var/log": files("/var/log", ("mail.log", T0))}
    result = plan_sources([PRIMARY], listing, Host(name="mx1", source=SourceMode.JOURNAL))
    assert paths(result) == ["journal:SYSLOG_FACILITY=2"]


def test_plan_explicit_logs_override_discovery() -> None:
    host = Host(name="mx1", logs=("/srv/logs/mx1/mail*.log*", "/var/log/custom.log", "/nope/x"))
    config = PostfixConfig(config_dir="/etc/postfix", maillog_file="/var/log/postfix.log")
    assert directories_to_list([config], host) == ["/srv/logs/mx1", "/var/log", "/nope"]
    listing = {
        "/srv/logs/mx1": [
            *files(
                "/srv/logs/mx1",
                ("mail.log", T0),
                ("mail.log.1.gz", T0 - DAY),
                ("mail-out.log", T0 - 2 * DAY),
                (".mail.log.swp", T0),
                ("other.log", T0),
            ),
            FileInfo("/srv/logs/mx1/mail.logs", is_dir=True),
        ],
        "/var/log": files("/var/log", ("postfix.log", T0), ("custom.log", T0)),
    }
    result = plan_sources([config], listing, host)
    assert [(s.path, s.origin) for s in result.sources] == [
        ("/srv/logs/mx1/mail-out.log", "inventory"),
        ("/srv/logs/mx1/mail.log.1.gz", "inventory"),
        ("/srv/logs/mx1/mail.log", "inventory"),
        ("/var/log/custom.log", "inventory"),
    ]
    assert all(s.origin is Origin.INVENTORY for s in result.sources)
    assert "logs: /nope/x: directory /nope not found" in result.notes


def test_plan_unreadable_file_is_kept_and_said() -> None:
    listing = {"/var/log": [FileInfo("/var/log/maillog", 5, T0, readable=False)]}
    result = plan_sources([PRIMARY], listing, HOST)
    assert result.sources[0].readable is False
    assert "/var/log/maillog: not readable by this user (sudo = true?)" in result.notes


# --------------------------------------------------------------------------- probe


@dataclass
class FakeView:
    """An in-memory host; ``commands`` None means commands cannot run (a local directory)."""

    texts: dict[str, str] = field(default_factory=dict)
    dirs: dict[str, list[FileInfo]] = field(default_factory=dict)
    commands: dict[tuple[str, ...], CommandResult] | None = None
    ran: list[tuple[str, ...]] = field(default_factory=list)

    def read_text(self, path: str) -> str | None:
        return self.texts.get(path)

    def list_dir(self, path: str) -> list[FileInfo] | None:
        return self.dirs.get(path)

    def run(self, argv: Sequence[str]) -> CommandResult | None:
        if self.commands is None:
            return None
        self.ran.append(tuple(argv))
        name = argv[0]
        missing = cmd(stderr=f"bash: {name}: command not found\n", exit_code=127)
        return self.commands.get(tuple(argv), missing)


DEFAULTS_OUT = "config_directory = /etc/postfix\nmail_version = 3.7.11\n"


def postconf_out(**values: str) -> str:
    merged = dict.fromkeys(POSTCONF_NAMES, "")
    merged.update(
        mail_version="3.7.11",
        syslog_name="postfix",
        syslog_facility="mail",
        maillog_file_rotate_suffix="%Y%m%d-%H%M%S",
        maillog_file_compressor="gzip",
        multi_instance_enable="no",
        enable_long_queue_ids="no",
    )
    merged.update(values)
    return "".join(f"{k} = {v}\n" if v else f"{k} =\n" for k, v in merged.items())


def test_discover_multi_instance_through_postconf_in_path_only() -> None:
    # Non-root: /usr/sbin/postconf is not reachable, plain `postconf` is.
    view = FakeView(
        dirs={
            "/var/log": files("/var/log", ("mail.log", T0 - 90 * DAY)),
            "/var/log/postfix": files(
                "/var/log/postfix",
                ("in.log", T0),
                ("in.log.20240108-000000.gz", T0 - 7 * DAY),
                ("out.log", T0),
            ),
        },
        commands={
            ("postconf", "-d", "config_directory", "mail_version"): cmd(DEFAULTS_OUT),
            tuple(postconf_argv("postconf", "/etc/postfix")): cmd(
                postconf_out(
                    maillog_file="/var/log/postfix/in.log",
                    multi_instance_directories="/etc/postfix-out",
                    multi_instance_enable="yes",
                )
            ),
            tuple(postconf_argv("postconf", "/etc/postfix-out")): cmd(
                postconf_out(
                    maillog_file="/var/log/postfix/out.log",
                    multi_instance_name="postfix-out",
                    syslog_name="postfix-out",
                    multi_instance_enable="yes",
                )
            ),
        },
    )
    result = discover(view, HOST)
    assert view.ran[0] == ("/usr/sbin/postconf", "-d", "config_directory", "mail_version")
    assert [(s.path, s.instance) for s in result.sources] == [
        ("/var/log/postfix/in.log.20240108-000000.gz", "postfix"),
        ("/var/log/postfix/in.log", "postfix"),
        ("/var/log/postfix/out.log", "postfix-out"),
    ]
    assert result.postfix_version == "3.7.11"
    assert [c.instance for c in result.instances] == ["postfix", "postfix-out"]
    assert [c.origin for c in result.instances] == ["postconf", "postconf"]
    assert any(n.startswith("ignored (stale): /var/log/mail.log") for n in result.notes)


def test_discover_postconf_without_main_cf_falls_back_to_defaults() -> None:
    fatal = "postconf: fatal: open /etc/postfix/main.cf: No such file or directory\n"
    view = FakeView(
        dirs={"/var/log": files("/var/log", ("maillog", T0))},
        commands={
            ("/usr/sbin/postconf", "-d", "config_directory", "mail_version"): cmd(DEFAULTS_OUT),
            tuple(postconf_argv("/usr/sbin/postconf", "/etc/postfix")): cmd(
                stderr=fatal, exit_code=1
            ),
        },
    )
    result = discover(view, HOST)
    assert paths(result) == ["/var/log/maillog"]
    assert result.postfix_version == "3.7.11"
    assert result.instances[0].origin == "defaults"
    assert "postconf -c /etc/postfix: " + fatal.strip() in result.notes
    assert "no main.cf in /etc/postfix: assuming Postfix defaults" in result.notes
    # -x is not retried without it: the missing main.cf would fail the same way
    assert len(view.ran) == 2


def test_discover_old_postconf_without_x_is_retried() -> None:
    view = FakeView(
        dirs={"/var/log": files("/var/log", ("postfix.log", T0))},
        commands={
            ("/usr/sbin/postconf", "-d", "config_directory", "mail_version"): cmd(DEFAULTS_OUT),
            tuple(postconf_argv("/usr/sbin/postconf", "/etc/postfix")): cmd(
                stderr="postconf: invalid option -- 'x'\n", exit_code=1
            ),
            tuple(postconf_argv("/usr/sbin/postconf", "/etc/postfix", expand_values=False)): cmd(
                postconf_out(maillog_file="/var/log/${syslog_name}.log")
            ),
        },
    )
    assert paths(discover(view, HOST)) == ["/var/log/postfix.log"]


def test_discover_no_postconf_reads_main_cf_files() -> None:
    view = FakeView(
        texts={
            "/etc/postfix/main.cf": "multi_instance_directories = /etc/postfix-out\n",
            "/etc/postfix-out/main.cf": (
                "multi_instance_name = postfix-out\nmaillog_file = /var/log/postfix-out.log\n"
            ),
        },
        dirs={"/var/log": files("/var/log", ("mail.log", T0), ("postfix-out.log", T0))},
        commands={},
    )
    result = discover(view, HOST)
    assert [(s.path, s.instance) for s in result.sources] == [
        ("/var/log/postfix-out.log", "postfix-out"),
        ("/var/log/mail.log", "postfix"),
    ]
    assert [c.origin for c in result.instances] == ["main.cf", "main.cf"]
    assert result.postfix_version is None
    assert any(n.startswith("postconf not found") for n in result.notes)
    assert "postfix-out: multi_instance_enable = no; its logs are read anyway" in result.notes


def test_discover_freebsd_config_dir_without_commands() -> None:
    view = FakeView(
        texts={"/usr/local/etc/postfix/main.cf": "myhostname = mx9\n"},
        dirs={"/var/log": files("/var/log", ("maillog", T0), ("maillog.0.bz2", T0 - DAY))},
    )
    result = discover(view, HOST)
    assert paths(result) == ["/var/log/maillog.0.bz2", "/var/log/maillog"]
    assert result.instances[0].config_dir == "/usr/local/etc/postfix"
    assert "commands cannot run on this host: reading main.cf" in result.notes


def test_discover_explicit_logs_skip_postconf() -> None:
    view = FakeView(dirs={"/var/log": files("/var/log", ("mail.log", T0))}, commands={})
    result = discover(view, Host(name="mx1", logs=("/var/log/mail.log",)))
    assert paths(result) == ["/var/log/mail.log"]
    assert view.ran == []


@dataclass(frozen=True)
class DirectoryView:
    """A directory as a host, read-only: the host's "/" is ``root``."""

    root: Path

    def _local(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def read_text(self, path: str) -> str | None:
        try:
            return self._local(path).read_text()
        except OSError:
            return None

    def list_dir(self, path: str) -> list[FileInfo] | None:
        try:
            entries = list(os.scandir(self._local(path)))
        except OSError:
            return None
        out = []
        for e in entries:
            st = e.stat()
            out.append(
                FileInfo(
                    posixpath.join(path, e.name),
                    st.st_size,
                    st.st_mtime,
                    os.access(e.path, os.R_OK),
                    e.is_dir(),
                )
            )
        return out

    def run(self, argv: Sequence[str]) -> CommandResult | None:
        return None


def test_discover_real_directory_tree(tmp_path: Path) -> None:
    (tmp_path / "etc/postfix").mkdir(parents=True)
    (tmp_path / "etc/postfix/main.cf").write_text(
        "myhostname = mx2.example.test\nmaillog_file = /var/log/postfix/$myhostname.log\n"
    )
    logs = tmp_path / "var/log/postfix"
    logs.mkdir(parents=True)
    names = {
        "mx2.example.test.log": T0,
        "mx2.example.test.log.20240115-000000.gz": T0 - DAY,
        "mx2.example.test.log.20240114-000000.gz": T0 - DAY,  # same mtime: name decides
    }
    for name, mtime in names.items():
        (logs / name).write_bytes(b"x")
        os.utime(logs / name, (mtime, mtime))
    (tmp_path / "var/log/mail.log").write_text("old\n")
    (tmp_path / "var/log/journal").mkdir()

    result = discover(DirectoryView(tmp_path), HOST)
    assert paths(result) == [
        "/var/log/postfix/mx2.example.test.log.20240114-000000.gz",
        "/var/log/postfix/mx2.example.test.log.20240115-000000.gz",
        "/var/log/postfix/mx2.example.test.log",
    ]
    assert result.sources[-1].mtime == T0
    assert result.sources[0].compression is Compression.GZIP
    assert any(n.startswith("ignored (stale): /var/log/mail.log") for n in result.notes)

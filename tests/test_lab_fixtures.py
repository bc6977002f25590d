"""Sanity checks on the committed lab output (tests/fixtures/lab): every line shape is there.

The fixtures are produced by ``tests/lab/postfix_lab.py run --out tests/fixtures/lab`` (full
mode), the hostile set's by ``... run --out tests/fixtures/lab/hostile --set hostile``. These
tests only guard that a regeneration still covers every case the parser and the correlator are
tested against; they do not parse anything themselves.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

LAB = Path(__file__).parent / "fixtures" / "lab"
HOSTILE = LAB / "hostile"
SHORT_ID = r"[0-9A-F]{6,}"
# Long queue IDs: base-52 without vowels, the 'z' separates the time part from the inode part.
LONG_ID = r"[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-y]{6,}z[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]+"


def _expected(lab: Path = LAB) -> dict[str, object]:
    data: dict[str, object] = json.loads((lab / "expected.json").read_text(encoding="utf-8"))
    return data


def _host(name: str, lab: Path = LAB) -> dict[str, object]:
    hosts = _expected(lab)["hosts"]
    assert isinstance(hosts, dict)
    host: dict[str, object] = hosts[name]
    return host


def _log_text(name: str, lab: Path = LAB) -> str:
    log = _host(name, lab)["log"]
    assert isinstance(log, dict)
    return (lab / name / str(log["path"]).lstrip("/")).read_text(encoding="utf-8")


SHAPES = [
    ("mx1", r"postfix/smtpd\[\d+\]: NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.66\]: 554 "),
    ("mx1", r"NOQUEUE: reject: RCPT from .*Recipient address rejected"),
    ("mx1", r"NOQUEUE: reject: RCPT from .*Relay access denied"),
    ("mx1", rf"postfix/smtpd\[\d+\]: {SHORT_ID}: reject: RCPT from "),
    ("mx1", rf"postfix/pickup\[\d+\]: {SHORT_ID}: uid=0 from=<"),
    ("mx1", r"status=bounced \(host filter1\.example\.test\[127\.0\.0\.22\] said: 550 "),
    ("mx1", rf"postfix/bounce\[\d+\]: {SHORT_ID}: sender non-delivery notification: {SHORT_ID}$"),
    ("mx1", rf"status=sent \(250 2\.0\.0 Ok: queued as {SHORT_ID}\)$"),
    ("filter1", (rf": {SHORT_ID}: client=filter1\.example\.test\[127\.0\.0\.22\], "
                rf"orig_queue_id={SHORT_ID}, orig_client=mx1\.example\.test\[127\.0\.0\.21\]")),
    ("filter1", rf"postfix/cleanup\[\d+\]: {SHORT_ID}: reject: header Subject: "),
    ("filter1", r"postfix/scan/smtp\[\d+\]: .*relay=127\.0\.0\.22\[127\.0\.0\.22\]:10025"),
    ("filter1", rf"postfix/relay/smtp\[\d+\]: .*status=sent \(250 2\.0\.0 Ok: queued as {LONG_ID}\)"),
    ("filter1", r"postfix/relay/smtp\[\d+\]: .*dsn=5\.1\.1, status=bounced \(host mbox1"),
    ("filter1", r"sender non-delivery notification: "),
    ("mbox1", rf"postfix/smtpd\[\d+\]: {LONG_ID}: client=filter1\.example\.test\[127\.0\.0\.22\]"),
    ("mbox1", r"NOQUEUE: reject: RCPT from filter1\.example\.test.*User unknown"),
    ("mbox1", rf"postfix/local\[\d+\]: {LONG_ID}: .*status=sent \(forwarded as {LONG_ID}\)"),
    ("mbox1", rf"postfix/pickup\[\d+\]: {LONG_ID}: uid=0 from=<root@mbox1\.example\.test>"),
    ("mbox1", r"postfix/virtual\[\d+\]: .*status=sent \(delivered to maildir\)"),
    ("mbox1", r"postfix/discard\[\d+\]: .*status=sent"),
    ("mbox1", rf"postfix/bounce\[\d+\]: {LONG_ID}: sender delivery status notification: "),
    ("out1", r"postfix-out1/smtp\[\d+\]: .*status=deferred \(connect to 127\.0\.0\.9\["),
    ("out1", r"status=expired, returned to sender"),
    ("out1", r"sender delay notification: "),
    ("out1", r"sender non-delivery notification: "),
    ("out1", r"postmaster non-delivery notification: "),
]


@pytest.mark.parametrize(("host", "pattern"), SHAPES)
def test_fixture_log_has_line_shape(host: str, pattern: str) -> None:
    assert re.search(pattern, _log_text(host), re.MULTILINE), (host, pattern)


ENVELOPES = {
    # postlogd (maillog_file): zero-padded day, no year, short host name.
    "mx1": r"[A-Z][a-z]{2} \d\d \d\d:\d\d:\d\d mx1 postfix/",
    "out1": r"[A-Z][a-z]{2} \d\d \d\d:\d\d:\d\d out1 postfix-out1/",
    # rsyslog traditional (RHEL /var/log/maillog): space-padded day.
    "filter1": r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d filter1 postfix/",
    # rsyslog RFC 3339 (Debian 12 /var/log/mail.log).
    "mbox1": r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:\d\d mbox1 postfix/",
}


@pytest.mark.parametrize("lab", [LAB, HOSTILE], ids=["standard", "hostile"])
@pytest.mark.parametrize("host", sorted(ENVELOPES))
def test_every_line_has_the_hosts_envelope(host: str, lab: Path) -> None:
    lines = _log_text(host, lab).splitlines()
    assert lines
    bad = [line for line in lines if not re.match(ENVELOPES[host], line)]
    assert bad == []


def test_queued_as_ids_reappear_on_the_next_host() -> None:
    handoffs = re.findall(
        r"relay=(filter1|out1|mbox1|mx1)\.example\.test\[[\d.]+\]:2525, .*queued as (\S+)\)$",
        "\n".join(_log_text(h) for h in ("mx1", "filter1", "out1")), re.MULTILINE)
    assert {nxt for nxt, _ in handoffs} == {"filter1", "mbox1", "out1", "mx1"}
    for nxt, queue_id in handoffs:
        assert re.search(rf": {queue_id}: client=", _log_text(nxt)), (nxt, queue_id)


def test_log_size_stays_small() -> None:
    for host in ("mx1", "filter1", "mbox1", "out1"):
        assert len(_log_text(host)) < 64_000


def test_main_cf_says_where_the_log_is_or_leaves_it_to_syslog() -> None:
    for host in ("mx1", "filter1", "mbox1", "out1"):
        main_cf = (LAB / host / "etc" / "postfix" / "main.cf").read_text()
        log = _host(host)["log"]
        assert isinstance(log, dict)
        setting = re.search(r"^maillog_file = ?(.*)$", main_cf, re.MULTILINE)
        assert setting is not None
        if log["via"] == "syslog":
            assert setting.group(1) == ""
        else:
            assert setting.group(1) != ""
        assert (LAB / host / "etc" / "postfix" / "master.cf").is_file()


@pytest.mark.parametrize("lab", [LAB, HOSTILE], ids=["standard", "hostile"])
def test_mtimes_cover_every_log(lab: Path) -> None:
    mtimes = json.loads((lab / "mtimes.json").read_text())
    expected_paths = {f"{h}/{str(_host(h, lab)['log']['path']).lstrip('/')}"  # type: ignore[index]
                      for h in ("mx1", "filter1", "mbox1", "out1")}
    assert set(mtimes) == expected_paths
    assert all(isinstance(v, float) for v in mtimes.values())


def test_every_accepted_message_id_is_logged() -> None:
    scenarios = _expected()["scenarios"]
    assert isinstance(scenarios, list)
    all_logs = "\n".join(_log_text(h) for h in ("mx1", "filter1", "mbox1", "out1"))
    for scn in scenarios:
        fates = {f["fate"] for f in scn["fates"]}
        if fates == {"rejected"}:
            assert f"message-id={scn['message_id']}" not in all_logs
        else:
            assert f"message-id={scn['message_id']}" in all_logs, scn["name"]


# --------------------------------------------------------------------------- hostile set

FORGED = r'"x; from=<ceo@corp\.example> to=<cfo@corp\.example>"@evil\.example'
HOSTILE_SHAPES = [
    # the forged group twice: unquoted in the reply text, quoted in the real trailer's to=<>
    ("mx1", (r"postfix/smtpd\[\d+\]: NOQUEUE: reject: RCPT from ext-client\.example\.org"
             r"\[127\.0\.0\.50\]: 454 4\.7\.1 <x; from=<ceo@corp\.example> "
             r"to=<cfo@corp\.example>@evil\.example>: Relay access denied; "
             rf"from=<mallory@evil\.example> to=<{FORGED}> proto=ESMTP helo=<")),
    *((h, rf"postfix/qmgr\[\d+\]: \w+: from=<{FORGED}>, size=\d+, nrcpt=1 \(queue active\)$")
      for h in ("mx1", "filter1", "mbox1")),
    *((h, "postfix/qmgr\\[\\d+\\]: \\w+: from=<\u202egnp\\.exe@evil\\.example>, size=")
      for h in ("mx1", "filter1", "mbox1")),
    ("mx1", "postfix/smtp\\[\\d+\\]: \\w+: to=<bob\u202e@example\\.test>, relay=filter1"),
    ("mbox1", "postfix/virtual\\[\\d+\\]: \\w+: to=<bob\u202e@example\\.test>, relay=virtual, "
              ".*status=sent \\(delivered to maildir\\)$"),
]


@pytest.mark.parametrize(("host", "pattern"), HOSTILE_SHAPES)
def test_hostile_log_has_line_shape(host: str, pattern: str) -> None:
    assert re.search(pattern, _log_text(host, HOSTILE), re.MULTILINE), (host, pattern)


def test_hostile_set_sent_what_its_lines_show() -> None:
    lab = _expected(HOSTILE)["lab"]
    assert isinstance(lab, dict) and lab["scenario_set"] == "hostile"
    scenarios = _expected(HOSTILE)["scenarios"]
    assert isinstance(scenarios, list)
    assert [s["name"] for s in scenarios] == ["injected_reject", "forged_sender", "bidi_address"]
    logs = "\n".join(_log_text(h, HOSTILE) for h in ("mx1", "filter1", "mbox1"))
    for scn in scenarios:
        delivered = {f["fate"] for f in scn["fates"]} == {"delivered"}
        assert (f"message-id={scn['message_id']}" in logs) is delivered, scn["name"]
        assert f"from=<{scn['sender']}>" in logs, scn["name"]
    # Postfix logs U+202E as the raw UTF-8 bytes, through postlogd and rsyslog alike
    for host in ("mx1", "filter1", "mbox1"):
        log = _host(host, HOSTILE)["log"]
        assert isinstance(log, dict)
        raw = (HOSTILE / host / str(log["path"]).lstrip("/")).read_bytes()
        assert b"\xe2\x80\xae" in raw and b"?gnp.exe" not in raw, host

"""Hostile input: log content (and a server's file names and errors) never reaches a terminal raw.

Any SMTP client chooses its HELO, MAIL FROM, RCPT TO and Message-ID, and a compromised server
its file names, replies and stderr. Text for a person shows control, C1 and bidi characters
escaped (``render.safe.printable``), measured and clipped after escaping; JSON, NDJSON and CSV
carry the data exactly, JSON with bidi controls (and a few others) written as ``\\uXXXX``.

The CLI tests run the real CLI over a copy of the demo fleet (real Postfix logs, local
transport) to which one hostile session was added, modelled on real smtpd/cleanup/qmgr/smtp
lines for one queue ID and a NOQUEUE reject.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from collector.cli.app import ExitCode, app
from collector.cli.report import report_problems
from collector.cli.terminal import Terminal
from collector.errors import TransportError
from collector.models import (
    HostError,
    HostResult,
    Outcome,
    ParseStats,
    RecipientOutcome,
    Row,
    Stage,
    Trace,
)
from collector.render.rows import (
    HostReport,
    render_hosts_table,
    render_rows_table,
    render_summary_table,
)
from collector.render.safe import CsvWriter, Escaped, printable, write_json, write_ndjson
from collector.render.text import clip
from collector.render.trace import render_traces_table, render_traces_text

DEMO = Path(str(files("collector") / "demo"))

OSC = "\x1b]0;pwned\x07"  # sets the terminal's title
CSI = "\x1b[2J\x1b[H"  # clears the screen
C1_CSI = "\x9b31m"  # CSI as one C1 character (some terminals act on it)
RLO = "\u202e"  # right-to-left override: real Postfix logs it raw for an SMTPUTF8 sender
SENDER = f"ceo{RLO}gro.live@evil.example.org"  # shows as ceo...@evil "live.org" reversed
RCPT = f"bob{OSC}\r\x08@example.test"
# Postfix quotes a local part with specials (";" here) in a reject's trailer (quote_822_local)
RCPT_QUOTED = f'"bob{OSC}\r\x08"@example.test'
MSGID = f"<id{CSI}{C1_CSI}@evil.example.org>"
HELO = f"helo{CSI}{RLO}evil"  # smtpd neuters spaces (and \\r) in HELO
REPLY = f"host said: 550 5.1.1 {OSC}\x1b[1A\r{RLO}unknown user"
QID = "5A1B2168401"
SESSION = [
    "Nov 29 17:40:01 mx1 postfix/smtpd[23778]: connect from evil.example.org[127.0.0.66]",
    f"Nov 29 17:40:01 mx1 postfix/smtpd[23778]: {QID}: client=evil.example.org[127.0.0.66]",
    f"Nov 29 17:40:01 mx1 postfix/cleanup[23782]: {QID}: message-id={MSGID}",
    f"Nov 29 17:40:01 mx1 postfix/qmgr[23688]: {QID}: from=<{SENDER}>, size=510, nrcpt=1"
    " (queue active)",
    f"Nov 29 17:40:01 mx1 postfix/smtp[23783]: {QID}: to=<{RCPT}>,"
    " relay=filter1.example.test[127.0.0.22]:2525, delay=0.14, delays=0.03/0.04/0.04/0.04,"
    f" dsn=5.1.1, status=bounced ({REPLY})",
    f"Nov 29 17:40:01 mx1 postfix/qmgr[23688]: {QID}: removed",
    "Nov 29 17:40:02 mx1 postfix/smtpd[23778]: NOQUEUE: reject: RCPT from"
    f" evil.example.org[127.0.0.66]: 554 5.7.1 <{RCPT_QUOTED}>: Relay access denied;"
    f" from=<{SENDER}> to=<{RCPT_QUOTED}> proto=ESMTP helo=<{HELO}>",
    "Nov 29 17:40:02 mx1 postfix/smtpd[23778]: disconnect from evil.example.org[127.0.0.66]"
    " ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5",
    # not a Postfix line (a tab keeps it a sample rather than binary junk): shown by -v
    f"\tjunk {OSC} line",
]

#: What must never reach a terminal raw (the classes the issue names).
RAW = {"\x1b", "\r", "\x08", "\x07", "\x9b", RLO}
#: What JSON writes as \\uXXXX although it keeps other non-ASCII text as UTF-8.
JSON_RAW = {chr(c) for c in range(0x7F, 0xA0)} | set(
    "\u061c\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


def unsafe(text: str) -> set[str]:
    """Characters of ``text`` a terminal could act on (line breaks separate lines: allowed)."""
    return {c for c in text if c != "\n" and not c.isprintable()}


# --------------------------------------------------------------------------- printable


def unescape(shown: str) -> str:
    """The reader's rule: an escape decodes, ``\\\\`` is a backslash, any other is itself."""
    simple = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}

    def one(m: re.Match[str]) -> str:
        body = m.group(1)
        return simple[body] if body in simple else chr(int(body[1:], 16))

    return re.sub(r"\\([\\tnr]|x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8})", one, shown)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "alice@example.org",
        "250 2.0.0 Ok: queued as 4jcvP85yMBzC5vv (x=1; y=<2>) ~!#$%^&*[]{}|`",
        "jörg@bücher.example",
        "用户@例子.广告",
        "Привет, мир",
        "مرحبا@مثال.اختبار",  # right-to-left letters are text, not controls
        "📬 emoji",
        '"carol\\"o"@example.net',  # a quoted local part's backslash reads as logged
        "C:\\users\\x and \\q",
    ],
)
def test_clean_text_is_unchanged(text: str) -> None:
    assert printable(text) == text


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("\x1b[2J", "\\x1b[2J"),
        ("\x1b]0;t\x07", "\\x1b]0;t\\x07"),
        ("a\rb\x08c", "a\\rb\\x08c"),
        ("\t\n\x00\x7f", "\\t\\n\\x00\\x7f"),
        ("\x85\x9b\x9f", "\\x85\\x9b\\x9f"),
        ("a\u202eb\u2066c\u061c", "a\\u202eb\\u2066c\\u061c"),
        ("\u2028\u2029", "\\u2028\\u2029"),
        ("zero\u200bwidth\ufeff", "zero\\u200bwidth\\ufeff"),
        ("no\xa0break", "no\\xa0break"),  # a space that passes for ASCII's
        ("tag\U000e0041", "tag\\U000e0041"),
        ("\udcff", "\\udcff"),  # a lone surrogate (surrogateescape)
        # a backslash is doubled where it would read as an escape, and at the end
        ("\\x1b", "\\\\x1b"),
        ("\\u202e", "\\\\u202e"),
        ("\\t", "\\\\t"),
        ("\\\\", "\\\\\\\\"),
        ("\\\\a", "\\\\\\a"),
        ("a\\", "a\\\\"),
        ("\\\x1b", "\\\\\\x1b"),
        ("\\é", "\\\\é"),
    ],
)
def test_controls_are_shown_escaped(text: str, shown: str) -> None:
    assert printable(text) == shown
    assert unescape(shown) == text


def every_class() -> list[str]:
    """C0, DEL, C1, the bidi controls, separators and other invisible format characters."""
    c0 = [chr(c) for c in range(0x20)]
    c1 = [chr(c) for c in range(0x7F, 0xA0)]
    bidi = list("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
    other = list("\u2028\u2029\u200b\u200c\u200d\u2060\ufeff\u00ad\u00a0\u3000\ufff9")
    return c0 + c1 + bidi + other


@pytest.mark.parametrize("char", every_class(), ids=lambda c: f"U+{ord(c):04X}")
def test_every_dangerous_character_is_escaped(char: str) -> None:
    shown = printable(f"a{char}b")
    assert char not in shown
    assert shown == "a" + repr(char)[1:-1] + "b"
    assert not unsafe(shown)


def hostile_texts(n: int) -> Iterator[str]:
    alphabet = [*every_class(), "\\", "x", "u", "U", "t", "n", "r", "0", "1", "b", "e", "f",
                "a", " ", "é", "[", "]", ";", "\U000e0001", "\udc80"]
    rng = random.Random(8)
    for _ in range(n):
        yield "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24)))


def test_no_raw_control_survives_and_the_escaping_is_unambiguous() -> None:
    for text in hostile_texts(5000):
        shown = printable(text)
        assert not unsafe(shown), (text, shown)
        assert unescape(shown) == text, (text, shown)


def test_escaped_text_is_not_escaped_twice() -> None:
    shown = printable("a\\x41\x1b")
    assert printable(Escaped(shown)) == shown
    assert printable(shown) != shown  # plain text is always escaped: idempotence is not promised


def test_a_clip_after_escaping_cannot_open_a_sequence() -> None:
    for width in range(1, 30):
        cut = clip(printable(f"{OSC}{CSI}{RLO}"), width)
        assert len(cut) <= width and not unsafe(cut)


# --------------------------------------------------------------------------- JSON


def test_json_escapes_bidi_controls_and_parses_back_exactly() -> None:
    payload = {"from": SENDER, "to": RCPT, "id": MSGID, "reply": REPLY, "sep": "a\u2028b\x7f",
               "kept": "jörg 用户 📬", "keys\u202e": [HELO]}
    out = io.StringIO()
    write_json(payload, out)
    raw = out.getvalue()
    assert not set(raw) & JSON_RAW and not set(raw) & RAW
    assert "\\u202e" in raw and "\\u2028" in raw and "\\u007f" in raw
    assert "jörg 用户 📬" in raw  # other non-ASCII text stays UTF-8
    assert json.loads(raw) == payload
    nd = io.StringIO()
    write_ndjson([payload, {"x": RLO}], nd)
    lines = nd.getvalue().splitlines()
    assert len(lines) == 2 and not set(nd.getvalue()) & JSON_RAW
    assert [json.loads(x) for x in lines] == [payload, {"x": RLO}]


def test_csv_is_exact_even_with_a_carriage_return_in_a_field() -> None:
    out = io.StringIO()
    writer = CsvWriter(out)
    rows = [["to", "n"], [RCPT, 1], [f"x\rforged,row,{RLO}", 2], ["plain", 3]]
    for row in rows:
        writer.writerow(row)
    assert out.getvalue().splitlines()[-1] == "plain,3"  # a clean row as csv writes it
    back = list(csv.reader(io.StringIO(out.getvalue(), newline="")))
    assert back == [[str(v) for v in row] for row in rows]


def test_clean_json_is_byte_identical_to_json_dump() -> None:
    payload = {"results": [{"from": "jörg@bücher.example", "n": 1.5, "x": None, "ok": True}],
               "hosts": [{"name": "mx1", "notes": ["用户", "a\\b \"q\""]}] * 3}
    out = io.StringIO()
    write_json(payload, out)
    assert out.getvalue() == json.dumps(payload, indent=2, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------- renderers


def hostile_row(i: int = 0) -> Row:
    return Row(
        time=datetime(2026, 11, 29, 17, 40, 1, tzinfo=UTC),
        host="mx1",
        queue_id=QID,
        sender=SENDER,
        recipient=RCPT * (i + 1),
        orig_recipient=None,
        status="bounced",
        dsn="5.1.1",
        relay=f"evil{CSI}.example[203.0.113.9]:25",
        delay=0.1,
        message_id=MSGID,
        response=REPLY,
        client=None,
    )


# (host and queue ID are never clipped: the table cannot be narrower than about 90 columns)
@pytest.mark.parametrize("width", [100, 120, 160])
def test_the_search_table_escapes_every_cell_and_fits(width: int) -> None:
    out = io.StringIO()
    render_rows_table([hostile_row(i) for i in range(3)], out, width=width)
    text = out.getvalue()
    assert not unsafe(text)
    assert "ceo\\u202e" in text
    assert max(len(line) for line in text.splitlines()) <= width


def hostile_trace(status: str = "bounced") -> Trace:
    when = datetime(2026, 11, 29, 17, 40, 1, tzinfo=UTC)
    recipient = RecipientOutcome(
        address=RCPT, orig_address=f"orig{RLO}@example.test", status=status,
        outcome=Outcome.BOUNCED, host="mx1", queue_id=QID, dsn=f"5.1.1{OSC}", response=REPLY,
        time=when, path=(), hop_index=None, attempt=None,
    )  # fmt: skip
    return Trace(message_id=MSGID, sender=SENDER, first_seen=when, last_seen=when, size=510,
                 hops=(), recipients=(recipient,), notifications=(),
                 notes=(f"note {CSI} from a server{RLO}",), anchor=None)  # fmt: skip


def test_trace_text_escapes_the_data_then_adds_its_own_colours() -> None:
    out = io.StringIO()
    render_traces_text([hostile_trace(f"bounced{CSI}")], out, width=200, color=True)
    text = out.getvalue()
    assert "\x1b[31mbounced\x1b[0m" in text  # collector's colour of the outcome
    # the status word is the log's: escaped, and coloured as the unknown word it is
    assert "bounced\\x1b[2J\\x1b[H" in text
    colours = re.sub(r"\x1b\[(?:\d+)m", "", text)
    assert not unsafe(colours)
    assert max(len(line) for line in colours.splitlines()) <= 200


@pytest.mark.parametrize("width", [60, 100])
def test_trace_table_and_plain_text_escape_and_fit(width: int) -> None:
    for render in (render_traces_table, render_traces_text):
        out = io.StringIO()
        render([hostile_trace()], out, width=width)
        assert not unsafe(out.getvalue())
        assert max(len(line) for line in out.getvalue().splitlines()) <= width


def test_summary_error_lines_and_hosts_tables_are_escaped() -> None:
    failed = HostReport("mx9", error=HostError("mx9", Stage.CONNECT, f"banner SSH-2.0-{OSC}\r\n"))
    ok = HostReport("mx1", stats=ParseStats())
    out = io.StringIO()
    render_summary_table([ok, failed], out)
    assert not unsafe(out.getvalue())
    assert "mx9  error: connect: banner SSH-2.0-\\x1b]0;pwned\\x07\\r\\n" in out.getvalue()
    out = io.StringIO()
    cut = Escaped(printable(f"read: {OSC}\\x41")[:20])
    render_hosts_table([["mx1", cut, 3, f"/var/log/m{CSI}"]], ["host", "status", "n", "path"], out)
    assert not unsafe(out.getvalue())
    assert cut in out.getvalue()  # an Escaped cell is shown as its producer cut it
    assert "/var/log/m\\x1b[2J\\x1b[H" in out.getvalue()


def test_report_problems_escapes_remote_stderr_banner_and_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    results: list[HostResult[object]] = [
        HostResult("mx9", error=HostError("mx9", Stage.READ, f"exited with 2: gzip: {OSC}\nx")),
        HostResult("mx8", error=HostError("mx8", Stage.CONNECT, f"not SSH: {CSI}{RLO}")),
    ]
    exc = TransportError("mx9", Stage.READ, "x", command=f"zcat -- /var/log/m{OSC}.gz")
    report_problems(results, {"mx9": exc})
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "collector: mx9: read: exited with 2: gzip: \\x1b]0;pwned\\x07\\nx",
        "collector: mx9: the command was: zcat -- /var/log/m\\x1b]0;pwned\\x07.gz",
        "collector: mx8: connect: not SSH: \\x1b[2J\\x1b[H\\u202e",
    ]


# --------------------------------------------------------------------------- the CLI


def run(*args: str | Path, columns: int = 100) -> Result:
    runner = CliRunner(env={"COLUMNS": str(columns), "COLLECTOR_INVENTORY": ""})
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    """A copy of the demo fleet with the hostile session in mx1's log; returns its inventory."""
    shutil.copytree(DEMO, tmp_path / "demo")
    log = tmp_path / "demo" / "fleet" / "mx1" / "var" / "log" / "postfix-mx1.log"
    with log.open("a", encoding="utf-8", newline="\n") as f:
        f.writelines(line + "\n" for line in SESSION)
    return tmp_path / "demo" / "inventory.toml"


def assert_shown_safely(result: Result, width: int | None = None) -> None:
    for stream in (result.stdout, result.stderr):
        assert not unsafe(stream), stream
        assert not set(stream) & RAW
    if width is not None and result.stdout:
        assert max(len(line) for line in result.stdout.splitlines()) <= width


@pytest.mark.parametrize("columns", [100, 140])
def test_search_table_and_stderr(fleet: Path, columns: int) -> None:
    result = run("search", "-i", fleet, "--from", SENDER, "-v", columns=columns)
    assert result.exit_code == ExitCode.FOUND, result.stderr
    assert_shown_safely(result, columns)
    assert "ceo\\u202e" in result.stdout
    assert len(result.stdout.splitlines()) == 2 + 2  # header, rule, the delivery, the reject


def test_search_json_ndjson_and_csv_carry_the_data_exactly(fleet: Path) -> None:
    as_json = run("search", "-i", fleet, "--from", SENDER, "-f", "json")
    assert as_json.exit_code == ExitCode.FOUND
    assert not set(as_json.stdout) & (JSON_RAW | RAW)
    rows = json.loads(as_json.stdout)["results"]
    assert [(r["from"], r["to"], r["status"]) for r in rows] == [
        (SENDER, RCPT, "bounced"), (SENDER, RCPT_QUOTED, "rejected")
    ]
    assert rows[0]["message_id"] == MSGID and rows[0]["response"] == REPLY
    ndjson = run("search", "-i", fleet, "--from", SENDER, "-f", "ndjson").stdout
    assert not set(ndjson) & JSON_RAW
    assert [json.loads(line) for line in ndjson.splitlines()] == rows
    # CSV is data, not text for a terminal: exactly as logged
    as_csv = run("search", "-i", fleet, "--from", SENDER, "-f", "csv").stdout
    table = list(csv.DictReader(io.StringIO(as_csv, newline="")))
    assert [(r["from"], r["to"], r["message_id"]) for r in table] == [
        (SENDER, RCPT, MSGID), (SENDER, RCPT_QUOTED, "")
    ]


@pytest.mark.parametrize("fmt", ["text", "table"])
@pytest.mark.parametrize("columns", [60, 100])
def test_trace_text_and_table(fleet: Path, fmt: str, columns: int) -> None:
    result = run("trace", "-i", fleet, MSGID, "-f", fmt, columns=columns)
    assert result.exit_code == ExitCode.FOUND, result.stderr
    assert_shown_safely(result, columns)
    if columns >= 100 or fmt == "text":
        assert "\\x1b[2J" in result.stdout


def test_trace_json_is_exact(fleet: Path) -> None:
    result = run("trace", "-i", fleet, MSGID, "-f", "json")
    assert not set(result.stdout) & (JSON_RAW | RAW)
    (trace,) = json.loads(result.stdout)["traces"]
    assert trace["message_id"] == MSGID and trace["sender"] == SENDER
    assert [(r["address"], r["response"]) for r in trace["recipients"]] == [(RCPT, REPLY)]


def test_trace_text_in_colour_escapes_the_data_then_colours(
    fleet: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Terminal, "detect", classmethod(lambda cls: cls(100, True, False)))
    result = run("trace", "-i", fleet, MSGID)
    assert "\x1b[31mbounced\x1b[0m" in result.stdout
    plain = re.sub(r"\x1b\[\d+m", "", result.stdout)
    assert not unsafe(plain) and "\\x1b]0;pwned\\x07" in plain


def test_summary_and_samples_of_lines_not_understood(fleet: Path) -> None:
    result = run("summary", "-i", fleet, "-v")
    assert result.exit_code == ExitCode.FOUND, result.stderr
    assert_shown_safely(result)
    assert "collector: mx1:   not understood: \\tjunk \\x1b]0;pwned\\x07 line" in result.stderr


def test_hosts_check(fleet: Path) -> None:
    result = run("hosts", "--check", "-i", fleet)
    assert result.exit_code == ExitCode.FOUND, result.stderr
    assert_shown_safely(result)


EVIL_NAME = f"maillog.1{OSC}{RLO}.gz"
SHOWN_NAME = "/var/log/maillog.1\\x1b]0;pwned\\x07\\u202e.gz"


@pytest.fixture
def evil_file(fleet: Path) -> Path:
    """filter1 reads every ``maillog*``, one of them a damaged gzip with an escape in its name."""
    log = fleet.parent / "fleet" / "filter1" / "var" / "log"
    packed = gzip.compress((log / "maillog").read_bytes())
    (log / EVIL_NAME).write_bytes(packed[: len(packed) // 2])
    text = fleet.read_text(encoding="utf-8")
    fleet.write_text(
        text.replace('root = "fleet/filter1"\n',
                     'root = "fleet/filter1"\nlogs = ["/var/log/maillog*"]\n'),
        encoding="utf-8",
    )
    return fleet


@pytest.mark.parametrize(
    "command",
    [["search", "-v", "--from", "alice@example.test"], ["trace", "--from", "alice@example.test"],
     ["summary", "-v"]],
    ids=["search", "trace", "summary"],
)
def test_a_file_name_from_the_server_is_shown_escaped(evil_file: Path, command: list[str]) -> None:
    result = run(*command, "-i", evil_file)
    assert result.exit_code == ExitCode.PARTIAL, result.stderr
    assert_shown_safely(result)
    assert f"collector: filter1: read: {SHOWN_NAME} is damaged" in result.stderr
    if "-v" in command:
        assert f"collector: filter1: source {SHOWN_NAME} (inventory, gz)" in result.stderr


def test_hosts_check_shows_a_file_name_escaped(evil_file: Path) -> None:
    result = run("hosts", "--check", "-i", evil_file)
    assert_shown_safely(result)
    assert SHOWN_NAME in result.stdout
    as_json = run("hosts", "--check", "-i", evil_file, "-f", "json").stdout
    assert not set(as_json) & (JSON_RAW | RAW)
    paths = {s["path"] for h in json.loads(as_json)["hosts"] for s in h["sources"]}
    assert f"/var/log/{EVIL_NAME}" in paths


def test_a_remembered_remote_error_is_one_escaped_line(fleet: Path, tmp_path: Path) -> None:
    """A case folder keeps what a failed host said (its stderr); --offline says it again."""
    case = tmp_path / "case"
    assert run("fetch", "-i", fleet, "--all", "--dest", case).exit_code == ExitCode.FOUND
    manifest = json.loads((case / "collector-fleet.json").read_text(encoding="utf-8"))
    said = f"command exited with 2: zcat: {OSC}\n{CSI}gone\r{RLO}"
    manifest["hosts"].append({"name": "mx9", "ok": False, "stage": "read", "message": said})
    (case / "collector-fleet.json").write_text(json.dumps(manifest), encoding="utf-8")
    shown = (
        "mx9: read: not in this copy: command exited with 2: zcat: \\x1b]0;pwned\\x07\\n"
        "\\x1b[2J\\x1b[Hgone\\r\\u202e"
    )
    result = run("search", "--offline", case, "--from", SENDER)
    assert result.exit_code == ExitCode.PARTIAL
    assert_shown_safely(result)
    assert result.stderr.splitlines() == [f"collector: {shown}"]
    summary = run("summary", "--offline", case)
    assert_shown_safely(summary)
    assert shown.replace(": read:", "  error: read:", 1) in summary.stdout

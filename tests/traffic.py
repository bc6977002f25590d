"""A small deterministic generator of one Postfix host's traffic, with its ground truth.

What real logs have and a lab run rarely does: slow deliveries (a recipient deferred for hours
and delivered later), retries, several recipients finishing at different times, NOQUEUE
rejects repeated in one second, and the log rotated (``maillog.2.gz``, ``maillog.1``,
``maillog``) with a message's life straddling two files. Lines are in Postfix's own formats
(smtpd, cleanup, qmgr, smtp, NOQUEUE reject; BSD syslog stamps); the truth says, for every
queue ID, its sender and each recipient's final status.
"""

from __future__ import annotations

import gzip
import os
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

START = datetime(2026, 1, 15, 0, 0, tzinfo=UTC)
HOST = "mx1"


@dataclass
class Truth:
    #: queue ID -> (sender, {recipient: final status})
    messages: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)
    #: (sender, recipient) of every NOQUEUE reject line, one entry per line
    rejects: list[tuple[str, str]] = field(default_factory=list)

    def rows_from(self, sender: str) -> list[tuple[str | None, str, str]]:
        out: list[tuple[str | None, str, str]] = [
            (qid, rcpt, status)
            for qid, (s, rcpts) in self.messages.items()
            if s == sender
            for rcpt, status in rcpts.items()
        ]
        out += [(None, rcpt, "rejected") for s, rcpt in self.rejects if s == sender]
        return sorted(out, key=lambda r: (r[0] or "", r[1], r[2]))


def _stamp(t: datetime) -> str:
    return f"{t:%b} {t.day:2d} {t:%H:%M:%S}"


def generate(messages: int = 1500, seed: int = 7) -> tuple[list[tuple[datetime, str]], Truth]:
    """(time, line) of the whole period, in time order, and the truth."""
    rng = random.Random(seed)
    senders = [f"user{n}@example.com" for n in range(40)] + ["rare@example.org"]
    weights = [10] * 40 + [1]
    events: list[tuple[datetime, int, str]] = []
    truth = Truth()
    seq = 0

    def emit(t: datetime, text: str) -> None:
        nonlocal seq
        seq += 1
        events.append((t, seq, f"{_stamp(t)} {HOST} postfix/{text}"))

    t = START
    for n in range(messages):
        t += timedelta(seconds=rng.randint(1, 40))
        qid = f"{0x100000 + n * 7919 % 0xEFFFFF:X}{rng.randint(0, 15):X}"[:10]
        sender = rng.choices(senders, weights)[0]
        if rng.random() < 0.05:  # a client repeating the same refused RCPT in one second
            rcpt = f"nobody{rng.randint(0, 9)}@example.net"
            for _ in range(rng.randint(1, 3)):
                emit(t, f"smtpd[300]: NOQUEUE: reject: RCPT from c.example[192.0.2.9]: 554 "
                        f"5.7.1 <{rcpt}>: Relay access denied; from=<{sender}> to=<{rcpt}> "
                        "proto=ESMTP helo=<c.example>")
                truth.rejects.append((sender, rcpt))
            continue
        rcpts = [f"dest{rng.randint(0, 300)}@example.net" for _ in range(rng.choice((1, 1, 2, 3)))]
        rcpts = list(dict.fromkeys(rcpts))
        emit(t, f"smtpd[100]: {qid}: client=c.example[192.0.2.1]")
        emit(t, f"cleanup[101]: {qid}: message-id=<{qid}.{n}@c.example>")
        emit(t, f"qmgr[102]: {qid}: from=<{sender}>, size={rng.randint(900, 90000)}, "
                f"nrcpt={len(rcpts)} (queue active)")
        finals: dict[str, str] = {}
        last = t
        for rcpt in rcpts:
            when = t + timedelta(seconds=1)
            slow = rng.random() < 0.15  # deferred, retried, delivered hours later
            retries = rng.randint(1, 4) if slow else 0
            for _ in range(retries):
                emit(when, f"smtp[103]: {qid}: to=<{rcpt}>, relay=mx.example.net[198.51.100.1]"
                           f":25, delay=1, delays=0/0/0/1, dsn=4.4.1, status=deferred (connect "
                           "to mx.example.net[198.51.100.1]:25: Connection timed out)")
                when += timedelta(minutes=rng.randint(20, 90))
            status = "bounced" if rng.random() < 0.05 else "sent"
            reply = ("host mx.example.net[198.51.100.1] said: 550 5.1.1 unknown user (in reply "
                     "to RCPT TO command)") if status == "bounced" else "250 2.0.0 Ok"
            dsn = "5.1.1" if status == "bounced" else "2.0.0"
            emit(when, f"smtp[103]: {qid}: to=<{rcpt}>, relay=mx.example.net[198.51.100.1]:25, "
                       f"delay=1, delays=0/0/0/1, dsn={dsn}, status={status} ({reply})")
            finals[rcpt] = status
            last = max(last, when)
        emit(last, f"qmgr[102]: {qid}: removed")
        truth.messages[qid] = (sender, finals)
    events.sort()
    return [(when, text) for when, _, text in events], truth


def write_rotated(root: Path, lines: list[tuple[datetime, str]]) -> None:
    """``root/var/log/maillog{.2.gz,.1,}``: the period in thirds, each file's mtime its last
    line's time (as logrotate leaves them)."""
    log = root / "var" / "log"
    log.mkdir(parents=True, exist_ok=True)
    third = len(lines) // 3
    parts = {"maillog.2.gz": lines[:third], "maillog.1": lines[third : 2 * third],
             "maillog": lines[2 * third :]}
    for name, part in parts.items():
        data = "".join(text + "\n" for _, text in part).encode()
        path = log / name
        path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
        stamp = part[-1][0].timestamp()
        os.utime(path, (stamp, stamp))


def grep_rows(root: Path, sender: str) -> list[tuple[str | None, str, str]]:
    """What an admin's grep proves: the IDs whose qmgr line names the sender, each
    recipient's last status= line, and the NOQUEUE rejects naming the sender."""
    text = ""
    log = root / "var" / "log"
    for name in ("maillog.2.gz", "maillog.1", "maillog"):
        data = (log / name).read_bytes()
        text += (gzip.decompress(data) if name.endswith(".gz") else data).decode()
    ids = {line.split(": ")[1] for line in text.splitlines()
           if f"from=<{sender}>, size=" in line}
    final: dict[tuple[str, str], str] = {}
    rejects: list[tuple[str | None, str, str]] = []
    for line in text.splitlines():
        parts = line.split(": ", 2)
        if len(parts) > 2 and parts[1] in ids and " status=" in line:
            rcpt = line.split("to=<", 1)[1].split(">", 1)[0]
            final[(parts[1], rcpt)] = line.split(" status=", 1)[1].split(" ", 1)[0]
        if "NOQUEUE: reject:" in line and f"from=<{sender}> to=<" in line:
            rejects.append((None, line.split(f"from=<{sender}> to=<", 1)[1].split(">", 1)[0],
                            "rejected"))
    rows = [(q, r, s) for (q, r), s in final.items()] + rejects
    return sorted(rows, key=lambda r: (r[0] or "", r[1], r[2]))

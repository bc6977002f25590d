"""collector follow against the LIVE Postfix lab: real sshd hosts whose log files are the
lab's own (hard links to the files its Postfix instances write), followed from the moment the
chain is up while the lab sends its scenarios (tests/lab/postfix_lab.py, quick mode).

Every scenario's message must come out once, joined across hops (one ndjson trace per message,
each recipient at the fate, host and path expected.json says); the text output must hold one
line per (message, recipient), the same rows, each once, a final fate printed within seconds
of being logged and the recipients out1 keeps deferred only after ``--max-open``; Ctrl-C (SIGINT)
ends both with exit code 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from follow_support import check_scenarios, collapse, start
from lab.postfix_lab import LabHost, run_lab
from sshfleet import Fleet, HostSpec, running_fleet

pytestmark = [pytest.mark.lab, pytest.mark.ssh]

#: follow's --max-open: out1's deferred mail is shown as queued 30 s after its first line, while
#: out1 still retries it every 10-20 s (the lab's backoff); those retries make no second line.
MAX_OPEN = 30
FINAL = {"delivered", "relayed-out", "bounced", "rejected", "expired", "discarded"}


def _tails(fleet: Fleet, names: Sequence[str]) -> int:
    found = 0
    for name in names:
        for pid in fleet.namespace_pids(name):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"tail\0-n0\0-F"):
                    found += 1
    return found


def _rows(trace: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """The text line's words (but its time) of each recipient of a trace, notifications'
    included, from the ndjson trace."""
    out = []
    for r in trace["recipients"]:
        hops = ">".join(collapse([p["host"] for p in r["path"]])) or "-"
        out.append((r["host"], r["queue_id"], trace["sender"] or "<>", r["address"] or "<>",
                    r["status"], r["outcome"], hops))
    for child in trace["notifications"]:
        out += _rows(child)
    return out


def test_follow_the_live_lab_every_fate_once_joined_across_hops(tmp_path: Path) -> None:
    began = time.monotonic()
    running: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:

        def chain_up(hosts: tuple[LabHost, ...]) -> None:
            specs = [HostSpec(h.name, files={
                "/etc/postfix/main.cf": h.config_dir / "main.cf",
                "/etc/postfix/master.cf": h.config_dir / "master.cf",
                h.log_path: b""}) for h in hosts]
            fleet = stack.enter_context(running_fleet(tmp_path / "fleet", specs))
            for h in hosts:  # the host's log is the file the lab's Postfix writes
                inside = fleet.host_path(h.name, h.log_path)
                inside.unlink()
                os.link(h.live_log, inside)
            inv = tmp_path / "inventory.toml"
            inv.write_text(fleet.inventory_toml(
                {h.name: {"aliases": [h.fqdn, h.ip]} for h in hosts}))
            args = ("follow", "-i", str(inv), "--max-open", f"{MAX_OPEN}s")
            text, ndjson = start(*args), start(*args, "--format", "ndjson")
            for live in (text, ndjson):
                stack.callback(lambda p=live.proc: p.poll() is None and p.kill())
            running.update(text=text, ndjson=ndjson, fleet=fleet)
            text.until(lambda: _tails(fleet, [h.name for h in hosts]) == 2 * len(hosts),
                       30, "every host followed twice")

        lab = run_lab(tmp_path / "out", quick=True, on_chain_up=chain_up)
        expected = json.loads(lab.expected.read_text())
        assert expected["lab"]["mode"] == "quick"
        text, ndjson = running["text"], running["ndjson"]
        ndjson.until(lambda: check_scenarios(ndjson.traces(), expected), MAX_OPEN + 30,
                     "every scenario's message")
        rows = Counter(row for t in ndjson.traces() for row in _rows(t))
        text.until(lambda: len(text.out) >= sum(rows.values()), 15, "every recipient's line")
        time.sleep(2)  # nothing more comes
        codes = [live.interrupt() for live in (text, ndjson)]
    assert codes == [0, 0], (text.err, ndjson.err)
    for live in (text, ndjson):
        assert not [e for e in live.err if "error" in e or "lost" in e], live.err

    traces = ndjson.traces()
    # each scenario once, joined across hops, a refusal by the next hop at its path's end
    check_scenarios(traces, expected, refusals_joined=True)
    keys = [(t["hops"][0]["host"], t["hops"][0]["queue_id"], t["first_seen"],
             tuple(r["address"] for r in t["recipients"])) for t in traces]
    assert len(keys) == len(set(keys)), "a message shown twice"

    # text: one line per (message, recipient), the same rows as the traces, each once
    lines = [(line.split(" ")[0], tuple(line.split(" ")[1:])) for line in text.out]
    assert Counter(words for _, words in lines) == rows
    assert len(lines) == sum(rows.values())
    single = next(s for s in expected["scenarios"] if s["name"] == "single")
    (trace,) = [t for t in traces if t["message_id"] == single["message_id"]]
    qid = trace["recipients"][0]["queue_id"]
    assert [w[-1] for _, w in lines if w[1] == qid] == ["mx1>filter1>mbox1"]

    # each final fate within seconds of being logged (a hop's queue file finishes, 5 s of
    # grace, the next look); the ones out1 keeps deferred only after --max-open, after their
    # message's delivered recipients
    for (when, words), arrived in zip(lines, text.arrived, strict=True):
        late = arrived - datetime.fromisoformat(when).timestamp()
        if words[5] in FINAL:
            assert late < 20, (words, late)
        else:
            # --max-open counts from the queue file's first line on that host; the row's time
            # is its recipient's own line, logged up to a second or two after it, and the lab's
            # stamps are whole seconds (a run saw 29.7 s): never released before ~MAX_OPEN
            assert words[5] == "queued" and late > MAX_OPEN - 2, (words, late)
    multi = next(s for s in expected["scenarios"] if s["name"] == "multi_split")
    (trace,) = [t for t in traces if t["message_id"] == multi["message_id"]]
    mine = {r["address"]: i for r in trace["recipients"]
            for i, (_, w) in enumerate(lines) if w[:4] == (r["host"], r["queue_id"],
                                                          trace["sender"], r["address"])}
    delivered = [mine[f["recipient"]] for f in multi["fates"] if f["fate"] == "delivered"]
    deferred = [mine[f["recipient"]] for f in multi["fates"] if f["fate"] == "deferred"]
    assert delivered and deferred and max(delivered) < min(deferred)
    print(f"live lab follow: {len(lines)} lines, {len(traces)} messages, "
          f"{time.monotonic() - began:.0f} s, lab phases {lab.phases}")

"""A trace started from one hop's queue ID finds the message's other hops by its Message-ID
in round 1, on every host at once, instead of one round per hop; the answer is the same as the
trace of the Message-ID. On the lab's real logs (the demo fleet)."""

from __future__ import annotations

import json
import re

import pytest
from lab_fleet import SCENARIOS
from support import DEMO, run

from collector.cli.app import ExitCode

INV = DEMO / "inventory.toml"


def _trace(*args: str) -> tuple[dict[str, object], int]:
    result = run("trace", "-i", INV, "-v", "-f", "json", *args)
    assert result.exit_code == ExitCode.FOUND, result.stderr
    rounds = re.search(r"(\d+) rounds, \d+ commands", result.stderr)
    assert rounds, result.stderr
    return json.loads(result.stdout), int(rounds[1])


@pytest.mark.parametrize("name", ["single", "alias_forward"])
def test_a_queue_id_trace_finds_the_hops_by_message_id(name: str) -> None:
    by_mid, _ = _trace("--", SCENARIOS[name]["message_id"])
    [trace] = by_mid["traces"]  # type: ignore[misc]
    first = trace["hops"][0]
    assert len({h["host"] for h in trace["hops"]}) >= 3  # the message crossed the chain
    by_qid, rounds = _trace(f"{first['host']}:{first['queue_id']}")
    assert by_qid["traces"] == by_mid["traces"]
    # round 0 on the first host, round 1 on every other: each hop's cleanup logged the ID
    assert rounds == 2


#: The scenarios with a queue file (the others were refused at RCPT: no Message-ID logged).
QUEUED = sorted(n for n, s in SCENARIOS.items()
                if any(f["fate"] != "rejected" for f in s["fates"]) or n == "cleanup_reject")


@pytest.mark.parametrize("name", QUEUED)
def test_a_queue_id_trace_is_one_round_behind_the_message_id_trace(name: str) -> None:
    """The same traces; the queue-ID trace needs round 0 to learn the Message-ID, then goes
    as the Message-ID trace goes (a notification or a refusal costs its own rounds)."""
    by_mid, mid_rounds = _trace("--", SCENARIOS[name]["message_id"])
    first = by_mid["traces"][0]["hops"][0]  # type: ignore[index]
    by_qid, qid_rounds = _trace(f"{first['host']}:{first['queue_id']}")
    assert by_qid["traces"] == by_mid["traces"]
    assert qid_rounds <= mid_rounds + 1

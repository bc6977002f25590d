"""Live end-to-end check of the lab itself: a quick run really produces the chain's logs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from .postfix_lab import (
    HOSTS_BEGIN,
    HOSTS_FILE,
    LabError,
    LabResult,
    _clear_outputs,
    run_lab,
)


@pytest.fixture(scope="module")
def quick_lab(central_quick_lab: LabResult) -> LabResult:
    return central_quick_lab  # one lab run for these checks and the log host's (conftest.py)


@pytest.mark.lab
def test_quick_run_writes_host_roots_and_ground_truth(quick_lab: LabResult) -> None:
    expected = json.loads(quick_lab.expected.read_text())
    assert expected["lab"]["mode"] == "quick"
    assert set(quick_lab.host_roots) == {"mx1", "filter1", "mbox1", "out1"}
    for name, root in quick_lab.host_roots.items():
        assert (root / "etc" / "postfix" / "main.cf").is_file()
        log_path = expected["hosts"][name]["log"]["path"]
        assert quick_lab.logs[name] == root / log_path.lstrip("/")
    mtimes = json.loads((quick_lab.out / "mtimes.json").read_text())
    logs = [*quick_lab.logs.values(), *(p for rel, p in quick_lab.loghost.items()
                                        if not rel.endswith(".journal"))]
    assert {str(p.relative_to(quick_lab.out)) for p in logs} == set(mtimes)


@pytest.mark.lab
def test_quick_run_logs_every_hop(quick_lab: LabResult) -> None:
    text = {name: path.read_text() for name, path in quick_lab.logs.items()}
    assert re.search(r"NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.66\]", text["mx1"])
    assert re.search(r": [0-9A-F]+: reject: RCPT from ", text["mx1"])
    assert "orig_queue_id=" in text["filter1"]
    assert re.search(r"cleanup\[\d+\]: [0-9A-F]+: reject: header Subject:", text["filter1"])
    assert "status=bounced" in text["filter1"]
    assert "status=sent (forwarded as " in text["mbox1"]
    assert "status=deferred (connect to 127.0.0.9[127.0.0.9]:2599" in text["out1"]
    expected = json.loads(quick_lab.expected.read_text())
    delivered = [s for s in expected["scenarios"]
                 if any(f["fate"] == "delivered" for f in s["fates"])]
    for scn in delivered:
        assert f"message-id={scn['message_id']}" in text["mbox1"], scn["name"]


@pytest.mark.lab
def test_quick_run_leaves_nothing_behind(quick_lab: LabResult) -> None:
    assert HOSTS_BEGIN not in HOSTS_FILE.read_text()
    for name in quick_lab.host_roots:
        assert not Path(f"/etc/postfix-{name}").exists()
        assert not Path(f"/var/spool/postfix-{name}").exists()


@pytest.fixture(scope="module")
def hostile_lab(tmp_path_factory: pytest.TempPathFactory) -> LabResult:
    return run_lab(tmp_path_factory.mktemp("lab") / "hostile", quick=True,
                   scenario_set="hostile")


@pytest.mark.lab
def test_hostile_run_logs_forged_fields_and_raw_bidi(hostile_lab: LabResult) -> None:
    expected = json.loads(hostile_lab.expected.read_text(encoding="utf-8"))
    assert expected["lab"]["scenario_set"] == "hostile"
    scn = {s["name"]: s for s in expected["scenarios"]}
    mx1 = hostile_lab.logs["mx1"].read_text(encoding="utf-8")
    (forged,) = scn["injected_reject"]["recipients"]
    assert (f"Relay access denied; from=<{scn['injected_reject']['sender']}> to=<{forged}> "
            "proto=ESMTP") in mx1
    assert f"from=<{scn['forged_sender']['sender']}>, size=" in mx1
    raw = hostile_lab.logs["mbox1"].read_bytes()
    for address in (scn["bidi_address"]["sender"], *scn["bidi_address"]["recipients"]):
        assert "\u202e" in address
        assert address.encode() in raw
    assert f"message-id={scn['bidi_address']['message_id']}".encode() in raw


def test_a_run_clears_only_what_it_writes(tmp_path: Path) -> None:
    """The hostile fixtures live inside the standard ones: a regeneration must keep them."""
    out = tmp_path / "out"
    (out / "hostile").mkdir(parents=True)
    (out / "hostile" / "keep.txt").write_text("kept")
    (out / "mx1" / "var").mkdir(parents=True)
    (out / "expected.json").write_text("{}")
    _clear_outputs(out)
    assert sorted(p.name for p in out.iterdir()) == ["hostile"]
    assert (out / "hostile" / "keep.txt").read_text() == "kept"


def test_an_unknown_scenario_set_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="unknown scenario set 'nope'"):
        run_lab(tmp_path / "out", scenario_set="nope")
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def filters_lab(tmp_path_factory: pytest.TempPathFactory) -> LabResult:
    return run_lab(tmp_path_factory.mktemp("lab") / "filters", quick=True,
                   scenario_set="filters")


@pytest.mark.lab
def test_filters_run_logs_what_content_filters_make_postfix_log(filters_lab: LabResult) -> None:
    expected = json.loads(filters_lab.expected.read_text(encoding="utf-8"))
    assert expected["lab"]["scenario_set"] == "filters"
    mx1 = filters_lab.logs["mx1"].read_text(encoding="utf-8")
    filter1 = filters_lab.logs["filter1"].read_text(encoding="utf-8")
    assert re.search(r"postfix/smtpd\[\d+\]: proxy-reject: END-OF-MESSAGE: 554 5\.7\.1 ", mx1)
    assert re.search(r"postfix/smtpd\[\d+\]: proxy-accept: END-OF-MESSAGE: 250 ", mx1)
    assert "NOQUEUE: reject: VRFY from ext-client.example.org[127.0.0.50]: 550 5.1.1" in mx1
    assert "; to=<nosuchuser@example.test> proto=SMTP helo=<" in mx1
    assert ": info: header Subject: Quarterly report from " in mx1
    assert ": warning: header Subject: URGENT: budget review from " in filter1
    # the content filter answers without `queued as`; the re-injection has no orig_queue_id=
    assert re.search(r"relay=127\.0\.0\.1\[127\.0\.0\.1\]:10024, .*status=sent "
                     r"\(250 2\.5\.0 OK \([0-9A-F]{18}\)\)", filter1)
    assert "client=localhost[127.0.0.1], orig_client=mx1.example.test[127.0.0.21]" in filter1
    assert "orig_queue_id=" not in filter1

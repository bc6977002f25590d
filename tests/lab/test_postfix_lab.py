"""Live end-to-end check of the lab itself: a quick run really produces the chain's logs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from .postfix_lab import HOSTS_BEGIN, HOSTS_FILE, LabResult, run_lab


@pytest.fixture(scope="module")
def quick_lab(tmp_path_factory: pytest.TempPathFactory) -> LabResult:
    return run_lab(tmp_path_factory.mktemp("lab") / "out", quick=True)


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
    assert {str(p.relative_to(quick_lab.out)) for p in quick_lab.logs.values()} == set(mtimes)


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

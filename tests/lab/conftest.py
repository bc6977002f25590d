"""The lab's live runs shared by its test modules."""

from __future__ import annotations

import pytest

from .postfix_lab import LabResult, run_lab


@pytest.fixture(scope="session")
def central_quick_lab(tmp_path_factory: pytest.TempPathFactory) -> LabResult:
    """One quick run in central mode: every host logs through syslog, its own file and the log
    host's. test_postfix_lab.py checks the hosts' side of it, test_central_lab.py the log host's
    (the standard mode's postlogd layouts run live in test_e2e_lab.py)."""
    return run_lab(tmp_path_factory.mktemp("lab") / "central", quick=True, central=True)

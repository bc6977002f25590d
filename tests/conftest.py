"""Fixtures and options for the whole suite.

``pytest --update-golden`` rewrites tests/golden/ from the real output instead of comparing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support import copy_demo


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite tests/golden/ from the real output of the demo fleet",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture
def demo_fleet(tmp_path: Path) -> Path:
    """A copy of the demo fleet (to change freely); returns its inventory."""
    return copy_demo(tmp_path)

"""render.text: clipping, column widths and byte sizes, as every table and tree uses them."""

from __future__ import annotations

import pytest

from collector.render.text import clip, clip_parts, fit_widths, human_bytes, short_bytes


def test_clip() -> None:
    assert clip("mx1.example.test", 16) == "mx1.example.test"
    assert clip("mx1.example.test", 8) == "mx1.exa…"
    assert clip("mx1.example.test", 8, "~") == "mx1.exa~"
    assert clip("mx1.example.test", 1) == "…"
    assert clip("", 0) == ""


def test_clip_parts_keeps_the_pieces_and_says_whether_it_cut() -> None:
    assert clip_parts(["mx1 ", "A1B2"], 8) == (["mx1 ", "A1B2"], False)
    assert clip_parts(["mx1 ", "A1B2C3"], 8) == (["mx1 ", "A1B"], True)
    assert clip_parts(["mx1 ", "A1B2C3", " tail"], 5) == (["mx1 "], True)
    assert clip_parts(["mx1 ", "A1B2C3"], 8, "~>") == (["mx1 ", "A1"], True)
    assert clip_parts(["abc"], 1) == ([], True)


def test_fit_widths() -> None:
    assert fit_widths([10, 10, 10], [5, 5, 5], (2, 0), 34) == [10, 10, 10]
    assert fit_widths([10, 10, 10], [5, 5, 5], (2, 0), 30) == [10, 10, 6]
    assert fit_widths([10, 10, 10], [5, 5, 5], (2, 0), 26) == [7, 10, 5]
    # cannot shrink below the minimums
    assert fit_widths([10, 10, 10], [5, 5, 5], (2, 0), 10) == [5, 10, 5]


@pytest.mark.parametrize(
    ("n", "decimal", "binary"),
    [
        (0, "0 B", "0B"),
        (999, "999 B", "999B"),
        (1000, "1.0 kB", "1000B"),
        (1024, "1.0 kB", "1.0K"),
        (15812, "15.8 kB", "15.4K"),
        (1_000_000, "1.0 MB", "976.6K"),
        (3 * 1024**3, "3.2 GB", "3.0G"),
        (5 * 10**12, "5000.0 GB", "4656.6G"),  # GB and G are the largest units
    ],
)
def test_byte_sizes(n: int, decimal: str, binary: str) -> None:
    assert human_bytes(n) == decimal
    assert short_bytes(n) == binary

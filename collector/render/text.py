"""Text that fits: clipped cells and lines, a width shared among columns, sizes in bytes.

Said once for every table, tree and progress line the CLI prints. Widths count code points
(what ``len`` counts); nothing here knows about colours or the terminal.
"""

from __future__ import annotations

from collections.abc import Sequence

#: What a clipped text ends with.
ELLIPSIS = "…"


def clip(text: str, width: int, marker: str = ELLIPSIS) -> str:
    """``text`` cut to ``width`` characters, ending in ``marker`` when something was cut."""
    if len(text) <= width:
        return text
    return text[: max(0, width - len(marker))] + marker


def clip_parts(
    parts: Sequence[str], width: int, marker: str = ELLIPSIS
) -> tuple[list[str], bool]:
    """The pieces of one line (runs of one style each) cut together like :func:`clip`.

    Returns what remains of the pieces (the last one kept may be shortened) and whether
    anything was cut; when it was, the caller writes ``marker`` after them, so that the line
    keeps the styles of its pieces and still fits ``width``.
    """
    if sum(len(p) for p in parts) <= width:
        return list(parts), False
    room = max(0, width - len(marker))
    kept: list[str] = []
    for part in parts:
        if room <= 0:
            break
        kept.append(part[:room])
        room -= len(kept[-1])
    return kept, True


def fit_widths(
    natural: Sequence[int], minimum: Sequence[int], shrink_order: Sequence[int], width: int
) -> list[int]:
    """Column widths that fit ``width`` (2 spaces between columns): shrink the columns named
    in ``shrink_order`` one after the other, each down to its minimum, until the row fits."""
    widths = list(natural)
    excess = sum(widths) + 2 * (len(widths) - 1) - width
    for col in shrink_order:
        if excess <= 0:
            break
        cut = min(excess, max(0, widths[col] - minimum[col]))
        widths[col] -= cut
        excess -= cut
    return widths


def human_bytes(n: int) -> str:
    """Decimal units, one decimal: ``512 B``, ``15.8 kB``, ``3.2 MB``, ``1.0 GB``, ``1200.0 GB``."""
    return _scaled(n, 1000, ("B", "kB", "MB", "GB"), " ")


def short_bytes(n: int) -> str:
    """Binary units as one letter, no space: ``512B``, ``15.4K``, ``3.1M``, ``1117.6G``.

    Short enough for a table column (``hosts --check``).
    """
    return _scaled(n, 1024, ("B", "K", "M", "G"), "")


def _scaled(n: int, base: int, units: Sequence[str], sep: str) -> str:
    """``n`` bytes in the largest unit below ``base`` of the next one (the last unit at most)."""
    size: float = n
    for k, unit in enumerate(units):
        if size < base or k == len(units) - 1:
            return f"{size:.0f}{sep}{unit}" if k == 0 else f"{size:.1f}{sep}{unit}"
        size /= base
    raise ValueError("no units")

"""The demo fleet's real output, kept in tests/golden/ and compared byte for byte; and every
example in README.md, run and compared with what it shows.

``pytest --update-golden`` rewrites the golden files (review the diff before committing it).
A README example that no longer matches is a failure: the README shows real output.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path

import pytest
from support import DEMO, run

GOLDEN = Path(__file__).parent / "golden"
README = Path(__file__).resolve().parent.parent / "README.md"
INV = "collector/demo/inventory.toml"
MULTI = "<multi_split.20261129173200@lab.example.test>"
UNKNOWN = "<unknown_user.20261129173200@lab.example.test>"

#: name -> command line (after ``collector``); -i is the demo inventory.
CASES: dict[str, list[str]] = {
    "search-table.txt": ["search", "-i", INV, "--to", "bob@example.test"],
    "search-rejected.txt": ["search", "-i", INV, "--status", "rejected"],
    "search-json.json": ["search", "-i", INV, "--from", "alice@example.test", "-f", "json"],
    "search-ndjson.ndjson": ["search", "-i", INV, "--client", "ws1.example.test", "-f", "ndjson"],
    "search-csv.csv": ["search", "-i", INV, "--to", "carol@example.test", "-f", "csv"],
    "search-window.ndjson": ["search", "-i", INV, "--since", "2026-11-29T17:33", "-f", "ndjson"],
    "summary-table.txt": ["summary", "-i", INV],
    "summary-json.json": ["summary", "-i", INV, "-f", "json"],
    "summary-csv.csv": ["summary", "-i", INV, "-f", "csv"],
    "hosts-table.txt": ["hosts", "-i", INV],
    "hosts-check.txt": ["hosts", "--check", "-i", INV],
    "hosts-check.json": ["hosts", "--check", "-i", INV, "-f", "json"],
    "trace-text.txt": ["trace", "-i", INV, UNKNOWN],
    "trace-table.txt": ["trace", "-i", INV, MULTI, "-f", "table"],
    "trace-json.json": ["trace", "-i", INV, MULTI, "-f", "json"],
    "trace-csv.csv": ["trace", "-i", INV, "--from", "alice@example.test", "-f", "csv"],
    "trace-dot.dot": ["trace", "-i", INV, MULTI, "-f", "dot"],
    "trace-mermaid.mmd": ["trace", "-i", INV, MULTI, "-f", "mermaid"],
    "demo.txt": ["demo"],
}


def output(args: list[str]) -> str:
    """stdout, then stderr and the exit code: all of it is the contract. The demo fleet's
    absolute location (it differs per checkout) is written as collector/demo."""
    args = [str(DEMO / "inventory.toml") if a == INV else a for a in args]
    result = run(*args)
    text = f"{result.stdout}--- stderr\n{result.stderr}--- exit {result.exit_code}\n"
    if str(DEMO) in text:
        # the table's columns are as wide as this checkout's path: compare them without it
        text = re.sub(r" {2,}", "  ", re.sub(r"-{2,}", "--", text.replace(str(DEMO), "<demo>")))
    return text


def diff(expected: str, got: str, name: str) -> str:
    return "".join(difflib.unified_diff(expected.splitlines(True), got.splitlines(True),
                                        f"golden/{name}", "real output"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name: str, update_golden: bool) -> None:
    got = output(CASES[name])
    path = GOLDEN / name
    if update_golden:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(got, encoding="utf-8")
        return
    assert path.is_file(), f"no golden file {name}: run pytest --update-golden"
    expected = path.read_text(encoding="utf-8")
    assert got == expected, diff(expected, got, name)


def test_every_golden_file_has_its_case() -> None:
    assert sorted(p.name for p in GOLDEN.iterdir()) == sorted(CASES)


# --------------------------------------------------------------------------- README


def readme_blocks() -> list[tuple[str, str]]:
    """(language, text) of every fenced block of README.md, in order."""
    blocks: list[tuple[str, str]] = []
    fence: str | None = None
    lines: list[str] = []
    for line in README.read_text(encoding="utf-8").splitlines(keepends=True):
        if fence is None and line.startswith("```"):
            fence, lines = line[3:].strip(), []
        elif fence is not None and line.rstrip() == "```":
            blocks.append((fence, "".join(lines)))
            fence = None
        elif fence is not None:
            lines.append(line)
    return blocks


def readme_examples() -> list[tuple[str, str]]:
    """(command line, shown output) of every ``$ collector ...`` example block."""
    out = []
    for lang, block in readme_blocks():
        first, _, rest = block.partition("\n")
        if lang == "" and first.startswith("$ collector "):
            out.append((first[2:], rest))
    return out


def test_the_readme_has_examples() -> None:
    assert len(readme_examples()) >= 3


@pytest.mark.parametrize("line,shown", readme_examples(), ids=lambda v: v[:60])
def test_readme_example_is_the_real_output(line: str, shown: str) -> None:
    import shlex

    root = README.parent
    # `... 2>&1`: the example shows stderr too (after stdout), and may be a partial answer
    both = line.endswith(" 2>&1")
    line = line.removesuffix(" 2>&1")
    words = [str(DEMO / "inventory.toml") if w == INV else w for w in shlex.split(line)[1:]]
    # paths in the examples are relative to the repository
    words = [str(root / w) if "/" in w and (root / w).exists() else w for w in words]
    result = run(*words)
    assert result.exit_code in ((0, 1, 3) if both else (0, 1)), result.stderr
    real = result.stdout + result.stderr if both else result.stdout
    assert real == shown, diff(shown, real, "README.md")


def readme_json(after: str) -> object:
    """The first ```json block after the line that contains ``after``."""
    text = README.read_text(encoding="utf-8")
    start = text.index(after)
    block = re.search(r"^```json\n(.*?)^```", text[start:], flags=re.S | re.M)
    assert block is not None
    return json.loads(block.group(1))


def excerpt_of(shown: object, real: object) -> bool:
    """``shown`` is a true excerpt of ``real``: every key it shows has the real value (itself
    an excerpt), every list item it shows is (an excerpt of) a real item; nothing invented."""
    if isinstance(shown, dict):
        return isinstance(real, dict) and all(
            k in real and excerpt_of(v, real[k]) for k, v in shown.items()
        )
    if isinstance(shown, list):
        return isinstance(real, list) and all(
            any(excerpt_of(item, r) for r in real) for item in shown
        )
    return shown == real


def test_readme_search_json_is_real() -> None:
    # The README shows one result and one host of the first example's JSON.
    shown = readme_json("JSON (`--format json`) is one object")
    assert isinstance(shown, dict)
    words = ["search", "-i", str(DEMO / "inventory.toml"), "--to", "bob@example.test",
             "--from", "alice@example.test", "-f", "json"]
    real = json.loads(run(*words).stdout)
    assert list(shown) == list(real)
    for item in shown["results"]:
        assert item in real["results"]  # a result is shown whole
    for host in shown["hosts"]:
        assert excerpt_of([host], real["hosts"]), json.dumps(host)


def test_readme_trace_json_is_real() -> None:
    shown = readme_json("`--format json` writes `{\"traces\": [...], \"hosts\": [...]}`")
    assert isinstance(shown, dict)
    words = ["trace", "-i", str(DEMO / "inventory.toml"), str(shown["message_id"]), "-f", "json"]
    real = json.loads(run(*words).stdout)["traces"][0]
    for key, value in shown.items():
        assert excerpt_of(value, real.get(key)), key

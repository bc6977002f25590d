"""What the screen is, decided once per command: width, colour, progress, whether a person reads.

stdout carries data, stderr diagnostics and progress; each is looked at on its own (``search |
jq`` still shows progress on the terminal's stderr, and no colour in the pipe).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO

MIN_WIDTH = 60
PIPE_WIDTH = 100  # tables written into a pipe or a file


@dataclass(frozen=True, slots=True)
class Terminal:
    width: int  # columns a table may take on stdout
    color: bool  # colour on stdout
    progress: bool  # a progress display on stderr

    @classmethod
    def detect(
        cls,
        environ: Mapping[str, str] = os.environ,
        stdout: IO[str] | None = None,
        stderr: IO[str] | None = None,
    ) -> Terminal:
        out = stdout if stdout is not None else sys.stdout
        err = stderr if stderr is not None else sys.stderr
        dumb = environ.get("TERM") == "dumb"
        return cls(
            width=_width(environ, out),
            color=_isatty(out) and not dumb and "NO_COLOR" not in environ,
            progress=_isatty(err) and not dumb,
        )


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def _width(environ: Mapping[str, str], out: IO[str]) -> int:
    try:
        return max(MIN_WIDTH, int(environ.get("COLUMNS", "")))
    except ValueError:
        pass
    if _isatty(out):
        try:
            return max(MIN_WIDTH, os.get_terminal_size(out.fileno()).columns)
        except (OSError, ValueError):
            pass
    return PIPE_WIDTH

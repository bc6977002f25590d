"""Errors that stop a whole run; the CLI turns each into one line and an exit code.

Per-host failures are data (``models.HostError`` in a ``HostResult``); ``TransportError`` is
what transport code raises internally before the fleet runner turns it into that data.
"""

from __future__ import annotations

from collector.models import HostError, Stage


class CollectorError(Exception):
    """Base of every error the CLI reports without a traceback."""


class InventoryError(CollectorError):
    """The inventory cannot be found, read or validated (exit code 2).

    ``section`` says where in the file (``host mx1``, ``[defaults]``, ``[groups.inbound]``);
    ``host`` is the host's name when the problem belongs to one host.
    """

    def __init__(
        self,
        path: str | None,
        problem: str,
        *,
        line: int | None = None,
        column: int | None = None,
        section: str | None = None,
        key: str | None = None,
        host: str | None = None,
    ) -> None:
        self.path = path
        self.problem = problem
        self.line = line
        self.column = column
        self.section = section
        self.key = key
        self.host = host
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.path or ""
        if self.path is not None and self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        parts = [p for p in (where, self.section, self.problem) if p]
        return ": ".join(parts)


class UsageError(CollectorError):
    """A bad command-line value, e.g. an unreadable ``--since`` (exit code 2)."""

    def __init__(self, message: str, *, option: str | None = None) -> None:
        self.message = message
        self.option = option
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.option}: {self.message}" if self.option else self.message


class TransportError(CollectorError):
    """A failure talking to one host, tagged with the stage it happened in.

    ``message`` is in a person's words and never quotes a script; ``command`` is the command
    line that failed (for ``--debug``), ``exit_code`` its exit status when it ran to its end
    (None: it timed out, could not start, or the connection was lost).
    """

    def __init__(
        self,
        host: str,
        stage: Stage,
        message: str,
        *,
        exit_code: int | None = None,
        command: str | None = None,
    ) -> None:
        self.host = host
        self.stage = stage
        self.message = message
        self.exit_code = exit_code
        self.command = command
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.host}: {self.stage}: {self.message}"

    def to_host_error(self) -> HostError:
        return HostError(self.host, self.stage, self.message)

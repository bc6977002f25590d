"""How every command reports problems and chooses its exit code: said once, so that search,
summary, trace, fetch and hosts report the same problem the same way.

stderr gets one line per problem: ``collector: HOST: STAGE: message`` for a host that failed,
``collector: HOST: read: <source>`` for a log a host could not read to its end. Either makes
the run partial (exit 3) unless no host answered at all (exit 2). ``collector: HOST:
coverage: <range>`` says a part of the time window asked that the host's logs do not hold
(they start later, a rotation is missing): "nothing matched" is then not proven, and exit 3
(inconclusive) replaces exit 1 (absent); rows found keep exit 0. Those lines carry what a
server said (its stderr, its SSH banner, its file names): each is shown through
``render.safe.printable``, so no control or bidi character reaches the terminal raw and a
line is always one line.
"""

from __future__ import annotations

import enum
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

import typer

from collector.errors import CollectorError, TransportError
from collector.models import Coverage, Hole, HostResult, Proof, Unread
from collector.render.safe import printable
from collector.search.fleet import InternalError


class ExitCode(enum.IntEnum):
    """The process exit codes (a contract: scripts rely on them)."""

    FOUND = 0
    NO_MATCH = 1
    ERROR = 2  # usage or configuration error, no host answered, or an internal error
    PARTIAL = 3  # some hosts failed or could not read every log; the others' results stand


def err(message: str) -> None:
    """One diagnostic line on stderr, ``message`` shown escaped (``render.safe.printable``).

    Every stderr line collector writes goes through here. A caller that cut an escaped text
    to a length passes it as ``render.safe.Escaped`` (it is not escaped twice).
    """
    typer.echo(f"collector: {printable(message)}", err=True)


@contextmanager
def errors(debug: bool) -> Iterator[None]:
    """Turn errors into one line on stderr and exit code 2 (tracebacks only with --debug)."""
    try:
        yield
    except typer.Exit:
        raise
    except CollectorError as exc:
        if debug:
            raise
        err(str(exc))
        raise typer.Exit(ExitCode.ERROR) from None
    except KeyboardInterrupt:
        err("interrupted")
        raise typer.Exit(130) from None
    except BrokenPipeError:
        # `collector search ... | head`: the reader has what it wanted (rows were being
        # written); stop quietly, and keep Python from complaining about stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise typer.Exit(ExitCode.FOUND) from None
    except InternalError as exc:
        if debug:
            # a traceback may quote a server's text: each of its lines shown escaped
            sys.stderr.writelines(printable(line) + "\n" for line in exc.details.splitlines())
        err(f"internal error on {exc.host}: {exc.summary}" + _DEBUG_HINT * (not debug))
        raise typer.Exit(ExitCode.ERROR) from None
    except OSError as exc:  # this machine's side: an unwritable --dest, a full disk
        if debug:
            raise
        err(exc.strerror and exc.filename and f"{exc.filename}: {exc.strerror}" or str(exc))
        raise typer.Exit(ExitCode.ERROR) from None
    except Exception as exc:
        if debug:
            raise
        err(f"internal error: {type(exc).__name__}: {exc}{_DEBUG_HINT}")
        raise typer.Exit(ExitCode.ERROR) from None


_DEBUG_HINT = " (a bug in collector; run with --debug for the traceback)"


def unread_of(value: object) -> tuple[Unread, ...]:
    """The sources a host's answer could not read to their end (every result type has them)."""
    return tuple(getattr(value, "unread", ()))


def coverage_of(value: object) -> Coverage | None:
    """What of the window a host's answer saw (search, trace, fetch and summary answers)."""
    coverage = getattr(value, "coverage", None)
    if coverage is None and (search := getattr(value, "search", None)) is not None:
        coverage = getattr(search, "coverage", None)
    return coverage if isinstance(coverage, Coverage) else None


def verdict(results: Sequence[HostResult[Any]], found: bool) -> Proof:
    """``found``; ``absent``: nothing matched and every host answered, read every log to its
    end and holds the whole window; else ``inconclusive`` (which host, which range: stderr)."""
    if found:
        return Proof.FOUND
    for r in results:
        if not r.ok or unread_of(r.value):
            return Proof.INCONCLUSIVE
        coverage = coverage_of(r.value)
        if coverage is not None and not coverage.complete:
            return Proof.INCONCLUSIVE
    return Proof.ABSENT


def report_problems(
    results: Sequence[HostResult[Any]],
    exceptions: Mapping[str, BaseException] | None = None,
) -> None:
    """One stderr line per failed host and per unread source, in inventory order.

    ``exceptions`` (under ``--debug``) adds the command that failed, where there was one.
    Messages, paths and commands carry a server's text: ``err`` shows them escaped.
    """
    for r in results:
        if r.error is not None:
            err(f"{r.error.host}: {r.error.where}: {r.error.message}")
            exc = (exceptions or {}).get(r.host)
            if isinstance(exc, TransportError) and exc.command:
                err(f"{r.host}: the command was: {exc.command}")
        for unread in unread_of(r.value):
            err(f"{r.host}: read: {unread}")
        coverage = coverage_of(r.value)
        for hole in coverage.uncovered if coverage is not None else ():
            if hole.why is not Hole.UNREAD:  # said above, as a read problem
                err(f"{r.host}: coverage: {hole}")


def exit_code(results: Sequence[HostResult[Any]], found: bool) -> ExitCode:
    failed = sum(1 for r in results if not r.ok)
    if results and failed == len(results):
        return ExitCode.ERROR
    if failed or any(unread_of(r.value) for r in results):
        return ExitCode.PARTIAL
    if found:
        return ExitCode.FOUND
    return ExitCode.NO_MATCH if verdict(results, found) is Proof.ABSENT else ExitCode.PARTIAL


def finish(
    results: Sequence[HostResult[Any]],
    found: bool,
    exceptions: Mapping[str, BaseException] | None = None,
) -> NoReturn:
    """Report every host's problems and exit with the code they make."""
    report_problems(results, exceptions)
    code = exit_code(results, found)
    if code is ExitCode.PARTIAL and not found:
        err("nothing matched in what was read, but not all of it could be: inconclusive")
    raise typer.Exit(code)

"""How every dbctl command reports a problem it cannot get past: one convention for all of them.

- `errors(as_json)` wraps a command's work: a `DbctlError` (every domain error of dbctl is one) or a
  `psycopg.Error` becomes one `error: …` line per problem on stderr, or with `--json` one JSON object on
  stdout, and exit status 2. Never a traceback, never a secret (messages are built to hold none).
- Exit status: 0 done, 1 the command ran and found a problem it reports (`preflight`'s failed checks,
  `local restore-test`'s failed restore), 2 the command could not do its work.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import click
import psycopg

from dbctl.core.errors import DbctlError, one_line

EXIT_ERROR = 2


def database_error(exc: psycopg.Error) -> str:
    """A psycopg error as one line: the server's primary message (never our secrets), or libpq's."""
    if exc.sqlstate:
        primary = exc.diag.message_primary or str(exc).splitlines()[0]
        return f"database error ({type(exc).__name__}, SQLSTATE {exc.sqlstate}): {primary}"
    return one_line(exc)


def fail(message: str, as_json: bool = False) -> NoReturn:
    """One `error: …` line per problem (a message may list several), or one JSON object; exit 2."""
    lines = [line for line in message.splitlines() if line.strip()] or ["unknown error"]
    if as_json:
        click.echo(json.dumps({"ok": False, "error": "; ".join(lines), "errors": lines}))
    else:
        for line in lines:
            click.echo(f"error: {line}", err=True)
    sys.exit(EXIT_ERROR)


@contextmanager
def errors(as_json: bool = False) -> Iterator[None]:
    """Run a command's work; a DbctlError or psycopg.Error becomes `fail(...)`."""
    try:
        yield
    except DbctlError as exc:
        fail(str(exc), as_json)
    except psycopg.Error as exc:
        fail(database_error(exc), as_json)

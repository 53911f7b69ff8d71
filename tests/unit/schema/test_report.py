"""dbctl.schema.report's pure parts (literal redaction, failed sections) and report_text's human tables."""

from __future__ import annotations

import json

import boto3
import pytest
from click.testing import CliRunner
from moto import mock_aws
from psycopg.conninfo import conninfo_to_dict

from dbctl.aws import stack
from dbctl.cli.main import cli
from dbctl.core import names
from dbctl.schema.report import SECTIONS, UNSCANNABLE, failed_sections, nothing_read, redact_literals
from dbctl.schema.report_text import render, table
from tests.unit.aws.test_stack import outputs


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("SELECT * FROM t WHERE a = $1 AND b = $2", "SELECT * FROM t WHERE a = $1 AND b = $2"),
        ("SET application_name = 'alice@example.com'", "SET application_name = ?"),
        ("SELECT E'it\\'s', 'it''s', U&'d\\0061t', x'1F' FROM t", "SELECT ?, ?, ?, ? FROM t"),
        ("DO $body$ BEGIN PERFORM 'secret'; END $body$", "DO ?"),
        ("SELECT $$dollar secret$$, 42, 3.14, .5e3, 1e-9", "SELECT ?, ?, ?, ?, ?"),
        (
            'SELECT "col1", "a ""quoted"" 9" FROM "t2" -- note 5',
            'SELECT "col1", "a ""quoted"" 9" FROM "t2"',
        ),
        ("SELECT /* user 7 */ c1, t2.c3 FROM t2 LIMIT 10", "SELECT c1, t2.c3 FROM t2 LIMIT ?"),
        ("ALTER ROLE \"x\" PASSWORD 'SCRAM-SHA-256$4096:c2FsdA==$a:b'", 'ALTER ROLE "x" PASSWORD ?'),
        # A text PostgreSQL's lexer rejects is not shown at all (a guess could show the rest of a string).
        ("SELECT 'unterminated", UNSCANNABLE),
        ("SELECT $$unterminated", UNSCANNABLE),
        # Issue 25, item 5: with standard_conforming_strings on, 'C:\' is a whole string; the regex took \'
        # as an escape, ran on to the next quote and showed the literal after it.
        (
            "CREATE TABLE t (dir text DEFAULT 'C:\\', token text DEFAULT 'hunter2SecretToken')",
            "CREATE TABLE t (dir text DEFAULT ?, token text DEFAULT ?)",
        ),
        ("SELECT 'a\\', 'hunter2', 'b'", "SELECT ?, ?, ?"),
        ("SELECT E'C:\\\\', E'it\\'s hunter2', 'x'", "SELECT ?, ?, ?"),
        ("SELECT $$ it's 'hunter2' $$, $x$ $$ hunter2 $x$, $x$a$x$", "SELECT ?, ?, ?"),
        ("SELECT $tag$ $notag$ hunter2 $tag$ AS c", "SELECT ? AS c"),
        (
            "SELECT U&'d!0061t hunter2' UESCAPE '!', U&\"d!0061t\" UESCAPE '!'",
            'SELECT ? UESCAPE ?, U&"d!0061t" UESCAPE ?',
        ),
        ("SELECT b'1010', B'1', X'FF', 0x1F, 1_000, -2.5", "SELECT ?, ?, ?, ?, ?, -?"),
        ("SELECT 'é hunter2' AS \"Ünïcode\" /* 'hunter2' */", 'SELECT ? AS "Ünïcode"'),
    ],
)
def test_redact_literals(text: str, redacted: str) -> None:
    assert redact_literals(text) == redacted
    assert "hunter2" not in redact_literals(text)


def test_table_aligns_columns_under_a_rule() -> None:
    out = table([{"name": "a", "n": 1}, {"name": "longer", "n": 22.5}])
    assert out.splitlines() == ["name    n", "------  ----", "a       1", "longer  22.5"]
    assert table([]) == "(none)"
    long = table([{"query": "SELECT " + "x, " * 100}])
    assert max(len(line) for line in long.splitlines()) == 80 and long.endswith("…")


def test_control_characters_are_escaped_and_wide_characters_aligned() -> None:
    """Issue 25, "Also": a table named "line\nbreak" broke the text table, and wide characters misaligned
    it (len() counts a CJK character as one column; a terminal shows two)."""
    out = table(
        [{"table": "line\nbreak", "n": 1}, {"table": "日本語", "n": 2}, {"table": "e\u0301\x1b[2J", "n": 3}]
    )
    lines = out.splitlines()
    assert len(lines) == 5  # header, rule and one line per row
    assert lines[2] == "line\\nbreak  1"
    assert lines[3] == "日本語       2"  # 6 columns of text, padded to the 11 of "line\\nbreak"
    assert lines[4] == "e\u0301\\x1b[2J     3"  # the combining accent takes no column, ESC is shown
    assert "\x1b" not in out
    assert table([{"t": "語" * 60}]).splitlines()[2] == "語" * 39 + "…"  # 79 columns + the ellipsis: 80


def test_nothing_read_only_when_every_database_section_failed() -> None:
    """Issue 25, item 6: without pg_monitor the whole report was one error line; each section now carries
    its own error, and the report fails only when no section could be read."""
    report: dict[str, object] = {key: [] for key in SECTIONS}
    report["bloat"] = {"error": "permission denied for function pgstattuple_approx"}
    assert failed_sections(report) == ["bloat"] and not nothing_read(report)
    assert "== bloat ==\nerror: permission denied for function pgstattuple_approx" in render(report)
    everything: dict[str, object] = {key: {"error": "permission denied"} for key in SECTIONS}
    everything["pgbouncer_pools"] = {"reachable": False, "pools": [], "note": "no PgBouncer given"}
    assert nothing_read(everything)


def test_render_titles_every_section_in_order() -> None:
    report: dict[str, object] = {key: [] for key in SECTIONS}
    report["bloat"] = {"method": "m", "tables": [], "indexes": []}
    out = render(report)
    assert [line for line in out.splitlines() if line.startswith("==")] == [f"== {k} ==" for k in SECTIONS]
    assert "method: m" in out


def test_stack_connects_as_spike_monitor_from_its_own_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """--stack: as far as it can be tried here (moto for Secrets Manager, fake outputs, no Pulumi CLI)."""
    with mock_aws():
        client = boto3.client("secretsmanager", region_name="eu-west-1")
        arns = {
            role: client.create_secret(
                Name=role, SecretString=json.dumps({"username": role, "password": f"pw {role}"})
            )["ARN"]
            for role in names.LOGIN_ROLES
        }
        monkeypatch.setattr(stack, "read_outputs", lambda name: outputs(role_secret_arns=arns))
        url = conninfo_to_dict(stack.monitor_url("prod", via="localhost:15432"))
    assert (url["user"], url["password"]) == (names.MONITOR_ROLE, f"pw {names.MONITOR_ROLE}")
    assert (url["hostaddr"], url["port"], url["sslmode"]) == ("127.0.0.1", "15432", "verify-full")
    assert str(url["host"]).endswith(".rds.amazonaws.com")


def test_stack_without_pulumi_is_one_line() -> None:
    result = CliRunner().invoke(cli, ["report", "--stack", "nope"])
    assert result.exit_code == 2
    assert result.output.startswith("error: cannot read the outputs of stack 'nope'")
    assert len(result.output.strip().splitlines()) == 1

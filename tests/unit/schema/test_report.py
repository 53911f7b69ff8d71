"""dbctl.schema.report's pure parts: literal redaction and the human tables."""

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
from dbctl.schema.report import SECTIONS, redact_literals, render, table
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
        ("SELECT 'unterminated", "SELECT ?"),
    ],
)
def test_redact_literals(text: str, redacted: str) -> None:
    assert redact_literals(text) == redacted


def test_table_aligns_columns_under_a_rule() -> None:
    out = table([{"name": "a", "n": 1}, {"name": "longer", "n": 22.5}])
    assert out.splitlines() == ["name    n", "------  ----", "a       1", "longer  22.5"]
    assert table([]) == "(none)"
    long = table([{"query": "SELECT " + "x, " * 100}])
    assert max(len(line) for line in long.splitlines()) == 80 and long.endswith("…")


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

"""dbctl.report's pure parts: literal redaction and the human tables."""

from __future__ import annotations

import pytest

from dbctl.report import SECTIONS, redact_literals, render, table


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


def test_render_titles_every_section_in_order() -> None:
    report: dict[str, object] = {key: [] for key in SECTIONS}
    report["bloat"] = {"method": "m", "tables": [], "indexes": []}
    out = render(report)
    assert [line for line in out.splitlines() if line.startswith("==")] == [f"== {k} ==" for k in SECTIONS]
    assert "method: m" in out

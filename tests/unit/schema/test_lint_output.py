"""How lint findings reach a reviewer: text, GitHub annotations and the job summary (dbctl/schema/lint.py)."""

from __future__ import annotations

from dbctl.schema import lint

FINDING = lint.Finding(
    "20261201000000_a", "sql/migrations/20261201000000_a/migration.sql", 2, "rule-x", "risk: 100%", "do, this"
)


def test_an_annotation_lands_on_the_files_line_with_github_escaping() -> None:
    weird = lint.Finding("m", "dir,x:y/migration.sql", 7, "r", "line one\nline two", "50% safer")
    report = lint.LintReport(squawk="squawk", checked=["m"], findings=[FINDING, weird])
    assert lint.github_annotations(report) == [
        "::error file=sql/migrations/20261201000000_a/migration.sql,line=2,title=rule-x::"
        "risk: 100%25. Safe rewrite: do, this",
        "::error file=dir%2Cx%3Ay/migration.sql,line=7,title=r::"
        "line one%0Aline two. Safe rewrite: 50%25 safer",
    ]


def test_the_summary_is_a_table_of_findings_then_the_accepted_ones() -> None:
    report = lint.LintReport(
        squawk="squawk",
        checked=["a", "b"],
        findings=[FINDING],
        accepted=[lint.Accepted("b", 3, "ban-drop-column", "the app stopped reading it | in v2")],
    )
    assert lint.summary(report).splitlines() == [
        "## Migration lint (squawk)",
        "",
        "| migration | line | rule | risk | safe rewrite |",
        "| --- | --- | --- | --- | --- |",
        "| 20261201000000_a | 2 | rule-x | risk: 100% | do, this |",
        "",
        "Accepted in the migration files:",
        "",
        "- b line 3: ban-drop-column: the app stopped reading it \\| in v2",
    ]
    clean = lint.LintReport(squawk="squawk", checked=["a"])
    assert "1 migration(s) checked: no findings." in lint.summary(clean)
    assert clean.as_dict()["clean"] is True


def test_a_finding_as_text_names_file_line_rule_risk_and_rewrite() -> None:
    assert FINDING.text() == (
        "sql/migrations/20261201000000_a/migration.sql:2: rule-x: risk: 100%\n    safe rewrite: do, this"
    )

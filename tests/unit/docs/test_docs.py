"""The docs name only what exists: each command, flag, setting, stack output, Python name and repository path
that README.md or docs/*.md puts in backticks is checked against the code (check.py says which token is
which; truth.py reads what exists from the code), and each link between the pages leads somewhere."""

from __future__ import annotations

import pytest

from tests.unit.docs.check import Page, check, docs, token_problems
from tests.unit.docs.truth import ROOT, is_ignored, truth


def test_every_name_and_link_in_the_docs_exists() -> None:
    t = truth()
    findings = [
        finding
        for path in docs()
        for finding in check(
            path.relative_to(ROOT).as_posix(), path.read_text(encoding="utf-8"), t, path.parent
        )
    ]
    assert not findings, "the docs name what does not exist:\n" + "\n".join(map(str, findings))


def test_the_truth_is_read_from_the_code() -> None:
    """The check is only as good as what it compares with: each source gives what the docs lean on."""
    t = truth()
    assert "--no-replica" in t.commands[("local", "up")].flags
    assert "--rolled-back" in t.commands[("migrate", "resolve")].flags
    assert "--kill-after" in t.commands[("local", "rotate")].flags  # a hidden option counts
    assert t.commands[("local", "psql")].passes_unknown_options
    assert {"local", "test", "fetch-pgbouncer"} <= t.dev_commands
    assert {"pgbouncer.defaultPoolSize", "multiAz", "aws:region", "rotation.scheduleDays"} <= t.settings
    assert {"rotation_function_arn", "primary_port", "pgbouncer_ca_certificate"} <= t.outputs
    assert "--compare-settings" in t.scripts["bench/pgbouncer.py"]
    assert "--reload-unit" in t.scripts["hosts/pgbouncer_authfile.py"]
    assert "storageEncrypted" in t.policy_inputs
    assert is_ignored(".local/tls/ca.crt", t.ignored)
    assert not is_ignored("dbctl/core/names.py", t.ignored)


BOGUS_DOC = """\
# A page with mistakes

Run `./dev local up --bogus-flag` or `dbctl migrate --stack prod --no-such-option`, then `dbctl locl up`.
Also `python -m dbctl local status`, `up --replica-port N --frobnicate`, alone `--not-a-flag`.
Set `pgbouncer.defaultPoolSise` and `alarms.*Percent` and `multiAZ`; read `primary_endpoint` and
`replica_endpoint`. See `dbctl/local.py`, `components/settings.py`, `dbctl/core/names.py`,
`tests/integration/postgres/test_{cluster,nope}.py`, `.local/tls/ca.crt`, `Pulumi.<stack>.yaml` and `nope.py`.
Code: `dbctl.pgbouncer.config.render_ini`, `dbctl.pgbouncer.config.render_nothing`, `dbctl.nowhere.x`.

```bash
.venv/bin/python -m dbctl migrate --credentials creds.json --dry-runn   # a typo
REGION=$(pulumi stack output regoin -s $S)
.venv/bin/python bench/pgbouncer.py --rounds 3 --quik
./dev test -x tests/unit   # pytest's arguments
```

Links: [ok](operations.md#runbook), [gone](nowhere.md), [no heading](operations.md#no-such-thing),
[here](#a-page-with-mistakes), [not here](#nothing).
"""


def test_the_check_reports_each_mistake_with_its_doc_line_and_token() -> None:
    findings = check("docs/bogus.md", BOGUS_DOC, truth(), ROOT / "docs")
    assert {(f.line, f.token) for f in findings} == {
        (3, "./dev local up --bogus-flag"),
        (3, "dbctl migrate --stack prod --no-such-option"),
        (3, "dbctl locl up"),
        (4, "up --replica-port N --frobnicate"),
        (4, "--not-a-flag"),
        (5, "pgbouncer.defaultPoolSise"),
        (5, "multiAZ"),
        (6, "replica_endpoint"),
        (6, "dbctl/local.py"),
        (6, "components/settings.py"),
        (7, "tests/integration/postgres/test_{cluster,nope}.py"),
        (7, "nope.py"),
        (8, "dbctl.pgbouncer.config.render_nothing"),
        (8, "dbctl.nowhere.x"),
        (11, ".venv/bin/python -m dbctl migrate --credentials creds.json --dry-runn   # a typo"),
        (12, "REGION=$(pulumi stack output regoin -s $S)"),
        (13, ".venv/bin/python bench/pgbouncer.py --rounds 3 --quik"),
        (17, "nowhere.md"),
        (17, "operations.md#no-such-thing"),
        (18, "#nothing"),
    }, "\n".join(map(str, findings))
    text = "\n".join(map(str, findings))
    assert (
        "docs/bogus.md:3: `./dev local up --bogus-flag`: `dbctl local up` has no option --bogus-flag" in text
    )
    assert "`dbctl` has no command 'locl'" in text
    assert "no setting pgbouncer.defaultPoolSise" in text
    assert "no stack output regoin" in text
    assert "no tests/integration/postgres/test_nope.py in the repository" in text


@pytest.mark.parametrize(
    ("token", "kind"),
    [
        ("./dev local rotate [--role app|readonly|monitor]", "a command with its choices"),
        ("reset --yes --postgres-major N", "a fragment of a dbctl command"),
        ("migrate dev --create-only", "another tool's command"),
        ("pgbouncer.ini", "a file made at run time"),
        ("network.flowLogTraffic: ALL", "a setting with a value"),
        ("max_client_conn", "a PgBouncer setting, not an output"),
        ("sql/migrations/<14-digit timestamp>_<name>/migration.sql", "a placeholder"),
        ("/var/log/spike-pgbouncer-bootstrap.log", "the system's path"),
        ("0.0.0.0/0", "an address range"),
        ("npx prisma migrate dev --create-only --name <change> --config prisma/prisma.config.ts", "foreign"),
    ],
)
def test_what_exists_is_not_reported(token: str, kind: str) -> None:
    assert token_problems(token, truth()) == [], kind


def test_anchors_are_github_s() -> None:
    page = Page.read(
        "# Top\n## `dbctl report`: the seed's queries\n```bash\n# a comment\n```\n## Top\n### x_y [l](a.md)\n"
    )
    assert page.anchors() == {"top", "dbctl-report-the-seeds-queries", "top-1", "x_y-l"}

"""`dbctl preflight --stack NAME`: options and output around dbctl/aws/preflight.py's `preflight`.

It reads `Pulumi.<stack>.yaml` (the validation `pulumi up` runs, without the Pulumi CLI) and asks AWS the
read-only questions; this prints one line per check. Exit 0 when nothing failed (skipped checks do not
apply to the stack), 1 when a check failed, 2 when preflight could not start.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import click

from dbctl.aws import preflight
from dbctl.cli.errors import errors

EXIT_FAILED = 1


@click.command("preflight")
@click.option("--stack", "stack_name", required=True, help="The stack whose Pulumi.<stack>.yaml to check.")
@click.option("--region", help="Check this region instead of the stack file's aws:region.")
@click.option(
    "--deploy-role",
    envvar="AWS_DEPLOY_ROLE_ARN",
    show_envvar=True,
    help="The deploy role (ARN or name) whose MaxSessionDuration must cover the deploy workflow's.",
)
@click.option("--profile", help="AWS profile (default: the usual credential chain).")
@click.option(
    "--project-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=preflight.REPO_ROOT,
    show_default=True,
    help="Where Pulumi.<stack>.yaml and .github/workflows/deploy-stack.yml are.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout, for machines.")
def preflight_command(
    stack_name: str,
    region: str | None,
    deploy_role: str | None,
    profile: str | None,
    project_dir: Path,
    as_json: bool,
) -> None:
    """Ask the AWS account what a first `pulumi up` would hit (read-only calls only)."""
    with errors(as_json):
        outcome = preflight.preflight(
            stack_name,
            project_dir,
            region=region,
            deploy_role=deploy_role,
            profile=profile,
        )
    checks, failed = outcome.checks, outcome.failed
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ok": not failed,
                    "stack": outcome.stack,
                    "region": outcome.region,
                    "checks": [dataclasses.asdict(c) for c in checks],
                }
            )
        )
    else:
        for check in checks:
            click.echo(check.line())
        click.echo(
            f"{len(checks) - len(failed)} of {len(checks)} checks passed or do not apply"
            + (f"; {len(failed)} failed" if failed else "")
        )
    sys.exit(EXIT_FAILED if failed else 0)

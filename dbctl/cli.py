"""`python -m dbctl`: the post-deploy step and the local stack, behind one click group."""

import click

from dbctl.local import local
from dbctl.migrate_cli import migrate_command, status_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """spike-land-db's database tool: migrations, roles and the local stack."""


cli.add_command(migrate_command, "migrate")
cli.add_command(status_command, "status")
cli.add_command(local, "local")


def main() -> None:
    cli(prog_name="dbctl")

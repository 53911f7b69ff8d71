"""`python -m dbctl`: the post-deploy step and the local stack, behind one click group.

Subcommands are imported when they run (click's lazy-group pattern): `dbctl migrate` does not pay for the
local stack's imports (the PgBouncer renderer, pydantic), which roughly halves a no-op run's start-up.
"""

import importlib

import click

# name -> "module:attribute" of the click command
SUBCOMMANDS = {
    "migrate": "dbctl.cli.migrate:migrate_command",
    "status": "dbctl.cli.migrate:status_command",
    "local": "dbctl.cli.local:local",
    "preflight": "dbctl.cli.preflight:preflight_command",
    "report": "dbctl.cli.report:report_command",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *SUBCOMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in SUBCOMMANDS:
            return super().get_command(ctx, cmd_name)
        module, attribute = SUBCOMMANDS[cmd_name].split(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """spike-land-db's database tool: migrations, roles and the local stack."""


def main() -> None:
    cli(prog_name="dbctl")

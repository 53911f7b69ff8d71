"""`python -m dbctl`: the post-deploy step and the local stack, behind one click group."""

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """spike-land-db's database tool: migrations, roles and the local stack."""


def main() -> None:
    cli(prog_name="dbctl")

"""dbctl's click tree, walked once for every test that reads it (the help texts, the docs check)."""

from __future__ import annotations

from collections.abc import Iterator

import click

from dbctl.cli.main import cli


def walk() -> Iterator[tuple[tuple[str, ...], click.Command, click.Context]]:
    """(command path, () for dbctl itself; the command; its context), parents before their subcommands.

    Each context carries the command's own context settings (`-h`), as click's make_context applies them:
    a bare Context would make get_params() cache a help option without `-h` for every later caller."""

    def visit(
        command: click.Command, path: tuple[str, ...], parent: click.Context | None
    ) -> Iterator[tuple[tuple[str, ...], click.Command, click.Context]]:
        ctx = click.Context(
            command, info_name=path[-1] if path else "dbctl", parent=parent, **command.context_settings
        )
        yield path, command, ctx
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None, f"dbctl {' '.join(path)} lists {name} but has no such command"
                yield from visit(sub, (*path, name), ctx)

    yield from visit(cli, (), None)

"""spike-land-db's database layer: migrations, roles, the PgBouncer renderer, the local stack and the CLI.

It never imports Pulumi, except where `--stack` reads a deployed stack's outputs.
"""

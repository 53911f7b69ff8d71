"""spike-land-db's database layer (`python -m dbctl`): everything Pulumi-free, one package per domain.

core/        names, errors, SCRAM, roles, rotation: imports nothing else of dbctl (the rotation Lambda)
schema/      the post-deploy step: migrations runner, deploy, maintenance, credentials, connection,
             report(_text), the migration lint (squawk)
rehearsal/   `dbctl migrate rehearse`: pending migrations on a copy of real data, their locks watched
pgbouncer/   config (the pure renderer both PgBouncer tiers use), capacity (the budget), process (a real one)
postgres/    a real PostgreSQL here: install discovery, OS processes, the Cluster facade, RDS shaping, TLS
stackconfig/ the stack settings model (Pulumi.<stack>.yaml, validated), parameter groups, slow-query filter
local/       `dbctl local`: state, env, stack, bouncer, lifecycle, status, replica, backup/retention, rotation
aws/         what talks to an account: stack outputs and secrets, snapshots, preflight
cli/         click only: options, output, exit codes (errors.py); each command calls a plain function above
components/ (Pulumi) imports dbctl, never the reverse; hosts/ holds the PgBouncer hosts' standalone scripts.
"""

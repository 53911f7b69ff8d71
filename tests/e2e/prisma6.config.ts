// Prisma Migrate in the end-to-end suite: Prisma 6.19's JavaScript schema engine over @prisma/adapter-pg,
// because Prisma's native schema engine comes from its CDN, which this machine cannot reach, and Prisma 7's
// Migrate has only the native engine. The adapter is the app's own, 7.10 (same driver-adapter interface):
// 6.19's cannot read PostgreSQL's `name` type, which `migrate deploy` and `migrate dev` query. Connects
// with DIRECT_URL and SHADOW_DATABASE_URL exactly as `dbctl local up` wrote them (TLS verify-full with the
// stack's CA, which node-postgres reads from sslrootcert).
// E2E_SCHEMA and E2E_MIGRATIONS_DIR let a test point it at a changed schema and a copy of sql/migrations.
import { defineConfig } from "prisma6/config";
import { PrismaPg } from "@prisma/adapter-pg";
import pg from "pg";

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run against a local stack's .env (dbctl local up)`);
  return value;
}

// The CLI never closes the adapter's pool: let the process exit when its connections are idle, instead of
// after node-postgres's 10 s idle timeout (every command took 10 s longer than its work).
function pool(connectionString: string) {
  return { connectionString, allowExitOnIdle: true };
}

// adapter-pg makes a shadow database with CREATE DATABASE, which the migrator may not do. Use the
// stack's own (SHADOW_DATABASE_URL) and reset it first, as Prisma's native engine does with shadowDatabaseUrl.
class WithShadowDatabase extends PrismaPg {
  async connectToShadowDb() {
    const shadow = await new PrismaPg(pool(required("SHADOW_DATABASE_URL"))).connect();
    await shadow.executeScript('DROP SCHEMA IF EXISTS "public" CASCADE; CREATE SCHEMA "public"');
    return shadow;
  }
}

// `migrate dev` introspects the database (its drift check), selecting catalog columns of PostgreSQL's
// one-byte "char" type (OID 18, e.g. pg_class.relkind), which adapter-pg maps to no Prisma column type:
// "Column type 'char' could not be deserialized from the database". node-postgres already returns them as
// one-character strings; describe them as text (OID 25). This process runs only Prisma's CLI.
const CHAR_OID = 18;
const TEXT_OID = 25;
const addFields = pg.Result.prototype.addFields;
pg.Result.prototype.addFields = function (fields: { dataTypeID: number }[]) {
  for (const field of fields) if (field.dataTypeID === CHAR_OID) field.dataTypeID = TEXT_OID;
  return addFields.call(this, fields);
};

export default defineConfig({
  experimental: { adapter: true },
  engine: "js",
  schema: process.env.E2E_SCHEMA ?? "../../prisma/schema.prisma",
  migrations: { path: process.env.E2E_MIGRATIONS_DIR ?? "../../sql/migrations" },
  adapter: async () => new WithShadowDatabase(pool(required("DIRECT_URL"))),
});

// Prisma Migrate and dbctl on one database and one folder (sql/migrations), through DIRECT_URL as written.
// Prisma 6.19's CLI with its JavaScript schema engine (prisma6.config.ts: why), run as the app team runs it.
// E2E_WORK_DIR (from the pytest driver) receives the migrations folder these tests grow, so the driver can
// then apply it with `dbctl migrate`, as the seed's workflow does.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";
import { PrismaClient, prismaRead, prismaWrite } from "../src/clients.ts";
import { env } from "../src/env.ts";

const e2e = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const repo = path.resolve(e2e, "../..");
const schemaFile = path.join(repo, "prisma/schema.prisma");
const work = process.env.E2E_WORK_DIR ?? mkdtempSync(path.join(tmpdir(), "e2e-migrate-"));
const migrations = path.join(work, "migrations");

const TAG_MODEL = `
model Tag {
  id        Int      @id @default(autoincrement())
  label     String   @unique
  createdAt DateTime @default(now())
}
`;
const NOTE_MODEL = `
model Note {
  id     String @id @default(cuid())
  body   String
  tagIds Int[]
}
`;

function prisma6(args: string[], extraEnv: Record<string, string> = {}) {
  const result = spawnSync(
    process.execPath,
    [path.join(e2e, "node_modules/prisma6/build/index.js"), ...args, "--config", "prisma6.config.ts"],
    {
      cwd: e2e,
      encoding: "utf8",
      timeout: 180_000,
      env: {
        ...process.env,
        ...extraEnv,
        // The JavaScript engine needs neither native engine; pointing at a file that exists stops the CLI
        // from trying to download them.
        PRISMA_SCHEMA_ENGINE_BINARY: process.execPath,
        PRISMA_QUERY_ENGINE_LIBRARY: process.execPath,
        CHECKPOINT_DISABLE: "1",
        PRISMA_HIDE_UPDATE_MESSAGE: "1",
      },
    },
  );
  return { code: result.status, out: `${result.stdout}\n${result.stderr}` };
}

function writeSchema(name: string, ...models: string[]): string {
  const file = path.join(work, name);
  writeFileSync(file, readFileSync(schemaFile, "utf8") + models.join(""));
  return file;
}

function normalize(text: string): string {
  return text
    .replace(/^-- CreateSchema\n.*\n/m, "") // --from-empty adds CREATE SCHEMA IF NOT EXISTS "public"
    .split("\n")
    .map((line) => line.trimEnd())
    .join("\n")
    .replace(/\n{2,}/g, "\n\n")
    .trim();
}

let write: PrismaClient;
let read: PrismaClient;
before(() => {
  mkdirSync(work, { recursive: true });
  cpSync(path.join(repo, "sql/migrations"), migrations, { recursive: true });
  write = prismaWrite();
  read = prismaRead();
});
after(async () => {
  await Promise.all([write.$disconnect(), read.$disconnect()]);
});

test("Prisma's own SQL for prisma/schema.prisma is the init migration", () => {
  const { code, out } = prisma6(["migrate", "diff", "--from-empty", "--to-schema-datamodel", schemaFile, "--script"]);
  assert.equal(code, 0, out);
  const init = readdirSync(path.join(repo, "sql/migrations")).find((name) => name.endsWith("_init"));
  assert.ok(init, "sql/migrations has an *_init migration");
  const expected = readFileSync(path.join(repo, "sql/migrations", init, "migration.sql"), "utf8");
  const generated = out.slice(out.indexOf("-- Create"), out.lastIndexOf(";") + 1);
  assert.equal(normalize(generated), normalize(expected));
});

test("prisma migrate status through DIRECT_URL reads dbctl's history as its own", () => {
  const { code, out } = prisma6(["migrate", "status"]);
  assert.equal(code, 0, out);
  assert.match(out, /Database schema is up to date!/);
  assert.match(out, new RegExp(`PostgreSQL database "${new URL(env.DIRECT_URL).pathname.slice(1)}"`));
});

test("prisma migrate deploy through DIRECT_URL: the new table serves the app and the readers at once", async () => {
  const withTag = writeSchema("schema-tag.prisma", TAG_MODEL);
  const diff = prisma6(["migrate", "diff", "--from-schema-datamodel", schemaFile, "--to-schema-datamodel", withTag, "--script"]);
  assert.equal(diff.code, 0, diff.out);
  const sql = diff.out.slice(diff.out.indexOf("-- CreateTable"), diff.out.lastIndexOf(";") + 1);
  assert.match(sql, /CREATE TABLE "Tag"/);
  mkdirSync(path.join(migrations, "20261130000000_add_tag"));
  writeFileSync(path.join(migrations, "20261130000000_add_tag", "migration.sql"), `${sql}\n`);

  const folder = { E2E_MIGRATIONS_DIR: migrations, E2E_SCHEMA: withTag };
  const deploy = prisma6(["migrate", "deploy"], folder);
  assert.equal(deploy.code, 0, deploy.out);
  assert.match(deploy.out, /20261130000000_add_tag/);
  const status = prisma6(["migrate", "status"], folder);
  assert.equal(status.code, 0, status.out);
  assert.match(status.out, /Database schema is up to date!/);

  // No grant, no dbctl run in between: spike_owner owns it, so the default privileges already apply.
  const inserted = await write.$queryRaw<{ id: number; label: string }[]>`
    INSERT INTO "Tag" ("label") VALUES ('first') RETURNING "id", "label"`;
  assert.equal(inserted[0].label, "first");
  const [owner] = await write.$queryRaw<{ owner: string }[]>`
    SELECT pg_get_userbyid(relowner)::text AS owner FROM pg_class WHERE relname = 'Tag'`;
  assert.equal(owner.owner, "spike_owner");
  const seen = await read.$queryRaw<{ label: string }[]>`SELECT "label" FROM "Tag"`;
  assert.deepEqual(seen, [{ label: "first" }]);
  await assert.rejects(write.$executeRawUnsafe('DROP TABLE "Tag"'), /must be owner|permission denied/);
});

test("prisma migrate dev --create-only writes the next migration into the shared folder (shadow database)", async () => {
  const before = new Set(readdirSync(migrations));
  const withNote = writeSchema("schema-note.prisma", TAG_MODEL, NOTE_MODEL);
  env.SHADOW_DATABASE_URL; // required: migrate dev replays the folder in the stack's shadow database
  const dev = prisma6(["migrate", "dev", "--create-only", "--name", "add_note", "--skip-generate"], {
    E2E_MIGRATIONS_DIR: migrations,
    E2E_SCHEMA: withNote,
  });
  // Prisma 6.19's `migrate dev --create-only` stops its schema engine twice (`return await f.stop(), …`
  // inside a try whose `finally` calls `f.stop()` again, in build/index.js). The native engine shrugs; the
  // wasm engine used here then throws "null pointer passed to rust", after the migration is written.
  // Accept exactly that one error as the last line, nothing else.
  const doubleStop = /\nError: null pointer passed to rust\s*$/;
  const errors = dev.out.match(/Error:/g) ?? [];
  assert.ok(dev.code === 0 || (doubleStop.test(dev.out) && errors.length === 1), dev.out);
  const created = readdirSync(migrations).filter((name) => !before.has(name));
  assert.equal(created.length, 1, `one new migration, got ${created.join(", ")}\n${dev.out}`);
  assert.match(created[0], /^[0-9]{14}_add_note$/);
  const sql = readFileSync(path.join(migrations, created[0], "migration.sql"), "utf8");
  assert.match(sql, /CREATE TABLE "Note"/);
  assert.match(sql, /"tagIds" INTEGER\[\]/);
  // --create-only: written, not applied (the pytest driver applies it with dbctl migrate).
  const [exists] = await write.$queryRaw<{ exists: boolean }[]>`
    SELECT to_regclass('public."Note"') IS NOT NULL AS exists`;
  assert.equal(exists.exists, false);
  assert.ok(existsSync(path.join(migrations, "migration_lock.toml")));
});

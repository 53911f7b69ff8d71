// Generates the Prisma 7 client (Rust-free: query compiler + @prisma/adapter-pg) for prisma/schema.prisma.
//
// prisma/schema.prisma is written for Prisma 6 (the seed's version): its datasource names `url` and
// `directUrl`, which Prisma 7 refuses in a schema file (they move to prisma.config.ts). This derives the
// Prisma 7 form, changing only those two lines and the generator, into generated/schema.prisma, then runs
// Prisma 7's `generate` into generated/client/. The models are the project's, byte for byte.
//
// Prisma's native schema engine is not needed to generate, but the CLI looks for it first and would fetch
// it from Prisma's CDN (unreachable here): PRISMA_SCHEMA_ENGINE_BINARY points it at a file that exists.
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..");
const source = path.resolve(root, "../../prisma/schema.prisma");
const outDir = path.join(root, "generated");

export function prisma7Schema(text) {
  const replaced = [];
  const out = text
    .replace(/^\s*(url|directUrl)\s*=\s*env\("[A-Z_]+"\)\s*\n/gm, (line) => (replaced.push(line), ""))
    .replace(/generator client \{[^}]*\}/, (block) => (replaced.push(block), GENERATOR));
  if (replaced.length !== 3) {
    throw new Error(
      `${source}: expected a datasource with url and directUrl and one 'generator client' block ` +
        `(found ${replaced.length} of 3); update src/generate.mjs to the schema's new shape`,
    );
  }
  return out;
}

const GENERATOR = `generator client {
  provider = "prisma-client"
  output   = "./client"
}`;

mkdirSync(outDir, { recursive: true });
writeFileSync(path.join(outDir, "schema.prisma"), prisma7Schema(readFileSync(source, "utf8")));
const result = spawnSync(
  process.execPath,
  [path.join(root, "node_modules/prisma/build/index.js"), "generate", "--schema", "generated/schema.prisma"],
  {
    cwd: root,
    stdio: "inherit",
    env: { ...process.env, PRISMA_SCHEMA_ENGINE_BINARY: process.execPath, CHECKPOINT_DISABLE: "1" },
  },
);
process.exit(result.status ?? 1);

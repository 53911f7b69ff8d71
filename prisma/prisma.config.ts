// Prisma's config for this repository (Prisma 6.19, the seed's version, with its native engines):
//   npx prisma migrate dev --config prisma/prisma.config.ts --name <change>
// writes the new migration to sql/migrations/, the folder `dbctl migrate` applies (one folder, one history
// table, one advisory lock for both tools). Paths are relative to this file. Prisma does not read .env
// when a config file is used: export the local stack's variables first (`set -a; . ./.env; set +a`).
// Prisma 7: drop `engine`, and drop `url`/`directUrl` from schema.prisma (docs/connecting-the-app.md).
import { defineConfig } from "prisma/config";

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run \`./dev local\`, then \`set -a; . ./.env; set +a\``);
  return value;
}

export default defineConfig({
  schema: "schema.prisma",
  migrations: { path: "../sql/migrations" },
  engine: "classic",
  datasource: {
    // Migrate connects directly, as the migrator, whose sessions create objects as spike_owner.
    url: required("DIRECT_URL"),
    // A database the migrator may reset: `dbctl local up` makes one; in CI or on AWS, point it at a
    // scratch database (never the real one).
    shadowDatabaseUrl: process.env.SHADOW_DATABASE_URL,
  },
});

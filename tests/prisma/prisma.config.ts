// Real Prisma against a database dbctl migrated, without Prisma's native engines (their CDN is unreachable
// here): Prisma 6.19's JavaScript schema engine over @prisma/adapter-pg. See docs/migrations.md.
// Used by tests/prisma/check.sh, which copies it next to prisma/schema.prisma and prisma/migrations/.
import { defineConfig } from "prisma/config";
import { PrismaPg } from "@prisma/adapter-pg";

// Separate connection fields, not a connectionString, so a shadow database can replace `database`.
const url = new URL(process.env.DATABASE_URL!);
const fields = {
  host: url.hostname,
  port: Number(url.port),
  user: decodeURIComponent(url.username),
  password: decodeURIComponent(url.password),
  database: url.pathname.slice(1),
  ssl: { rejectUnauthorized: false },
};

// adapter-pg 6.19 drops its shadow database while its own pool is still connected; do it in order.
class Factory extends PrismaPg {
  async connectToShadowDb() {
    const main = await new PrismaPg(fields).connect();
    const database = `prisma_shadow_${globalThis.crypto.randomUUID().replaceAll("-", "")}`;
    await main.executeScript(`CREATE DATABASE "${database}"`);
    const shadow = await new PrismaPg({ ...fields, database }).connect();
    const dispose = shadow.dispose.bind(shadow);
    shadow.dispose = async () => {
      await dispose();
      await main.executeScript(`DROP DATABASE "${database}" WITH (FORCE)`);
      await main.dispose();
    };
    return shadow;
  }
}

export default defineConfig({
  experimental: { adapter: true },
  engine: "js",
  schema: "prisma/schema.prisma",
  migrations: { path: "prisma/migrations" },
  adapter: async () => new Factory(fields),
});

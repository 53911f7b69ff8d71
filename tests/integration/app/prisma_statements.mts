// The app's real client through the transaction pool: Prisma 7 over @prisma/adapter-pg (node-postgres).
// Run by tests/integration/app/test_prisma_statements.py with the local stack's .env URLs. Phase "default"
// is the adapter as the app builds it; phase "named" gives PrismaPg a statementNameGenerator, so
// node-postgres sends named statements, which PgBouncer >= 1.21 keeps per server connection.
// Prints one JSON line per phase: how many transactions ran.
import { createHash } from "node:crypto";
import { PrismaPg } from "../../e2e/node_modules/@prisma/adapter-pg/dist/index.mjs";
import { PrismaClient } from "../../e2e/generated/client/client.ts";

const url = process.env.DATABASE_URL;
if (!url) throw new Error("DATABASE_URL is not set");
const phase = process.argv[2] ?? "default";
const rounds = Number(process.argv[3] ?? "20");
const options =
  phase === "named"
    ? { statementNameGenerator: (q: { sql: string }) => "p" + createHash("sha1").update(q.sql).digest("hex").slice(0, 16) }
    : {};
const prisma = new PrismaClient({ adapter: new PrismaPg({ connectionString: url, max: 1 }, options) });
for (let i = 0; i < rounds; i++) {
  // BEGIN, three reads by primary key, COMMIT: the Prisma-shaped transaction.
  await prisma.$transaction([
    prisma.user.findUnique({ where: { id: "a" } }),
    prisma.user.findUnique({ where: { email: "b" } }),
    prisma.user.findFirst({ where: { id: "c" } }),
  ]);
}
await prisma.$disconnect();
console.log(JSON.stringify({ phase, transactions: rounds }));

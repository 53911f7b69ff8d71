// Read routing as the seed does it: a second client on DATABASE_READ_URL (spike_readonly, PgBouncer's read
// pool; on AWS the replica, locally the primary). Reads work, every kind of write is refused.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { PrismaClient, prismaRead, prismaWrite, unique } from "../src/clients.ts";

let write: PrismaClient;
let read: PrismaClient;
before(() => {
  write = prismaWrite();
  read = prismaRead();
});
after(async () => {
  await Promise.all([write.$disconnect(), read.$disconnect()]);
});

test("the read client sees what the write client committed, as spike_readonly", async () => {
  const user = await write.user.create({
    data: { email: `${unique("reader")}@example.com`, apps: { create: { name: "Readable" } } },
  });
  const found = await read.user.findUniqueOrThrow({ where: { id: user.id }, include: { apps: true } });
  assert.deepEqual(
    found.apps.map((a) => a.name),
    ["Readable"],
  );
  // The login is one of the role's two users (credentials rotate); the session acts as the role.
  const [who] = await read.$queryRaw<{ current_user: string; session_user: string; read_only: string }[]>`
    SELECT current_user::text, session_user::text, current_setting('default_transaction_read_only') AS read_only`;
  assert.deepEqual(who, { current_user: "spike_readonly", session_user: "spike_readonly_a", read_only: "on" });
});

test("writes through the read client are refused by the database", async () => {
  const email = `${unique("nowrite")}@example.com`;
  await assert.rejects(read.user.create({ data: { email } }), /read-only transaction/);
  await assert.rejects(read.user.createMany({ data: [{ email }] }), /read-only transaction/);
  await assert.rejects(read.$executeRaw`UPDATE "User" SET name = 'x' WHERE email = ${email}`, /read-only/);
  // Even a transaction that asks to be read-write: spike_readonly has SELECT only.
  await assert.rejects(
    read.$transaction(async (tx) => {
      await tx.$executeRawUnsafe("SET TRANSACTION READ WRITE");
      await tx.user.create({ data: { email } });
    }),
    /permission denied/,
  );
  assert.equal(await write.user.count({ where: { email } }), 0);
});

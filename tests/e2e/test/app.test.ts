// The app's queries through PgBouncer's transaction pool (DATABASE_URL) with Prisma 7's Rust-free client.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Prisma, PrismaClient, prismaWrite, unique } from "../src/clients.ts";

let prisma: PrismaClient;
before(() => {
  prisma = prismaWrite();
});
after(async () => {
  await prisma.$disconnect();
});

function newUser(name = "user") {
  return { email: `${unique(name)}@example.com`, name };
}

describe("models and types", () => {
  test("nested create: a user with an app, its requirements and a monetization model", async () => {
    const user = await prisma.user.create({
      data: {
        ...newUser("nested"),
        apps: {
          create: {
            name: "Todo",
            status: "ACTIVE",
            requirements: {
              create: [
                { description: "Add items", priority: "HIGH" },
                { description: "Dark mode" },
              ],
            },
            monetizationModels: {
              create: {
                type: "SUBSCRIPTION",
                price: new Prisma.Decimal("19.99"),
                subscriptionInterval: "MONTHLY",
                features: ["sync", "themes", "ünïcode, with a comma"],
              },
            },
          },
        },
      },
      include: { apps: { include: { requirements: { orderBy: { description: "asc" } }, monetizationModels: true } } },
    });
    assert.equal(user.apps.length, 1);
    const [app] = user.apps;
    assert.equal(app.status, "ACTIVE");
    assert.equal(app.userId, user.id);
    assert.deepEqual(
      app.requirements.map((r) => [r.description, r.priority, r.status, r.version]),
      [
        ["Add items", "HIGH", "PENDING", 1],
        ["Dark mode", "MEDIUM", "PENDING", 1],
      ],
    );
    const [model] = app.monetizationModels;
    assert.ok(Prisma.Decimal.isDecimal(model.price));
    assert.equal(model.price?.toFixed(2), "19.99");
    assert.deepEqual(model.features, ["sync", "themes", "ünïcode, with a comma"]);
    assert.equal(model.subscriptionInterval, "MONTHLY");
  });

  test("Decimal keeps exact cents; enums and String[] filter in the database", async () => {
    const user = await prisma.user.create({ data: newUser("decimal") });
    const app = await prisma.app.create({ data: { name: "Shop", userId: user.id } });
    assert.equal(app.status, "DRAFT"); // the enum's default
    await prisma.monetizationModel.createMany({
      data: [
        { appId: app.id, type: "ONE_TIME", price: "0.10", features: ["a"] },
        { appId: app.id, type: "ONE_TIME", price: "0.20", features: ["b", "pro"] },
        { appId: app.id, type: "FREE", features: [] },
      ],
    });
    const sum = await prisma.monetizationModel.aggregate({ where: { appId: app.id }, _sum: { price: true } });
    assert.equal(sum._sum.price?.toString(), "0.3"); // not 0.30000000000000004
    const pro = await prisma.monetizationModel.findMany({ where: { appId: app.id, features: { has: "pro" } } });
    assert.deepEqual(
      pro.map((m) => m.features),
      [["b", "pro"]],
    );
    const free = await prisma.monetizationModel.count({ where: { appId: app.id, type: "FREE" } });
    assert.equal(free, 1);
    await assert.rejects(
      prisma.monetizationModel.create({ data: { appId: app.id, price: "123456789.00" } }),
      /overflow|out of range|precision/i,
    );
  });

  test("self-relation: forks of a fork, both directions", async () => {
    const user = await prisma.user.create({ data: newUser("forker") });
    const original = await prisma.app.create({ data: { name: "Original", userId: user.id } });
    const fork = await prisma.app.create({
      data: { name: "Fork", user: { connect: { id: user.id } }, parentApp: { connect: { id: original.id } } },
    });
    const forkOfFork = await prisma.app.create({ data: { name: "Fork 2", userId: user.id, forkedFrom: fork.id } });
    const tree = await prisma.app.findUniqueOrThrow({
      where: { id: original.id },
      include: { forks: { include: { forks: true } } },
    });
    assert.deepEqual(
      tree.forks.map((f) => [f.name, f.forks.map((g) => g.id)]),
      [["Fork", [forkOfFork.id]]],
    );
    const up = await prisma.app.findUniqueOrThrow({
      where: { id: forkOfFork.id },
      include: { parentApp: { include: { parentApp: true } } },
    });
    assert.equal(up.parentApp?.parentApp?.id, original.id);
  });

  test("unique constraints come back as Prisma's P2002", async () => {
    const data = newUser("dupe");
    await prisma.user.create({ data });
    await assert.rejects(prisma.user.create({ data }), (e: unknown) => {
      assert.ok(e instanceof Prisma.PrismaClientKnownRequestError);
      assert.equal(e.code, "P2002");
      return true;
    });
  });
});

describe("writes", () => {
  test("@updatedAt moves on update, createdAt does not", async () => {
    const user = await prisma.user.create({ data: newUser("updated") });
    const app = await prisma.app.create({ data: { name: "v1", userId: user.id } });
    await sleep(5); // timestamps have millisecond precision
    const changed = await prisma.app.update({ where: { id: app.id }, data: { name: "v2" } });
    assert.equal(changed.createdAt.getTime(), app.createdAt.getTime());
    assert.ok(changed.updatedAt > app.updatedAt, `${changed.updatedAt} > ${app.updatedAt}`);
  });

  test("cascading deletes: an app takes its requirements and monetization models; a user with apps is kept", async () => {
    const user = await prisma.user.create({
      data: {
        ...newUser("cascade"),
        accounts: { create: { type: "oauth", provider: "github", providerAccountId: unique("gh") } },
        sessions: { create: { sessionToken: unique("session"), expires: new Date(Date.now() + 3600_000) } },
        apps: {
          create: {
            name: "Doomed",
            requirements: { create: [{ description: "r1" }, { description: "r2" }] },
            monetizationModels: { create: { type: "FREE" } },
          },
        },
      },
      include: { apps: true },
    });
    const [app] = user.apps;
    // App.user has no onDelete: the database restricts deleting a user who still owns apps (P2003).
    await assert.rejects(prisma.user.delete({ where: { id: user.id } }), (e: unknown) => {
      assert.ok(e instanceof Prisma.PrismaClientKnownRequestError);
      assert.equal(e.code, "P2003");
      return true;
    });
    await prisma.app.delete({ where: { id: app.id } });
    assert.equal(await prisma.requirement.count({ where: { appId: app.id } }), 0);
    assert.equal(await prisma.monetizationModel.count({ where: { appId: app.id } }), 0);
    await prisma.user.delete({ where: { id: user.id } });
    assert.equal(await prisma.account.count({ where: { userId: user.id } }), 0);
    assert.equal(await prisma.session.count({ where: { userId: user.id } }), 0);
  });

  test("an interactive $transaction that throws rolls back every write in it", async () => {
    const email = `${unique("tx")}@example.com`;
    await assert.rejects(
      prisma.$transaction(async (tx) => {
        const user = await tx.user.create({ data: { email } });
        await tx.app.create({ data: { name: "in tx", userId: user.id } });
        assert.equal(await tx.user.count({ where: { email } }), 1); // visible inside
        throw new Error("abort the transaction");
      }),
      /abort the transaction/,
    );
    assert.equal(await prisma.user.count({ where: { email } }), 0);
    assert.equal(await prisma.app.count({ where: { name: "in tx", user: { email } } }), 0);
    // A committed one, through the same pool.
    const kept = await prisma.$transaction(async (tx) => tx.user.create({ data: { email } }));
    assert.equal((await prisma.user.findUniqueOrThrow({ where: { email } })).id, kept.id);
  });

  test("createMany inserts all rows, and skipDuplicates skips the existing one", async () => {
    const batch = unique("batch");
    const rows = Array.from({ length: 100 }, (_, i) => ({ email: `${batch}-${i}@example.com`, name: batch }));
    const created = await prisma.user.createMany({ data: rows });
    assert.equal(created.count, 100);
    const again = await prisma.user.createMany({
      data: [rows[0], { email: `${batch}-new@example.com`, name: batch }],
      skipDuplicates: true,
    });
    assert.equal(again.count, 1);
    assert.equal(await prisma.user.count({ where: { name: batch } }), 101);
  });
});

describe("load", () => {
  test("200 concurrent requests through PgBouncer, 0 failures", async () => {
    // 100 client connections (more than PgBouncer's server pool) sharing 200 requests, half of them writes.
    const client = prismaWrite(100);
    try {
      const user = await client.user.create({ data: newUser("load") });
      const started = performance.now();
      const results = await Promise.allSettled(
        Array.from({ length: 200 }, (_, i) =>
          i % 2 === 0
            ? client.app.create({ data: { name: `load ${i}`, userId: user.id } })
            : client.app.findMany({ where: { userId: user.id }, take: 5 }),
        ),
      );
      const elapsed = performance.now() - started;
      const failed = results.filter((r) => r.status === "rejected");
      assert.deepEqual(
        failed.map((r) => String((r as PromiseRejectedResult).reason).split("\n")[0]),
        [],
      );
      assert.equal(await client.app.count({ where: { userId: user.id } }), 100);
      console.log(`# figure: 200 concurrent requests in ${elapsed.toFixed(0)} ms, 0 failures`);
    } finally {
      await client.$disconnect();
    }
  });
});

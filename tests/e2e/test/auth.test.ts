// Auth.js's Prisma adapter (@auth/prisma-adapter) over Prisma 7's client, through the transaction pool:
// every method for users, accounts, sessions and verification tokens. The WebAuthn methods
// (createAuthenticator, getAuthenticator, listAuthenticatorsByUserId, updateAuthenticatorCounter) need an
// Authenticator model, which the schema does not have.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { PrismaAdapter } from "@auth/prisma-adapter";
import type { Adapter, AdapterAccount } from "@auth/core/adapters";
import { PrismaClient, prismaWrite, unique } from "../src/clients.ts";

let prisma: PrismaClient;
let adapter: Required<
  Pick<
    Adapter,
    | "createUser"
    | "getUser"
    | "getUserByEmail"
    | "getUserByAccount"
    | "updateUser"
    | "deleteUser"
    | "linkAccount"
    | "unlinkAccount"
    | "getAccount"
    | "createSession"
    | "getSessionAndUser"
    | "updateSession"
    | "deleteSession"
    | "createVerificationToken"
    | "useVerificationToken"
  >
>;

before(() => {
  prisma = prismaWrite();
  adapter = PrismaAdapter(prisma as never) as typeof adapter;
});
after(async () => {
  await prisma.$disconnect();
});

const hour = 3600_000;

function account(userId: string): AdapterAccount {
  return {
    userId,
    type: "oauth",
    provider: "github",
    providerAccountId: unique("gh"),
    access_token: "gho_" + "x".repeat(200), // @db.Text: longer than any varchar default
    refresh_token: "ghr_token",
    expires_at: Math.floor(Date.now() / 1000) + 3600,
    token_type: "bearer",
    scope: "read:user user:email",
    id_token: "eyJ.header.payload",
    session_state: "state",
  };
}

test("users: create, get by id / email / account, update, delete", async () => {
  const email = `${unique("auth")}@example.com`;
  const created = await adapter.createUser({ id: "ignored-by-the-adapter", email, emailVerified: null, name: "Ada" });
  assert.notEqual(created.id, "ignored-by-the-adapter"); // the database's cuid() default
  assert.equal(created.email, email);
  assert.equal((await adapter.getUser(created.id))?.name, "Ada");
  assert.equal((await adapter.getUserByEmail(email))?.id, created.id);
  assert.equal(await adapter.getUserByEmail(`missing-${email}`), null);
  assert.equal(await adapter.getUser("no-such-user"), null);

  const verified = new Date(Math.floor(Date.now() / 1000) * 1000);
  const updated = await adapter.updateUser({ id: created.id, name: "Ada L.", emailVerified: verified });
  assert.equal(updated.name, "Ada L.");
  assert.equal(updated.emailVerified?.getTime(), verified.getTime());

  const linked = account(created.id);
  await adapter.linkAccount(linked);
  const byAccount = await adapter.getUserByAccount({
    provider: linked.provider,
    providerAccountId: linked.providerAccountId,
  });
  assert.equal(byAccount?.id, created.id);

  await adapter.deleteUser(created.id);
  assert.equal(await adapter.getUser(created.id), null);
  // The account went with the user (onDelete: Cascade).
  assert.equal(await adapter.getAccount(linked.providerAccountId, linked.provider), null);
});

test("accounts: link, get, unlink; a second link of the same provider account is refused", async () => {
  const user = await adapter.createUser({ id: "", email: `${unique("acct")}@example.com`, emailVerified: null });
  const linked = account(user.id);
  await adapter.linkAccount(linked);
  const stored = await adapter.getAccount(linked.providerAccountId, linked.provider);
  assert.equal(stored?.userId, user.id);
  assert.equal(stored?.access_token, linked.access_token);
  assert.equal(stored?.expires_at, linked.expires_at);
  await assert.rejects(Promise.resolve(adapter.linkAccount({ ...linked })), /Unique constraint/);

  await adapter.unlinkAccount({ provider: linked.provider, providerAccountId: linked.providerAccountId });
  assert.equal(await adapter.getAccount(linked.providerAccountId, linked.provider), null);
  assert.equal(
    await adapter.getUserByAccount({ provider: linked.provider, providerAccountId: linked.providerAccountId }),
    null,
  );
});

test("sessions: create, get with its user, update, delete", async () => {
  const user = await adapter.createUser({ id: "", email: `${unique("sess")}@example.com`, emailVerified: null });
  const sessionToken = unique("token");
  const expires = new Date(Date.now() + hour);
  const session = await adapter.createSession({ sessionToken, userId: user.id, expires });
  assert.equal(session.userId, user.id);

  const found = await adapter.getSessionAndUser(sessionToken);
  assert.equal(found?.user.email, user.email);
  assert.equal(found?.session.expires.getTime(), expires.getTime());
  assert.equal(await adapter.getSessionAndUser("no-such-token"), null);

  const later = new Date(Date.now() + 2 * hour);
  const updated = await adapter.updateSession({ sessionToken, expires: later });
  assert.equal(updated?.expires.getTime(), later.getTime());

  await adapter.deleteSession(sessionToken);
  assert.equal(await adapter.getSessionAndUser(sessionToken), null);
});

test("verification tokens: create, use once, second use gives null", async () => {
  const identifier = `${unique("magic")}@example.com`;
  const token = unique("vt");
  const expires = new Date(Date.now() + hour);
  const created = await adapter.createVerificationToken({ identifier, token, expires });
  assert.deepEqual(created, { identifier, token, expires });
  const used = await adapter.useVerificationToken({ identifier, token });
  assert.deepEqual(used, { identifier, token, expires });
  assert.equal(await adapter.useVerificationToken({ identifier, token }), null);
  assert.equal(await prisma.verificationToken.count({ where: { identifier } }), 0);
});

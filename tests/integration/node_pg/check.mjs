// node-postgres (pg 8.x) connects with each URL of a .env file exactly as written, and says who it is.
// Usage: node check.mjs <path to .env> KEY...   (the URLs, and so the passwords, never touch a command line)
// Prints one JSON line: {"KEY": {"user": ..., "db": ...} | {"error": ...}}. Exit 0 when every KEY connected.
import { readFileSync } from "node:fs";
import pg from "pg";

const [envFile, ...keys] = process.argv.slice(2);
const env = {};
for (const line of readFileSync(envFile, "utf8").split("\n")) {
  const m = line.match(/^([A-Z_0-9]+)="(.*)"$/);
  if (m) env[m[1]] = m[2];
}

const results = {};
let ok = true;
for (const key of keys) {
  const client = new pg.Client({ connectionString: env[key], connectionTimeoutMillis: 10000 });
  try {
    await client.connect();
    const { rows } = await client.query("select session_user as user, current_database() as db");
    results[key] = rows[0];
  } catch (e) {
    results[key] = { error: String(e.message || e) };
    ok = false;
  } finally {
    await client.end().catch(() => {});
  }
}
console.log(JSON.stringify(results));
process.exit(ok ? 0 : 1);

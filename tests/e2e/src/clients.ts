// Prisma 7's client as the Spike Land app builds it: the Rust-free engine over @prisma/adapter-pg
// (node-postgres), one client for writes (DATABASE_URL, the transaction pool) and one for reads
// (DATABASE_READ_URL, the read pool), as the seed's read-replica routing does.
import { PrismaPg } from "@prisma/adapter-pg";
import { Prisma, PrismaClient } from "../generated/client/client.ts";
import { env } from "./env.ts";

export { Prisma, PrismaClient };

export function prismaFor(connectionString: string, max?: number): PrismaClient {
  return new PrismaClient({ adapter: new PrismaPg(max ? { connectionString, max } : { connectionString }) });
}

export const prismaWrite = (max?: number) => prismaFor(env.DATABASE_URL, max);
export const prismaRead = () => prismaFor(env.DATABASE_READ_URL);

let counter = 0;
/** A value no other test run uses (emails and tokens are unique). */
export function unique(prefix: string): string {
  counter += 1;
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${counter}`;
}

import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import { testEnv } from "@emprops/testkit";
import pg from "pg";
import { loadConfig, startLoraRegistry } from "../src/index.js";
import { JWT_SECRET, NO_GATEWAY } from "./support/registry.js";

const MAIN = path.resolve(__dirname, "..", "dist", "main.js");

async function sql(url: string, text: string): Promise<pg.QueryResult> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await client.query(text);
  } finally {
    await client.end();
  }
}

const suffix = `${process.pid}_${Date.now().toString(36)}`;
const urlWith = (pathname: string, user?: { name: string; password: string }) => {
  const url = new URL(testEnv().databaseUrl);
  url.pathname = `/${pathname}`;
  if (user) {
    url.username = user.name;
    url.password = user.password;
  }
  return url.toString();
};

describe("the database named in DATABASE_URL", () => {
  const created = `t_created_${suffix}`;
  const refused = `t_refused_${suffix}`;
  const role = { name: `t_nocreatedb_${suffix}`, password: "no-createdb-0123456789" };
  const admin = testEnv().databaseUrl;

  beforeAll(async () => {
    await sql(admin, `CREATE ROLE "${role.name}" LOGIN NOCREATEDB PASSWORD '${role.password}'`);
  });
  afterAll(async () => {
    await sql(admin, `DROP DATABASE IF EXISTS "${created}" WITH (FORCE)`);
    await sql(admin, `DROP ROLE IF EXISTS "${role.name}"`);
  });

  test("is created at start when it does not exist and the role may, then migrated", async () => {
    const registry = await startLoraRegistry(
      loadConfig({
        REGISTRY_PORT: "0",
        DATABASE_URL: urlWith(created),
        JWT_SECRET,
        LOG_LEVEL: "silent",
        NATS_URL: "memory",
        BLOB_GATEWAY_URL: NO_GATEWAY,
      }),
    );
    try {
      const tables = await sql(
        urlWith(created),
        "SELECT count(*)::int AS n FROM information_schema.tables WHERE table_name = 'lora_quota'",
      );
      expect(tables.rows[0]).toEqual({ n: 1 });
    } finally {
      await registry.stop();
    }
  });

  test("a role that may not create it gets a message saying how, and the service exits 1", async () => {
    const run = await promisify(execFile)(process.execPath, [MAIN], {
      env: {
        PATH: process.env.PATH,
        DATABASE_URL: urlWith(refused, role),
        JWT_SECRET,
        NATS_URL: "memory",
        REGISTRY_PORT: "0",
        LOG_LEVEL: "silent",
      },
      timeout: 30_000,
    }).then(
      () => ({ code: 0, stderr: "" }),
      (err: { code: number; stderr: string }) => err,
    );
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(
      `lora-registry: failed to start: Error: database "${refused}" in DATABASE_URL does not exist and could not be created (permission denied to create database); create it, e.g. createdb -h `,
    );
    expect(run.stderr).toContain(`-U ${role.name} ${refused}, or give the role CREATEDB`);
    const exists = await sql(admin, `SELECT 1 FROM pg_database WHERE datname = '${refused}'`);
    expect(exists.rowCount).toBe(0);
  });
});

import { randomUUID } from "node:crypto";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { LoraService } from "@emprops/contracts";
import { bearerInterceptor, createLogger, mintToken } from "@emprops/platform";
import { createTestDatabase, eventually, testNamespace, type TestDatabase, type TestNamespace } from "@emprops/testkit";
import { sql } from "kysely";
import pg from "pg";
import { loadConfig, type RunningRegistry, startLoraRegistry } from "../src/index.js";
import { JWT_SECRET, NO_GATEWAY } from "./support/registry.js";

/**
 * PostgreSQL ending the registry's connections (a restart, a failover, a
 * terminated backend: 57P01) is logged and survived: the next call gets a
 * new connection, and the process never sees an unhandled 'error' event.
 */
describe("the registry when PostgreSQL drops its connections", () => {
  let database: TestDatabase;
  let namespace: TestNamespace;
  let registry: RunningRegistry;
  const logged: { level: string; msg: string; code?: string }[] = [];

  const terminate = async (filter: string, params: unknown[]): Promise<number> => {
    const admin = new pg.Client({ connectionString: database.url });
    admin.on("error", () => {});
    await admin.connect();
    try {
      const { rows } = await admin.query<{ ended: boolean }>(
        `SELECT pg_terminate_backend(pid) AS ended FROM pg_stat_activity WHERE ${filter}`,
        params,
      );
      return rows.filter((r) => r.ended).length;
    } finally {
      await admin.end();
    }
  };
  const lost = () => logged.filter((l) => l.msg.includes("connection lost"));

  beforeAll(async () => {
    [database, namespace] = [await createTestDatabase("pg-loss"), testNamespace("pg-loss")];
    const logger = createLogger("lora-registry", "info", {
      write: (line: string) => void logged.push(JSON.parse(line) as (typeof logged)[number]),
    });
    registry = await startLoraRegistry(
      loadConfig({
        REGISTRY_PORT: "0",
        DATABASE_URL: database.url,
        JWT_SECRET,
        NATS_URL: namespace.natsUrl,
        NATS_NAMESPACE: namespace.namespace,
        BLOB_GATEWAY_URL: NO_GATEWAY,
      }),
      { logger },
    );
  });

  afterAll(async () => {
    await registry?.stop();
    await Promise.all([database?.cleanup(), namespace?.cleanup()]);
  });

  test("idle connections ended by the server: logged once each, and the next call works", async () => {
    const token = await mintToken(JWT_SECRET, { subject: randomUUID() });
    const lora = createClient(
      LoraService,
      createGrpcTransport({ baseUrl: registry.url, interceptors: [bearerInterceptor(token)] }),
    );
    expect((await lora.listLoras({})).totalSize).toBe(0);

    const ended = await terminate("datname = $1 AND pid <> pg_backend_pid()", [database.name]);
    expect(ended).toBeGreaterThan(0);
    await eventually(() => expect(lost().length).toBeGreaterThanOrEqual(ended));
    expect(lost()).toEqual(
      Array.from({ length: ended }, () => expect.objectContaining({ level: "warn", code: "57P01" })),
    );

    expect((await lora.listLoras({})).totalSize).toBe(0);
  });

  test("a connection ended while checked out: its query fails, the process goes on, the pool recovers", async () => {
    const before = lost().length;
    const failure = await registry.ctx.db
      .connection()
      .execute(async (conn) => {
        const { rows } = await sql<{ pid: number }>`SELECT pg_backend_pid() AS pid`.execute(conn);
        expect(await terminate("pid = $1", [rows[0]!.pid])).toBe(1);
        await eventually(() => expect(lost().length).toBeGreaterThan(before));
        await sql`SELECT 1`.execute(conn);
      })
      .then(
        () => undefined,
        (err: unknown) => err,
      );
    expect(failure).toBeInstanceOf(Error);
    expect(lost().length).toBe(before + 1);
    const { rows } = await sql<{ one: number }>`SELECT 1 AS one`.execute(registry.ctx.db);
    expect(rows).toEqual([{ one: 1 }]);
  });
});

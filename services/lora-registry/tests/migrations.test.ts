import { randomUUID } from "node:crypto";
import { createTestDatabase, type TestDatabase } from "@emprops/testkit";
import { Kysely, PostgresDialect, sql } from "kysely";
import pg from "pg";
import { loadConfig, startLoraRegistry } from "../src/index.js";
import { migrateToLatest, migrateToNothing } from "../src/db/migrate.js";
import { JWT_SECRET, NO_GATEWAY } from "./support/registry.js";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { LoraService } from "@emprops/contracts";
import { bearerInterceptor, createLogger, handlePostgresPoolErrors, mintToken } from "@emprops/platform";

let database: TestDatabase;
let db: Kysely<unknown>;

beforeAll(async () => {
  database = await createTestDatabase("migrations");
  const pool = new pg.Pool({ connectionString: database.url, max: 2 });
  db = new Kysely({
    dialect: new PostgresDialect({ pool: handlePostgresPoolErrors(pool, createLogger("migrations-test", "warn")) }),
  });
});

afterAll(async () => {
  await db?.destroy();
  await database?.cleanup();
});

async function tables(): Promise<string[]> {
  const res = await sql<{ t: string }>`
    SELECT table_name AS t FROM information_schema.tables
    WHERE table_schema = 'public' AND table_name NOT LIKE 'kysely_%' ORDER BY 1`.execute(db);
  return res.rows.map((r) => r.t);
}

describe("migrations", () => {
  it("adopt the platform's existing flat_file with its rows, and never drop it on the way down", async () => {
    // flat_file as Prisma made it, with a LoRA from before this service and rows of other kinds.
    await sql`
      CREATE TABLE flat_file (
        id BIGSERIAL PRIMARY KEY, created_at TIMESTAMP(3) DEFAULT CURRENT_TIMESTAMP, url TEXT,
        hidden BOOLEAN DEFAULT false, user_id UUID NOT NULL, name TEXT NOT NULL, gen_in_data JSONB,
        gen_out_data JSONB, mime_type TEXT, rel_id TEXT, rel_type TEXT, tags TEXT[] DEFAULT ARRAY[]::TEXT[])`.execute(
      db,
    );
    const user = randomUUID();
    await sql`
      INSERT INTO flat_file (user_id, name, tags, gen_out_data, created_at) VALUES
        (${user}, 'legacy.safetensors', '{lora}', '{"size_bytes": 456123789, "file_hash": "sha256:abc"}', '2025-11-13 10:00:00'),
        (${user}, 'odd.safetensors', '{lora}', '{"size_bytes": "not a number"}', NULL),
        (${user}, 'photo.png', '{}', NULL, '2025-11-13 10:00:00')`.execute(db);

    await migrateToLatest(db);
    expect(await tables()).toEqual([
      "flat_file",
      "lora_audit_event",
      "lora_outbox",
      "lora_quota",
      "lora_upload",
      "lora_usage",
      "lora_usage_batch",
      "lora_workflow_usage",
      "machine_cache_stats",
      "storage_sweep_report",
    ]);

    const registry = await startLoraRegistry(
      loadConfig({
        REGISTRY_PORT: "0",
        DATABASE_URL: database.url,
        JWT_SECRET,
        LOG_LEVEL: "silent",
        NATS_URL: "memory",
        BLOB_GATEWAY_URL: NO_GATEWAY,
      }),
    );
    try {
      const client = createClient(
        LoraService,
        createGrpcTransport({
          baseUrl: registry.url,
          interceptors: [bearerInterceptor(await mintToken(JWT_SECRET, { subject: user }))],
        }),
      );
      const list = await client.listLoras({});
      expect(list.loras.map((l) => [l.name, l.sizeBytes])).toEqual([
        ["legacy.safetensors", 456123789n],
        ["odd.safetensors", 0n],
      ]);
      expect(list.loras[0]?.createdAt).toBeDefined();
      expect(list.loras[1]?.createdAt).toBeUndefined();
      expect((await client.getQuota({})).quota).toMatchObject({ usedBytes: 456123789n, usedCount: 2 });
    } finally {
      await registry.stop();
    }

    await migrateToNothing(db);
    expect(await tables()).toEqual(["flat_file"]);
    expect((await sql<{ n: string }>`SELECT count(*) AS n FROM flat_file`.execute(db)).rows[0]?.n).toBe("3");
    await sql`DROP TABLE flat_file`.execute(db);
  });

  it("go up, all the way down, and up again on an empty database", async () => {
    await migrateToLatest(db);
    expect(await tables()).toHaveLength(10);
    // One GIN over (user_id, search text) serves search; the name-only trigram index is gone.
    const search = await sql<{ indexdef: string }>`
      SELECT indexdef FROM pg_indexes WHERE indexname IN ('flat_file_lora_search_idx', 'flat_file_lora_name_trgm_idx')`.execute(
      db,
    );
    expect(search.rows.map((r) => r.indexdef)).toEqual([
      expect.stringMatching(/USING gin \(user_id, lora_search_text\(name, tags, gen_out_data\) gin_trgm_ops\)/),
    ]);
    await migrateToNothing(db);
    expect(await tables()).toEqual([]);
    await migrateToLatest(db);
    expect(await tables()).toHaveLength(10);
  });
});

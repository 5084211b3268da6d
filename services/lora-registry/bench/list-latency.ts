/**
 * ListLoras and search latency (name, tags, trigger words, description) for one user's LoRAs with flat_file at
 * 10,000 rows and at 1,000,000 rows (mostly other users' LoRAs and files
 * that are not LoRAs), side by side in one run (a database of each size, the
 * calls taking turns), through the real RPC.
 *
 *   npm run bench -w services/lora-registry            (DATABASE_URL: a server where it may CREATE DATABASE)
 *
 * The scratch databases are dropped at the end. The suite (`npm run bench`,
 * bench/) runs measureListLatency() with the sizes of its mode.
 */
import { randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { type ListLorasRequestSchema, LoraService, LoraSortField, SortOrder } from "@emprops/contracts";
import { bearerInterceptor, createLogger, handlePostgresClientErrors, mintToken } from "@emprops/platform";
import { loadConfig, startLoraRegistry } from "@emprops/lora-registry";
import pg from "pg";
import { percentile } from "../../../bench/src/harness/stats.js";

const SECRET = "bench-secret-0123456789abcdef";
const logger = createLogger("list-latency", "warn");

export interface ListLatencyOptions {
  /** A PostgreSQL server where a scratch database may be created. */
  adminUrl: string;
  /** flat_file rows for the first and the second measurement, e.g. 10,000 and 1,000,000. */
  sizes: [number, number];
  /** The measured user's LoRAs (part of the first size). */
  userLoras: number;
  /** Calls per scenario and size (after 20 warm-up calls). */
  runs: number;
  log?: (line: string) => void;
}

export interface ListLatencyResult {
  /** Per scenario, p50/p95 in ms at each size. */
  scenarios: { label: string; cells: { p50: number; p95: number }[] }[];
  /** EXPLAIN ANALYZE of a search across fields at the larger size, on a keyset page. */
  plan: string;
}

async function seed(db: pg.Client, from: number, to: number, target: string, userLoras: number): Promise<void> {
  // The GIN index of search is rebuilt after the rows are in, as an operator adds it to a large table: row by row
  // (fastupdate off) a million inserts take minutes, and what is measured is reading it. Same definition, read back.
  const gin = await db.query<{ indexdef: string }>(
    "SELECT indexdef FROM pg_indexes WHERE indexname = 'flat_file_lora_search_idx'",
  );
  if (gin.rows[0]) await db.query("DROP INDEX flat_file_lora_search_idx");
  // Row i: the target user's LoRA for i < userLoras; else one of 20,000 other users;
  // 40 % of the others' rows are not LoRAs, 2 % of the LoRAs are hidden (deleted).
  // Each LoRA has a style tag (one of 7), a trigger word (one of 13, plus a rare token)
  // and a description naming a subject (one of 7), as users write them.
  await db.query(
    `INSERT INTO flat_file (user_id, name, created_at, hidden, tags, mime_type, url, gen_out_data)
     SELECT CASE WHEN i < $3 THEN $4::uuid
                 ELSE md5('user' || (i % 20000))::uuid END,
            (ARRAY['anime','portrait','landscape','pixel','ink','neon','retro','clay','sketch','noir'])[1 + i % 10]
              || '_' || substr(md5(i::text), 1, 10)
              || CASE WHEN i >= $3 AND i % 5 < 2 THEN '.png' ELSE '.safetensors' END,
            timestamp '2026-01-01' + make_interval(secs => i),
            (i >= $3 AND i % 50 = 7),
            CASE WHEN i >= $3 AND i % 5 < 2 THEN ARRAY['image']
                 ELSE ARRAY['lora', (ARRAY['style','character','concept','clothing','background','watercolor','photo'])[1 + (i / 10) % 7]] END,
            'application/octet-stream',
            'https://example.invalid/' || i,
            jsonb_build_object('size_bytes', 1000000 + (i::bigint * 7919) % 500000000,
                               'file_hash', 'sha256:' || md5(i::text) || md5(i::text),
                               'validation_status', 'safe', 'format', 'safetensors', 'upload_source', 'api',
                               'lora_metadata', jsonb_build_object(
                                 'base_model', (ARRAY['SDXL','SD1.5','FLUX.1'])[1 + i % 3],
                                 'trigger_words', jsonb_build_array(
                                   (ARRAY['fire','earth','wind','glow','mist','sunset','moonlit','cyber','vintage',
                                          'bold','soft','dark','frost'])[1 + (i / 3) % 13] || ' style',
                                   'tok' || substr(md5('t' || i), 1, 8)),
                                 'description', 'Trained on ' || (i % 100) || ' images of '
                                   || (ARRAY['cats','dogs','cities','forests','oceans','robots','flowers'])[1 + (i / 7) % 7]))
     FROM generate_series($1::int, $2::int - 1) AS i`,
    [from, to, userLoras, target],
  );
  if (gin.rows[0]) {
    await db.query("SET maintenance_work_mem = '256MB'");
    await db.query(gin.rows[0].indexdef);
  }
  await db.query("ANALYZE flat_file");
}

/**
 * Latency of each call, the calls taking turns (and turns in alternating
 * order), so a machine whose load drifts affects every size alike.
 */
async function measureSideBySide(
  calls: (() => Promise<unknown>)[],
  runs: number,
): Promise<{ p50: number; p95: number }[]> {
  for (let i = 0; i < 20; i++) for (const call of calls) await call();
  const times = calls.map(() => [] as number[]);
  for (let i = 0; i < runs; i++) {
    const order = i % 2 === 0 ? calls.map((_, k) => k) : calls.map((_, k) => calls.length - 1 - k);
    for (const k of order) {
      const start = performance.now();
      await calls[k]!();
      times[k]!.push(performance.now() - start);
    }
  }
  return times.map((t) => ({ p50: percentile(t, 50), p95: percentile(t, 95) }));
}

/**
 * Drops a scratch database once the registry's connections have closed:
 * forcing it while a pooled connection is still ending would make that
 * connection fail with nobody left to handle the error.
 */
async function dropDatabase(admin: pg.Client, name: string): Promise<void> {
  for (let attempt = 1; attempt <= 50; attempt++) {
    try {
      await admin.query(`DROP DATABASE IF EXISTS ${name}`);
      return;
    } catch (err) {
      // 55006: still in use.
      if ((err as { code?: string }).code !== "55006") throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
}

/** A scratch database of `size` flat_file rows and a registry on it. */
interface Side {
  name: string;
  db: pg.Client;
  registry: Awaited<ReturnType<typeof startLoraRegistry>>;
  lora: Client<typeof LoraService>;
}

async function openSide(
  admin: pg.Client,
  adminUrl: string,
  size: number,
  opts: { target: string; userLoras: number; log: (line: string) => void },
): Promise<Side> {
  const name = `lora_bench_${Date.now()}_${size}`;
  await admin.query(`CREATE DATABASE ${name}`);
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  const registry = await startLoraRegistry(
    loadConfig({
      DATABASE_URL: url.toString(),
      REGISTRY_PORT: "0",
      JWT_SECRET: SECRET,
      LOG_LEVEL: "warn",
      NATS_URL: "memory",
      BLOB_GATEWAY_URL: "http://127.0.0.1:9",
    }),
  );
  const db = handlePostgresClientErrors(new pg.Client({ connectionString: url.toString() }), logger);
  await db.connect();
  const started = performance.now();
  await seed(db, 0, size, opts.target, opts.userLoras);
  const rows = (await db.query<{ n: string }>("SELECT count(*) AS n FROM flat_file")).rows[0]!.n;
  opts.log(`flat_file: ${rows} rows (seeded in ${((performance.now() - started) / 1000).toFixed(1)} s)`);
  const lora = createClient(
    LoraService,
    createGrpcTransport({
      baseUrl: registry.url,
      interceptors: [bearerInterceptor(await mintToken(SECRET, { subject: opts.target, ttlSeconds: 7200 }))],
    }),
  );
  const check = await lora.listLoras({});
  if (check.totalSize !== opts.userLoras) throw new Error(`expected ${opts.userLoras} LoRAs, got ${check.totalSize}`);
  return { name, db, registry, lora };
}

/**
 * One database per size, seeded the same way, each with its own registry;
 * every scenario is measured on all of them with the calls taking turns.
 */
export async function measureListLatency(opts: ListLatencyOptions): Promise<ListLatencyResult> {
  const { adminUrl, userLoras, runs } = opts;
  const log = opts.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const admin = handlePostgresClientErrors(new pg.Client({ connectionString: adminUrl }), logger);
  await admin.connect();
  const target = randomUUID();
  const sides: Side[] = [];
  try {
    for (const size of opts.sizes) sides.push(await openSide(admin, adminUrl, size, { target, userLoras, log }));
    // One of the target's names, to search for a single row.
    const rare = (
      await sides[0]!.db.query<{ s: string }>("SELECT substr(md5($1::text), 1, 10) AS s", [
        String(Math.floor(userLoras / 2)),
      ])
    ).rows[0]!.s;
    // A trigger token of one of the target's LoRAs: a search matching one row through a trigger word.
    const rareToken = (
      await sides[0]!.db.query<{ s: string }>("SELECT 'tok' || substr(md5('t' || $1::text), 1, 8) AS s", [
        String(Math.floor(userLoras / 3)),
      ])
    ).rows[0]!.s;
    type Request = MessageInitShape<typeof ListLorasRequestSchema>;
    const scenarios: [string, (lora: Client<typeof LoraService>) => Promise<Request>][] = [
      ["list, newest first, page 1 (50)", async () => ({})],
      [
        "list, newest first, page 11 (token)",
        async (lora) => {
          let pageToken = "";
          for (let i = 0; i < 10; i++) pageToken = (await lora.listLoras({ pageToken })).nextPageToken;
          return { pageToken };
        },
      ],
      ["list, by name A→Z, page 1", async () => ({ sort: LoraSortField.NAME, order: SortOrder.ASC })],
      ["list, largest first, page 1", async () => ({ sort: LoraSortField.SIZE, order: SortOrder.DESC })],
      ["search 'anime' (10 % of the user's)", async () => ({ search: "anime" })],
      [
        "search 'ANIME', by name, page 2",
        async (lora) => {
          const first = await lora.listLoras({ search: "ANIME", sort: LoraSortField.NAME, pageSize: 20 });
          return { search: "ANIME", sort: LoraSortField.NAME, pageSize: 20, pageToken: first.nextPageToken };
        },
      ],
      [`search '${rare}' (one row)`, async () => ({ search: rare })],
      ["search with no match", async () => ({ search: "zzzz-nothing" })],
      // Across fields: a tag, a trigger word, a description word, a token in one trigger word only.
      ["search tag 'watercolor' (1/7 of the user's)", async () => ({ search: "watercolor" })],
      ["search trigger word 'moonlit' (1/13)", async () => ({ search: "moonlit" })],
      [
        "search description 'forests', by name, page 2",
        async (lora) => {
          const first = await lora.listLoras({ search: "forests", sort: LoraSortField.NAME, pageSize: 20 });
          return { search: "forests", sort: LoraSortField.NAME, pageSize: 20, pageToken: first.nextPageToken };
        },
      ],
      [`search trigger token '${rareToken}' (one row)`, async () => ({ search: rareToken })],
      ["search 'style' (every LoRA: a trigger word of all)", async () => ({ search: "style" })],
      ["search 'moonlit', base model SDXL", async () => ({ search: "moonlit", baseModel: "SDXL" })],
      [
        "unused longest first (last use, ascending)",
        async () => ({ sort: LoraSortField.LAST_USED, order: SortOrder.ASC }),
      ],
    ];
    const results: ListLatencyResult["scenarios"] = [];
    for (const [label, request] of scenarios) {
      // Page tokens belong to one database: each side builds its own request.
      const calls = await Promise.all(
        sides.map(async (side) => {
          const req = await request(side.lora);
          return () => side.lora.listLoras(req);
        }),
      );
      results.push({ label, cells: await measureSideBySide(calls, runs) });
    }
    // The plan the search across fields gets at the larger size, in the keyset order of page 2.
    const plan = await sides[sides.length - 1]!.db.query(
      `EXPLAIN (ANALYZE, COSTS OFF) SELECT id FROM flat_file f
       WHERE f.user_id = $1 AND 'lora' = ANY (f.tags) AND f.hidden IS NOT TRUE
         AND lora_search_text(f.name, f.tags, f.gen_out_data) LIKE '%moonlit%'
         AND (coalesce(f.created_at, 'epoch'::timestamp), f.id) < ('2026-01-01 00:10:00'::timestamp, 1000000)
       ORDER BY coalesce(f.created_at, 'epoch'::timestamp) DESC, f.id DESC LIMIT 51`,
      [target],
    );
    return {
      scenarios: results,
      plan: plan.rows.map((r: Record<string, string>) => r["QUERY PLAN"]).join("\n"),
    };
  } finally {
    for (const side of sides) {
      await side.db.end();
      await side.registry.stop();
      await dropDatabase(admin, side.name);
    }
    await admin.end();
  }
}

async function main(): Promise<void> {
  const runs = Number(process.env.BENCH_RUNS ?? 200);
  const userLoras = 1_000;
  const result = await measureListLatency({
    adminUrl: process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres",
    sizes: [10_000, 1_000_000],
    userLoras,
    runs,
  });
  const cell = (c: { p50: number; p95: number } | undefined) => (c ? `${c.p50.toFixed(2)} / ${c.p95.toFixed(2)}` : "");
  const width = Math.max(...result.scenarios.map((s) => s.label.length));
  const out = [
    `ListLoras through gRPC, one user with ${userLoras} LoRAs, ${runs} calls each; p50 / p95 in ms`,
    `${"".padEnd(width)}  ${"10,000 rows".padEnd(16)}  1,000,000 rows`,
    ...result.scenarios.map((s) => `${s.label.padEnd(width)}  ${cell(s.cells[0]).padEnd(16)}  ${cell(s.cells[1])}`),
  ];
  process.stdout.write(`${out.join("\n")}\n\n${result.plan}\n`);
}

if (require.main === module) {
  main().catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
}

import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { errorMetadata, errorReason, ManualClock } from "@emprops/platform";
import { registerModel, getModel, touchModel, USER_LORA } from "../src/db/models.js";
import { type Db, openDatabase, SYNC_BUSY_TIMEOUT_MS } from "../src/db/open-database.js";
import { parsePythonIso, toPythonIso } from "../src/db/python-time.js";
import { readSettings, seedSettings } from "../src/db/settings.js";
import { writeTransaction } from "../src/db/write-transaction.js";
import { python, pythonLockHolder } from "./support/python.js";

let dir: string;
const opened: Db[] = [];
const open = (file: string) => {
  const db = openDatabase(file);
  opened.push(db);
  return db;
};

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "mc-db-"));
});
afterAll(async () => {
  for (const db of opened) if (db.open) db.close();
  await fs.rm(dir, { recursive: true, force: true });
});

test("models and settings are the specification's tables, column for column", () => {
  const db = open(path.join(dir, "schema.db"));
  const columns = db
    .prepare("SELECT name, type, \"notnull\" AS not_null, dflt_value, pk FROM pragma_table_info('models')")
    .all();
  expect(columns).toEqual([
    { name: "id", type: "INTEGER", not_null: 0, dflt_value: null, pk: 1 },
    { name: "path", type: "TEXT", not_null: 1, dflt_value: null, pk: 0 },
    { name: "model_type", type: "TEXT", not_null: 1, dflt_value: null, pk: 0 },
    { name: "filename", type: "TEXT", not_null: 1, dflt_value: null, pk: 0 },
    { name: "size_bytes", type: "INTEGER", not_null: 1, dflt_value: null, pk: 0 },
    { name: "last_used", type: "TEXT", not_null: 1, dflt_value: null, pk: 0 },
    { name: "use_count", type: "INTEGER", not_null: 0, dflt_value: "0", pk: 0 },
    { name: "download_date", type: "TEXT", not_null: 1, dflt_value: null, pk: 0 },
    { name: "protected", type: "INTEGER", not_null: 0, dflt_value: "0", pk: 0 },
    { name: "is_ignore", type: "INTEGER", not_null: 0, dflt_value: "0", pk: 0 },
  ]);
  const sql = (db.prepare("SELECT sql FROM sqlite_master WHERE name = 'models'").get() as { sql: string }).sql;
  expect(sql).toMatch(/id INTEGER PRIMARY KEY AUTOINCREMENT/);
  expect(sql).toMatch(/path TEXT NOT NULL UNIQUE/);
  expect(db.prepare("SELECT name, type, \"notnull\" AS not_null, pk FROM pragma_table_info('settings')").all()).toEqual(
    [
      { name: "key", type: "TEXT", not_null: 0, pk: 1 },
      { name: "value", type: "TEXT", not_null: 1, pk: 0 },
    ],
  );
  expect(db.pragma("journal_mode", { simple: true })).toBe("wal");
  // SQLite waits for a lock on the event loop only this long; writeTransaction waits longer asynchronously.
  expect(db.pragma("busy_timeout", { simple: true })).toBe(SYNC_BUSY_TIMEOUT_MS);
  expect(SYNC_BUSY_TIMEOUT_MS).toBeLessThanOrEqual(50);
});

test("settings are seeded once and the environment overrides them", async () => {
  const file = path.join(dir, "settings.db");
  const db = open(file);
  await seedSettings(db, {});
  const rows = () =>
    Object.fromEntries(
      (db.prepare("SELECT key, value FROM settings").all() as { key: string; value: string }[]).map((r) => [
        r.key,
        r.value,
      ]),
    );
  expect(rows()).toEqual({
    lora_cache_max_gb: "50",
    lora_max_age_days: "7",
    lora_eviction_enabled: "true",
    min_free_space_gb: "10",
    lora_eviction_policy: "lru",
  });
  db.prepare("UPDATE settings SET value = '20' WHERE key = 'lora_cache_max_gb'").run();
  await seedSettings(db, { loraMaxAgeDays: 3, loraEvictionEnabled: false, loraEvictionPolicy: "gdsf" });
  expect(rows()).toMatchObject({
    lora_cache_max_gb: "20",
    lora_max_age_days: "3",
    lora_eviction_enabled: "false",
    lora_eviction_policy: "gdsf",
  });
  expect(readSettings(db)).toEqual({
    loraCacheMaxBytes: 20 * 1024 ** 3,
    loraMaxAgeDays: 3,
    evictionEnabled: false,
    minFreeBytes: 10 * 1024 ** 3,
    evictionPolicy: "gdsf",
  });
});

test("a setting that cannot be read is an error naming it, not a default", async () => {
  const db = open(path.join(dir, "bad-setting.db"));
  await seedSettings(db, {});
  db.prepare("UPDATE settings SET value = 'lots' WHERE key = 'lora_cache_max_gb'").run();
  expect(() => readSettings(db)).toThrow(/lora_cache_max_gb is "lots"/);
  db.prepare("UPDATE settings SET value = '20' WHERE key = 'lora_cache_max_gb'").run();
  db.prepare("UPDATE settings SET value = 'fifo' WHERE key = 'lora_eviction_policy'").run();
  expect(() => readSettings(db)).toThrow(/lora_eviction_policy is "fifo"; it must be lru or gdsf/);
});

test("timestamps are Python isoformat text both ways", () => {
  const clock = new ManualClock(new Date(2025, 10, 13, 12, 0, 5, 250));
  expect(toPythonIso(clock.now())).toBe("2025-11-13T12:00:05.250000");
  expect(parsePythonIso("2025-11-13T12:00:05.250000")?.getTime()).toBe(clock.now().getTime());
  expect(parsePythonIso("2025-11-13T12:00:05")?.getTime()).toBe(new Date(2025, 10, 13, 12, 0, 5).getTime());
  expect(parsePythonIso("2025-11-13T12:00:05+00:00")?.toISOString()).toBe("2025-11-13T12:00:05.000Z");
  expect(parsePythonIso("yesterday")).toBeUndefined();
});

test("the node package's Python code reads our rows and its writes land beside ours", async () => {
  const file = path.join(dir, "python.db");
  const db = open(file);
  await seedSettings(db, {});
  const lora = path.join(dir, "models", "loras", "users", "u", "1-style.safetensors");
  registerModel(db, {
    path: lora,
    modelType: USER_LORA,
    filename: "1-style.safetensors",
    sizeBytes: 1234,
    now: toPythonIso(new Date()),
    useCount: 1,
  });
  const out = await python(
    `
import sqlite3, sys, json
from datetime import datetime
conn = sqlite3.connect(sys.argv[1])
conn.row_factory = sqlite3.Row
rows = [dict(r) for r in conn.execute('SELECT * FROM models WHERE protected = 0 AND is_ignore = 0 ORDER BY last_used ASC')]
for r in rows:
    datetime.fromisoformat(r['last_used']); datetime.fromisoformat(r['download_date'])
conn.execute('UPDATE models SET last_used = ?, use_count = use_count + 1 WHERE path = ?', (datetime.now().isoformat(), sys.argv[2]))
now = datetime.now().isoformat()
conn.execute('INSERT INTO models (path, model_type, filename, size_bytes, last_used, use_count, download_date, protected, is_ignore) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)', ('/x/models/checkpoints/a.safetensors', 'checkpoints', 'a.safetensors', 5, now, 1, now, 1, 1))
conn.commit()
print(json.dumps({'rows': rows, 'min_free': conn.execute("SELECT value FROM settings WHERE key = 'min_free_space_gb'").fetchone()[0]}))
`,
    file,
    lora,
  );
  const seen = JSON.parse(out) as {
    rows: { path: string; model_type: string; size_bytes: number }[];
    min_free: string;
  };
  expect(seen.min_free).toBe("10");
  expect(seen.rows).toEqual([expect.objectContaining({ path: lora, model_type: "user_lora", size_bytes: 1234 })]);
  const row = getModel(db, lora);
  expect(row?.use_count).toBe(2);
  expect(parsePythonIso(row?.last_used)).toBeInstanceOf(Date);
  expect(getModel(db, "/x/models/checkpoints/a.safetensors")).toMatchObject({ protected: 1, is_ignore: 1 });
});

test("our writes wait for a Python writer holding the lock, without blocking the event loop", async () => {
  const file = path.join(dir, "busy.db");
  const db = open(file);
  const lora = path.join(dir, "busy.safetensors");
  registerModel(db, {
    path: lora,
    modelType: USER_LORA,
    filename: "busy.safetensors",
    sizeBytes: 1,
    now: toPythonIso(new Date()),
    useCount: 0,
  });
  const writer = await pythonLockHolder(file, `UPDATE models SET use_count = 100 WHERE path = '${lora}'`);
  let written = false;
  const write = writeTransaction(db, () => touchModel(db, lora, toPythonIso(new Date()))).then(() => (written = true));
  // Timers still fire while the write waits: it waits between attempts, not inside SQLite.
  for (let tick = 0; tick < 5; tick++) await new Promise((r) => setTimeout(r, 10));
  expect(written).toBe(false);
  await writer.release();
  await write;
  expect(getModel(db, lora)?.use_count).toBe(101);
});

test("a write that cannot get the lock within the lock wait fails with UNAVAILABLE / DEPENDENCY_UNAVAILABLE", async () => {
  const file = path.join(dir, "held.db");
  open(file).close();
  const db = openDatabase(file, { lockWaitMs: 200 });
  opened.push(db);
  const writer = await pythonLockHolder(file);
  try {
    const err = await writeTransaction(db, () => touchModel(db, "/nowhere", toPythonIso(new Date()))).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.Unavailable);
    expect(errorReason(err)).toBe("DEPENDENCY_UNAVAILABLE");
    expect(errorMetadata(err)).toMatchObject({ dependency: "model_cache.db" });
    // Reads go on beside the writer (WAL).
    expect(getModel(db, "/nowhere")).toBeUndefined();
  } finally {
    await writer.release();
  }
});

test("a database the node package made (older schema, no is_ignore) is adopted as it is", async () => {
  const file = path.join(dir, "legacy.db");
  await python(
    `
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
conn.execute('CREATE TABLE models (id INTEGER PRIMARY KEY, path TEXT UNIQUE, model_type TEXT, filename TEXT, size_bytes INTEGER, last_used TIMESTAMP, use_count INTEGER DEFAULT 0, download_date TIMESTAMP, protected BOOLEAN DEFAULT 0)')
conn.execute('CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT)')
conn.execute("INSERT INTO settings VALUES ('min_free_space_gb', '25')")
conn.execute("INSERT INTO models (path, model_type, filename, size_bytes, last_used, download_date) VALUES ('/w/models/loras/old.safetensors', 'loras', 'old.safetensors', 9, '2025-05-13T17:10:27.123456', '2025-05-13T17:10:27.123456')")
conn.commit()
`,
    file,
  );
  const db = open(file);
  await seedSettings(db, {});
  expect(readSettings(db).minFreeBytes).toBe(25 * 1024 ** 3);
  expect(getModel(db, "/w/models/loras/old.safetensors")).toMatchObject({ model_type: "loras", is_ignore: 0 });
  expect(parsePythonIso(getModel(db, "/w/models/loras/old.safetensors")?.last_used)).toBeInstanceOf(Date);
});

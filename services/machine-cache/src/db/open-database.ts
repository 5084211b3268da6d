import fs from "node:fs";
import path from "node:path";
import Database from "better-sqlite3";

export type Db = Database.Database;

/**
 * The node package's tables exactly as the specification gives them. CREATE
 * IF NOT EXISTS: a database the node package already made keeps its own
 * (compatible) definitions.
 */
const COMPATIBLE_SCHEMA = `
CREATE TABLE IF NOT EXISTS models (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  path TEXT NOT NULL UNIQUE,
  model_type TEXT NOT NULL,
  filename TEXT NOT NULL,
  size_bytes INTEGER NOT NULL,
  last_used TEXT NOT NULL,
  use_count INTEGER DEFAULT 0,
  download_date TEXT NOT NULL,
  protected INTEGER DEFAULT 0,
  is_ignore INTEGER DEFAULT 0
);
CREATE TABLE IF NOT EXISTS settings (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
`;

/** This service's own tables, beside the compatible ones; all prefixed lora_. */
const MIGRATIONS: string[] = [
  `
  -- What a cached LoRA file is: the reference it answers, its owner and checksum.
  CREATE TABLE lora_files (
    path TEXT PRIMARY KEY,
    source TEXT NOT NULL CHECK (source IN ('user', 'shared')),
    identifier TEXT NOT NULL,
    user_id TEXT NOT NULL DEFAULT '',
    file_name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    validated_at_ms INTEGER NOT NULL,
    UNIQUE (source, user_id, identifier)
  );
  -- Hits, misses, downloads and evictions, for the 24-hour statistics.
  CREATE TABLE lora_cache_events (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('hit', 'miss', 'download', 'eviction')),
    bytes INTEGER NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT '',
    path TEXT NOT NULL DEFAULT ''
  );
  CREATE INDEX lora_cache_events_at ON lora_cache_events (at_ms, kind);
  -- Uses waiting to be published; batch_id is fixed before the first publish so a retry is de-duplicated.
  CREATE TABLE lora_usage_outbox (
    id INTEGER PRIMARY KEY,
    lora_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    workflow_id TEXT NOT NULL,
    workflow_name TEXT NOT NULL,
    used_at_ms INTEGER NOT NULL,
    batch_id TEXT
  );
  CREATE INDEX lora_usage_outbox_batch ON lora_usage_outbox (batch_id);
  -- LoRAs deleted in the registry: a download finishing after the deletion is discarded.
  CREATE TABLE lora_tombstones (
    user_id TEXT NOT NULL,
    lora_id TEXT NOT NULL,
    deleted_at_ms INTEGER NOT NULL,
    PRIMARY KEY (user_id, lora_id)
  );
  `,
  `
  -- GDSF's inflation value L over time (it only grows): a row's priority is L as of its last_used plus its
  -- frequency times cost per byte, so uses recorded by anyone (the node package too) need no extra write.
  CREATE TABLE lora_gdsf_inflation (
    at_ms INTEGER PRIMARY KEY,
    value REAL NOT NULL
  );
  `,
  `
  -- One copy per content: paths whose files are hard links of one file share its content_id (the file's
  -- device:inode, set at registration and refreshed by start-up reconciliation; '' until then, which counts
  -- as a content of its own). Same sha256 and size find a file to link a new reference to.
  ALTER TABLE lora_files ADD COLUMN content_id TEXT NOT NULL DEFAULT '';
  CREATE INDEX lora_files_content ON lora_files (content_id);
  CREATE INDEX lora_files_sha256 ON lora_files (sha256, size_bytes);
  `,
];

/** How long a write waits for another process's lock, in all, when nothing else is said (milliseconds). */
export const DEFAULT_LOCK_WAIT_MS = 5_000;

/**
 * How long SQLite itself may wait for a lock on the event loop. Longer waits
 * are asynchronous retries (writeTransaction), so no call stalls the
 * process: SQLite's busy handler sleeps 1, 2, 5, 10 ms… up to this.
 */
export const SYNC_BUSY_TIMEOUT_MS = 20;

/** Lock waits of open databases (a Db is better-sqlite3's own handle). */
const lockWaits = new WeakMap<Db, number>();

export interface OpenDatabaseOptions {
  /** How long a write waits, asynchronously, for another process's lock before failing retriably. */
  lockWaitMs?: number;
}

/**
 * Opens (or creates) model_cache.db: WAL so the node package's readers never
 * wait for us and ours never wait for its writers. Creating and migrating the
 * schema at start-up may wait up to 10 s for a lock; from then on SQLite
 * waits at most SYNC_BUSY_TIMEOUT_MS on the event loop and writes go through
 * writeTransaction, which retries asynchronously for up to `lockWaitMs`.
 */
export function openDatabase(file: string, opts: OpenDatabaseOptions = {}): Db {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const db = new Database(file);
  db.pragma("busy_timeout = 10000");
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = NORMAL");
  db.exec(COMPATIBLE_SCHEMA);
  addMissingColumns(db);
  migrate(db);
  db.pragma(`busy_timeout = ${SYNC_BUSY_TIMEOUT_MS}`);
  lockWaits.set(db, opts.lockWaitMs ?? DEFAULT_LOCK_WAIT_MS);
  return db;
}

/** The lock wait `db` was opened with. */
export function lockWaitOf(db: Db): number {
  return lockWaits.get(db) ?? DEFAULT_LOCK_WAIT_MS;
}

/** Databases made by older node packages lack is_ignore. */
function addMissingColumns(db: Db): void {
  const columns = db.prepare<[], { name: string }>("PRAGMA table_info(models)").all();
  if (!columns.some((c) => c.name === "is_ignore"))
    db.exec("ALTER TABLE models ADD COLUMN is_ignore INTEGER DEFAULT 0");
}

function migrate(db: Db): void {
  const current = db.pragma("user_version", { simple: true }) as number;
  for (let version = current; version < MIGRATIONS.length; version++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[version] as string);
      db.pragma(`user_version = ${version + 1}`);
    }).immediate();
  }
}

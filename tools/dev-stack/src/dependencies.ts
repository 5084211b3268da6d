import { execFileSync, fork } from "node:child_process";
import path from "node:path";
import type { Logger } from "@emprops/platform";

/** What dependency-host.ts is asked to start, each in its own directory. */
export interface DependencyRequest {
  postgres?: { dataDir: string; database: string };
  azurite?: { dataDir: string };
  nats?: { dataDir: string };
}

/** What dependency-host.ts answers over its IPC channel. */
export type HostMessage =
  { ready: { databaseUrl?: string; azureConnectionString?: string; natsUrl?: string } } | { failed: string };

export interface Dependencies {
  databaseUrl: string;
  azureConnectionString: string;
  /** A nats:// URL, or "memory" when there is no server (development only). */
  natsUrl: string;
  /** Stops the embedded dependencies (after the services that use them) and waits until they are gone. */
  stop(): Promise<void>;
}

const STOP_TIMEOUT_MS = 30_000;

/**
 * The dependencies `npm start` needs: from the environment when set
 * (DATABASE_URL, AZURE_STORAGE_CONNECTION_STRING, NATS_URL), else embedded,
 * with their data under `dataDir`. The embedded ones run in a detached
 * child (a session of its own, see dependency-host.ts), so a terminal's
 * Ctrl-C does not stop them under the services that still use them.
 */
export async function startDependencies(opts: {
  dataDir: string;
  database: string;
  env: NodeJS.ProcessEnv;
  logger: Logger;
}): Promise<Dependencies> {
  const { env, dataDir } = opts;
  const request: DependencyRequest = {};
  if (!env.DATABASE_URL) request.postgres = { dataDir: path.join(dataDir, "postgres"), database: opts.database };
  if (!env.AZURE_STORAGE_CONNECTION_STRING) request.azurite = { dataDir: path.join(dataDir, "azurite") };
  if (!env.NATS_URL && onPath("nats-server")) request.nats = { dataDir: path.join(dataDir, "nats") };
  const fromEnv = {
    databaseUrl: env.DATABASE_URL ?? "",
    azureConnectionString: env.AZURE_STORAGE_CONNECTION_STRING ?? "",
    natsUrl: env.NATS_URL ?? "memory",
  };
  if (!request.postgres && !request.azurite && !request.nats) return { ...fromEnv, stop: async () => {} };

  const host = fork(path.join(__dirname, "dependency-host.js"), [JSON.stringify(request)], {
    detached: true,
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  const exited = new Promise<void>((resolve) => host.once("exit", () => resolve()));
  const stop = async () => {
    if (host.exitCode !== null || host.signalCode !== null) return;
    // Disconnecting is the stop request; the host stops PostgreSQL, Azurite and NATS, then exits.
    if (host.connected) host.disconnect();
    let timer: NodeJS.Timeout | undefined;
    const late = await Promise.race([
      exited.then(() => false),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), STOP_TIMEOUT_MS))),
    ]);
    clearTimeout(timer);
    if (late && host.pid !== undefined) {
      opts.logger.warn({ pid: host.pid }, "the dependencies did not stop in time; killing them");
      killGroup(host.pid);
      await exited;
    }
  };
  const answer = await new Promise<HostMessage>((resolve) => {
    host.once("message", (message) => resolve(message as HostMessage));
    host.once("exit", (code, signal) => resolve({ failed: `the dependency host exited (${signal ?? code})` }));
  });
  if ("failed" in answer) {
    await stop();
    throw new Error(`the embedded dependencies did not start: ${answer.failed}`);
  }
  return {
    databaseUrl: answer.ready.databaseUrl ?? fromEnv.databaseUrl,
    azureConnectionString: answer.ready.azureConnectionString ?? fromEnv.azureConnectionString,
    natsUrl: answer.ready.natsUrl ?? fromEnv.natsUrl,
    stop,
  };
}

/** SIGKILL to the host's whole process group (it leads it: detached). */
function killGroup(pid: number): void {
  try {
    process.kill(-pid, "SIGKILL");
  } catch {
    // Already gone.
  }
}

function onPath(command: string): boolean {
  try {
    execFileSync("sh", ["-c", `command -v ${command}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

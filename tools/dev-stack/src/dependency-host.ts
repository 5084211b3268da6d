/**
 * The dev stack's embedded dependencies (PostgreSQL, Azurite, nats-server),
 * run by `npm start` as a detached child: a session of its own, so the
 * SIGINT a terminal sends to its foreground process group on Ctrl-C reaches
 * the services but not the databases under them. The dev stack stops its
 * services first, then disconnects; on that (or when the dev stack dies and
 * the IPC channel closes) this process stops the dependencies and exits.
 */
import pg from "pg";
import { createLogger, handlePostgresClientErrors } from "@emprops/platform";
import { startAzurite, startNatsServer, startPostgres } from "@emprops/testkit";
import type { DependencyRequest, HostMessage } from "./dependencies.js";

const logger = createLogger("dev-stack", process.env.LOG_LEVEL ?? "info");

async function main(): Promise<void> {
  const request = JSON.parse(process.argv[2] ?? "{}") as DependencyRequest;
  const started: { stop(): Promise<void> }[] = [];
  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      for (const s of started.splice(0).reverse()) {
        await s.stop().catch((err: unknown) => logger.error({ err }, "a dependency did not stop cleanly"));
      }
    })());
  const exitAfterStop = (code: number) => void stop().then(() => process.exit(code));
  process.once("disconnect", () => exitAfterStop(0));
  process.once("SIGTERM", () => exitAfterStop(0));
  process.once("SIGINT", () => exitAfterStop(0));

  try {
    const [databaseUrl, azureConnectionString, natsUrl] = await Promise.all([
      request.postgres
        ? startPostgres({ dataDir: request.postgres.dataDir, persistent: true }).then((server) => {
            started.push(server);
            return ensureDatabase(server.url, request.postgres!.database);
          })
        : undefined,
      request.azurite
        ? startAzurite({ dataDir: request.azurite.dataDir, persistent: true }).then((azurite) => {
            started.push(azurite);
            return azurite.connectionString;
          })
        : undefined,
      request.nats
        ? startNatsServer({ dataDir: request.nats.dataDir, persistent: true }).then((nats) => {
            started.push(nats);
            return nats.url;
          })
        : undefined,
    ]);
    send({ ready: { databaseUrl, azureConnectionString, natsUrl } });
  } catch (err) {
    send({ failed: err instanceof Error ? (err.stack ?? err.message) : String(err) });
    await stop();
    process.exit(1);
  }
}

function send(message: HostMessage): void {
  process.send?.(message);
}

async function ensureDatabase(adminUrl: string, name: string): Promise<string> {
  const client = handlePostgresClientErrors(new pg.Client({ connectionString: adminUrl }), logger);
  await client.connect();
  try {
    const { rowCount } = await client.query("SELECT 1 FROM pg_database WHERE datname = $1", [name]);
    if (!rowCount) await client.query(`CREATE DATABASE ${name}`);
  } finally {
    await client.end();
  }
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

void main();

import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import path from "node:path";
import pg from "pg";
import {
  createLogger,
  maxTokenLifetimeSeconds,
  mintToken,
  parseEnv,
  type Role,
  tokenEnvShape,
  tokenLifetimeLimits,
} from "@emprops/platform";
import { startAzurite, startNatsServer, startPostgres } from "@emprops/testkit";
import { startStack } from "./stack.js";
import { defaultStudioDir, startStudioServer } from "./studio-server.js";

const DEV_USER_ID = "00000000-0000-4000-8000-000000000001";
const DATABASE_NAME = "lora";

interface Stoppable {
  stop(): Promise<void>;
}

/**
 * `npm start`: the whole system on one machine. Dependencies come from the
 * environment when set, else embedded (PostgreSQL, Azurite, nats-server),
 * with their data in .data/ so it survives a restart.
 */
async function main(): Promise<void> {
  const log = createLogger("dev-stack", process.env.LOG_LEVEL ?? "info");
  const dataDir = path.resolve(process.env.EMPROPS_DATA_DIR ?? ".data");
  mkdirSync(dataDir, { recursive: true });
  const owned: Stoppable[] = [];
  let stopping = false;
  const stopAll = async (code: number) => {
    if (stopping) return;
    stopping = true;
    for (const s of owned.reverse()) await s.stop().catch((err: unknown) => log.error({ err }, "stop failed"));
    process.exit(code);
  };
  process.once("SIGINT", () => void stopAll(0));
  process.once("SIGTERM", () => void stopAll(0));

  try {
    const jwtSecret = process.env.JWT_SECRET ?? persistentSecret(path.join(dataDir, "jwt-secret"));

    const [databaseUrl, azureConnectionString, natsUrl] = await Promise.all([
      (async () => {
        if (process.env.DATABASE_URL) return process.env.DATABASE_URL;
        const pgServer = await startPostgres({ dataDir: path.join(dataDir, "postgres"), persistent: true });
        owned.push(pgServer);
        return ensureDatabase(pgServer.url, DATABASE_NAME);
      })(),
      (async () => {
        if (process.env.AZURE_STORAGE_CONNECTION_STRING) return process.env.AZURE_STORAGE_CONNECTION_STRING;
        const azurite = await startAzurite({ dataDir: path.join(dataDir, "azurite"), persistent: true });
        owned.push(azurite);
        return azurite.connectionString;
      })(),
      (async () => {
        if (process.env.NATS_URL) return process.env.NATS_URL;
        if (!onPath("nats-server")) return "memory";
        const nats = await startNatsServer({ dataDir: path.join(dataDir, "nats"), persistent: true });
        owned.push(nats);
        return nats.url;
      })(),
    ]);

    // The Studio page's origins: the registry and Blob Storage allow them (CORS) unless told otherwise.
    const studioPort = Number(process.env.STUDIO_PORT ?? 5173);
    const studioOrigins = `http://127.0.0.1:${studioPort},http://localhost:${studioPort}`;
    const stack = await startStack({
      databaseUrl,
      azureConnectionString,
      natsUrl,
      jwtSecret,
      machineDir: path.join(dataDir, "machine"),
      ports: { registry: 50051, gateway: 50052, machineCache: 50053 },
      logLevel: process.env.LOG_LEVEL ?? "info",
      env: {
        registry: { CORS_ALLOWED_ORIGINS: studioOrigins, ...process.env },
        gateway: { STORAGE_CORS_ALLOWED_ORIGINS: studioOrigins, ...process.env },
        machineCache: process.env,
      },
    });
    owned.push(stack);
    const studio = await startStudioServer({
      dir: defaultStudioDir(),
      port: studioPort,
      config: { registryUrl: stack.registry.url },
    }).catch((err: unknown) => {
      log.warn({ err }, "the Studio page is not served");
      return undefined;
    });
    if (studio) owned.push(studio);

    // A day, or less where the services' limit for the role is shorter.
    const limits = tokenLifetimeLimits(parseEnv(tokenEnvShape));
    const devToken = (subject: string, roles: Role[]) =>
      mintToken(jwtSecret, { subject, roles, ttlSeconds: Math.min(24 * 3600, maxTokenLifetimeSeconds(roles, limits)) });
    const tokens = {
      user: await devToken(DEV_USER_ID, []),
      admin: await devToken("dev-admin", ["admin"]),
      machine: await devToken("local-machine", ["machine"]),
    };
    const lines = [
      "",
      `  lora-registry   ${stack.registry.url}   (LoraService, LoraAdminService, LoraResolverService)`,
      `  blob-gateway    ${stack.gateway.url}   (BlobGatewayService)`,
      `  machine-cache   ${stack.machineCache.url}   (MachineCacheService; LoRAs in ${path.join(dataDir, "machine", "models", "loras")})`,
      `  Studio page     ${studio ? `${studio.url}   (LoRA library; the sign-in link is below)` : "not built: run npm run build"}`,
      `  PostgreSQL      ${redactUrl(databaseUrl)}`,
      `  NATS            ${natsUrl}`,
      `  data            ${dataDir}`,
      "",
      `  dev user ${DEV_USER_ID} token:`,
      `    ${tokens.user}`,
      ...(studio ? [`  Studio sign-in: ${studio.url}#token=${tokens.user}`] : []),
      `  admin token:    ${tokens.admin}`,
      `  machine token:  ${tokens.machine}`,
      "",
      "ready: lora-registry, blob-gateway and machine-cache are serving (Ctrl-C stops everything)",
      "",
    ];
    process.stdout.write(lines.join("\n"));
  } catch (err) {
    log.error({ err }, "start-up failed");
    await stopAll(1);
  }
}

function persistentSecret(file: string): string {
  if (existsSync(file)) return readFileSync(file, "utf8").trim();
  const secret = randomBytes(32).toString("base64url");
  writeFileSync(file, secret + "\n", { mode: 0o600 });
  return secret;
}

async function ensureDatabase(adminUrl: string, name: string): Promise<string> {
  const client = new pg.Client({ connectionString: adminUrl });
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

function onPath(command: string): boolean {
  try {
    execFileSync("sh", ["-c", `command -v ${command}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

function redactUrl(url: string): string {
  const u = new URL(url);
  if (u.password) u.password = "***";
  return u.toString();
}

void main();

import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import {
  createLogger,
  maxTokenLifetimeSeconds,
  mintToken,
  parseEnv,
  type Role,
  tokenEnvShape,
  tokenLifetimeLimits,
} from "@emprops/platform";
import { startDependencies } from "./dependencies.js";
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
 * with their data in .data/ so it survives a restart. Ctrl-C (SIGINT) or
 * SIGTERM stops the Studio page and the services, then the dependencies.
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
    // Last started, first stopped: the Studio page and the services, then their dependencies.
    for (let s = owned.pop(); s; s = owned.pop()) {
      await s.stop().catch((err: unknown) => log.error({ err }, "stop failed"));
    }
    log.info("dev-stack stopped");
    process.exit(code);
  };
  // `npm start` forwards the terminal's SIGINT, so one Ctrl-C may arrive twice: later ones are ignored.
  process.on("SIGINT", () => void stopAll(0));
  process.on("SIGTERM", () => void stopAll(0));

  try {
    const jwtSecret = process.env.JWT_SECRET ?? persistentSecret(path.join(dataDir, "jwt-secret"));
    const ports = {
      registry: portFromEnv("REGISTRY_PORT", 50051),
      gateway: portFromEnv("GATEWAY_PORT", 50052),
      machineCache: portFromEnv("MACHINE_CACHE_PORT", 50053),
      studio: portFromEnv("STUDIO_PORT", 5173),
    };
    const deps = await startDependencies({ dataDir, database: DATABASE_NAME, env: process.env, logger: log });
    owned.push(deps);
    const { databaseUrl, azureConnectionString, natsUrl } = deps;

    // The page is served before the registry starts: the registry and Blob Storage allow its origin (CORS).
    let registryUrl = "";
    const studio = await startStudioServer({
      dir: defaultStudioDir(),
      port: ports.studio,
      config: () => ({ registryUrl }),
    }).catch((err: unknown) => {
      log.warn({ err }, "the Studio page is not served");
      return undefined;
    });
    if (studio) owned.push(studio);
    const studioPort = studio ? new URL(studio.origin).port : String(ports.studio);
    const studioOrigins = `http://127.0.0.1:${studioPort},http://localhost:${studioPort}`;
    const stack = await startStack({
      databaseUrl,
      azureConnectionString,
      natsUrl,
      jwtSecret,
      machineDir: path.join(dataDir, "machine"),
      ports: { registry: ports.registry, gateway: ports.gateway, machineCache: ports.machineCache },
      logLevel: process.env.LOG_LEVEL ?? "info",
      env: {
        registry: { CORS_ALLOWED_ORIGINS: studioOrigins, ...process.env },
        gateway: { STORAGE_CORS_ALLOWED_ORIGINS: studioOrigins, ...process.env },
        machineCache: process.env,
      },
    });
    registryUrl = stack.registry.url;
    owned.push(stack);

    // A day, or less where the services' limit for the role is shorter.
    const limits = tokenLifetimeLimits(parseEnv(tokenEnvShape));
    const devToken = (subject: string, roles: Role[]) =>
      mintToken(jwtSecret, { subject, roles, ttlSeconds: Math.min(24 * 3600, maxTokenLifetimeSeconds(roles, limits)) });
    const tokens = {
      user: await devToken(DEV_USER_ID, []),
      admin: await devToken("dev-admin", ["admin"]),
      machine: await devToken("local-machine", ["machine"]),
    };
    // Ready means usable: every service on NATS, the machine's first statistics at the registry.
    await stack.ready;
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
      ...(studio
        ? [
            `  Studio sign-in: ${studio.url}#token=${tokens.user}`,
            `  LoRA picker demo (a workflow editor embedding <emprops-lora-picker>): ${studio.url}picker-demo.html#token=${tokens.user}`,
          ]
        : []),
      `  admin token:    ${tokens.admin}`,
      `  machine token:  ${tokens.machine}`,
      "",
      "ready: lora-registry, blob-gateway and machine-cache are serving and connected to NATS (Ctrl-C stops everything)",
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

/** A listen port from the environment (0 picks a free one). */
function portFromEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const port = Number(raw);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`${name} must be a port number from 0 to 65535, got ${JSON.stringify(raw)}`);
  }
  return port;
}

function redactUrl(url: string): string {
  const u = new URL(url);
  if (u.password) u.password = "***";
  return u.toString();
}

void main();

import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { LoraAdminService, LoraResolverService, LoraService, PlacementService } from "@emprops/contracts";
import {
  bearerInterceptor,
  type Clock,
  createLogger,
  handlePostgresPoolErrors,
  mintToken,
  type Role,
} from "@emprops/platform";
import { createTestDatabase, testNamespace, type TestDatabase, type TestNamespace } from "@emprops/testkit";
import { Kysely, PostgresDialect } from "kysely";
import pg from "pg";
import { loadConfig, type RunningRegistry, startLoraRegistry } from "../../src/index.js";
import { pgTypes } from "../../src/db/pg-types.js";
import type { Database } from "../../src/db/schema/index.js";

export const JWT_SECRET = "lora-registry-test-secret-0123456789";
/** Nothing listens here: tests of the registry alone never reach a gateway. */
export const NO_GATEWAY = "http://127.0.0.1:9";

export interface Clients {
  lora: Client<typeof LoraService>;
  admin: Client<typeof LoraAdminService>;
  resolver: Client<typeof LoraResolverService>;
  placement: Client<typeof PlacementService>;
}

export interface RegistryUnderTest {
  registry: RunningRegistry;
  url: string;
  database: TestDatabase;
  namespace: TestNamespace;
  /** Direct access for seeding rows and checking that nothing changed. */
  db: Kysely<Database>;
  /** Clients calling with a token for this subject and roles. */
  as(subject: string, roles?: Role[]): Clients;
  /** Clients calling with exactly this bearer token (or none). */
  withToken(token: string | undefined): Clients;
  stop(): Promise<void>;
}

export interface StartOptions {
  env?: NodeJS.ProcessEnv;
  clock?: Clock;
  /** NATS server to use instead of the shared one (the namespace still applies). */
  natsUrl?: string;
}

/** The real registry on a free port, with a database and NATS namespace of its own. */
export async function startRegistryForTest(label: string, opts: StartOptions = {}): Promise<RegistryUnderTest> {
  const database = await createTestDatabase(label);
  const namespace = testNamespace(label);
  let registry: RunningRegistry;
  try {
    registry = await startLoraRegistry(
      loadConfig({
        REGISTRY_PORT: "0",
        DATABASE_URL: database.url,
        DATABASE_POOL_SIZE: "10",
        JWT_SECRET,
        LOG_LEVEL: "silent",
        NATS_URL: opts.natsUrl ?? namespace.natsUrl,
        NATS_NAMESPACE: namespace.namespace,
        BLOB_GATEWAY_URL: NO_GATEWAY,
        OUTBOX_POLL_MS: "500",
        ...opts.env,
      }),
      opts.clock ? { clock: opts.clock } : {},
    );
  } catch (err) {
    await database.cleanup();
    throw err;
  }
  const db = new Kysely<Database>({
    dialect: new PostgresDialect({
      pool: handlePostgresPoolErrors(
        new pg.Pool({ connectionString: database.url, max: 3, types: pgTypes }),
        createLogger("registry-test", "warn"),
      ),
    }),
  });
  const withToken = (token: string | undefined): Clients => {
    const transport = createGrpcTransport({
      baseUrl: registry.url,
      interceptors: token === undefined ? [] : [bearerInterceptor(token)],
    });
    return {
      lora: createClient(LoraService, transport),
      admin: createClient(LoraAdminService, transport),
      resolver: createClient(LoraResolverService, transport),
      placement: createClient(PlacementService, transport),
    };
  };
  return {
    registry,
    url: registry.url,
    database,
    namespace,
    db,
    withToken,
    as: (subject, roles = []) => withTokenLazy(() => mintToken(JWT_SECRET, { subject, roles }), registry.url),
    stop: async () => {
      await registry.stop();
      await db.destroy();
      await Promise.all([database.cleanup(), namespace.cleanup()]);
    },
  };
}

function withTokenLazy(token: () => Promise<string>, baseUrl: string): Clients {
  let minted: Promise<string> | undefined;
  const transport = createGrpcTransport({
    baseUrl,
    interceptors: [bearerInterceptor(() => (minted ??= token()))],
  });
  return {
    lora: createClient(LoraService, transport),
    admin: createClient(LoraAdminService, transport),
    resolver: createClient(LoraResolverService, transport),
    placement: createClient(PlacementService, transport),
  };
}

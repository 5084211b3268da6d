export interface TestEnv {
  /** Admin URL of a server where tests may CREATE DATABASE. */
  databaseUrl: string;
  natsUrl: string;
  azureConnectionString: string;
}

const VARIABLES: Record<keyof TestEnv, string> = {
  databaseUrl: "TEST_DATABASE_URL",
  natsUrl: "TEST_NATS_URL",
  azureConnectionString: "TEST_AZURE_STORAGE_CONNECTION_STRING",
};

/** The dependencies jest's global setup (libs/testkit/src/jest-global-setup.ts) provided. */
export function testEnv(): TestEnv {
  return {
    databaseUrl: testEnvValue("databaseUrl"),
    natsUrl: testEnvValue("natsUrl"),
    azureConnectionString: testEnvValue("azureConnectionString"),
  };
}

/** One of testEnv()'s values, for helpers that need only that dependency. */
export function testEnvValue(key: keyof TestEnv): string {
  const name = VARIABLES[key];
  const value = process.env[name];
  if (!value) {
    throw new Error(
      `${name} is not set: tests must run through the root jest.config.js, whose globalSetup ` +
        "(libs/testkit/src/jest-global-setup.ts) provides it from DATABASE_URL, NATS_URL and " +
        "AZURE_STORAGE_CONNECTION_STRING, or by starting the servers",
    );
  }
  return value;
}

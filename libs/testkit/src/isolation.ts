import { setTimeout as sleep } from "node:timers/promises";
import { BlobSASPermissions, BlobServiceClient, type BlockBlobClient } from "@azure/storage-blob";
import { eventNames, type EventNames } from "@emprops/contracts";
import { JetStreamApiCodes, JetStreamApiError, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { createLogger, handlePostgresClientErrors } from "@emprops/platform";
import { Client } from "pg";
import { testEnvValue } from "./test-env.js";
import { uniqueName } from "./unique-name.js";

export interface TestDatabase {
  /** `t_<label>_<random>` */
  name: string;
  /** The admin URL with this database as its path. */
  url: string;
  /** Drops the database, disconnecting whoever is still connected. */
  cleanup(): Promise<void>;
}

/** A fresh, empty database on TEST_DATABASE_URL's server, for one test file. */
export async function createTestDatabase(label: string): Promise<TestDatabase> {
  const adminUrl = testEnvValue("databaseUrl");
  const name = uniqueName("t", label, "_");
  const quoted = `"${name}"`;
  // Another session connected to template1 makes CREATE DATABASE fail (55006); it passes.
  for (let attempt = 1; ; attempt++) {
    try {
      await withClient(adminUrl, (client) => client.query(`CREATE DATABASE ${quoted}`));
      break;
    } catch (error) {
      if (attempt >= 5 || (error as { code?: string }).code !== "55006") throw error;
      await sleep(200 * attempt);
    }
  }
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return {
    name,
    url: url.toString(),
    cleanup: async () => {
      await withClient(adminUrl, (client) => client.query(`DROP DATABASE IF EXISTS ${quoted} WITH (FORCE)`));
    },
  };
}

export interface TestNamespace {
  /** The NATS_NAMESPACE to give services: `t_<label>_<random>`. */
  namespace: string;
  /** eventNames(namespace): stream, subjects and durable names. */
  names: EventNames;
  natsUrl: string;
  /** Deletes the namespace's stream (its consumers go with it), if it exists. */
  cleanup(): Promise<void>;
}

/** A NATS namespace of its own for one test file, on TEST_NATS_URL. */
export function testNamespace(label: string): TestNamespace {
  const natsUrl = testEnvValue("natsUrl");
  const namespace = uniqueName("t", label, "_");
  const names = eventNames(namespace);
  return {
    namespace,
    names,
    natsUrl,
    cleanup: async () => {
      const nc = await connect({ servers: natsUrl });
      try {
        const jsm = await jetstreamManager(nc);
        // Also any other stream a test made under the namespace's subjects.
        const streams = new Set([names.stream]);
        for await (const stream of jsm.streams.names(`${namespace}.>`)) streams.add(stream);
        for (const stream of streams) {
          try {
            await jsm.streams.delete(stream);
          } catch (error) {
            if (!(error instanceof JetStreamApiError && error.code === JetStreamApiCodes.StreamNotFound)) throw error;
          }
        }
      } finally {
        await nc.close();
      }
    },
  };
}

export interface TestContainers {
  /** Stands in for the user-LoRA container. */
  userContainer: string;
  /** Stands in for the shared container (`emprops-share` in production). */
  sharedContainer: string;
  connectionString: string;
  /** A blob of the user container, and signed URLs of it (Azurite's host; SAS permissions such as "r" or "cw"). */
  userBlob(name: string): { client: BlockBlobClient; signedUrl(permissions: string, ttlMs?: number): Promise<string> };
  /** Deletes both containers and everything in them. */
  cleanup(): Promise<void>;
}

/** Two fresh blob containers for one test file, on TEST_AZURE_STORAGE_CONNECTION_STRING. */
export async function createTestContainers(label: string): Promise<TestContainers> {
  const connectionString = testEnvValue("azureConnectionString");
  const service = BlobServiceClient.fromConnectionString(connectionString);
  const base = uniqueName("t", label, "-");
  const userContainer = `${base}-user`;
  const sharedContainer = `${base}-shared`;
  await Promise.all([userContainer, sharedContainer].map((name) => service.getContainerClient(name).create()));
  return {
    userContainer,
    sharedContainer,
    connectionString,
    userBlob: (name) => {
      const client = service.getContainerClient(userContainer).getBlockBlobClient(name);
      return {
        client,
        signedUrl: (permissions, ttlMs = 600_000) =>
          client.generateSasUrl({
            permissions: BlobSASPermissions.parse(permissions),
            expiresOn: new Date(Date.now() + ttlMs),
          }),
      };
    },
    cleanup: async () => {
      await Promise.all(
        [userContainer, sharedContainer].map((name) => service.getContainerClient(name).deleteIfExists()),
      );
    },
  };
}

const logger = createLogger("testkit", "warn");

async function withClient<T>(url: string, use: (client: Client) => Promise<T>): Promise<T> {
  const client = handlePostgresClientErrors(new Client({ connectionString: url }), logger);
  await client.connect();
  try {
    return await use(client);
  } finally {
    await client.end();
  }
}

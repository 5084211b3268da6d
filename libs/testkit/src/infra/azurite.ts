import path from "node:path";
import { prepareDataDir } from "./data-dir.js";
import { nativeResolve } from "./native-require.js";
import { DEFAULT_START_TIMEOUT_MS, type ServiceOptions } from "./service-options.js";
import { spawnService } from "./spawn-service.js";

/** Azurite's built-in development account (public, documented by Microsoft). */
export const AZURITE_ACCOUNT_NAME = "devstoreaccount1";
export const AZURITE_ACCOUNT_KEY =
  "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

export interface StartedAzurite {
  /** Connection string for the dev account, accepted by `BlobServiceClient.fromConnectionString`. */
  connectionString: string;
  /** http://127.0.0.1:<port>/devstoreaccount1 */
  blobEndpoint: string;
  pid: number;
  /** Where blobs are kept when persistent; undefined when in memory. */
  dataDir: string | undefined;
  /** Stops Azurite and waits for it to exit. In-memory data is gone afterwards. */
  stop(): Promise<void>;
}

/** The BlobEndpoint of a storage connection string (http://host:port/account), without a trailing slash. */
export function blobEndpointOf(connectionString: string): string {
  const endpoint = /BlobEndpoint=([^;]+)/.exec(connectionString)?.[1];
  if (!endpoint) throw new Error("the connection string names no BlobEndpoint");
  return endpoint.replace(/\/$/, "");
}

export function azuriteConnectionString(blobEndpoint: string): string {
  return (
    `DefaultEndpointsProtocol=http;AccountName=${AZURITE_ACCOUNT_NAME};` +
    `AccountKey=${AZURITE_ACCOUNT_KEY};BlobEndpoint=${blobEndpoint};`
  );
}

/**
 * Spawns Azurite's blob service (it has no supported in-process API). In
 * memory unless `persistent`, when it keeps its files in `dataDir`
 * (`--location`); a non-persistent `dataDir` is not used.
 */
export async function startAzurite(
  options: ServiceOptions & {
    /** Options for Azurite's node process, e.g. --cpu-prof (written when it stops). */
    nodeArgs?: string[];
  } = {},
): Promise<StartedAzurite> {
  const main = path.join(path.dirname(nativeResolve("azurite/package.json")), "dist/src/blob/main.js");
  const dir = options.persistent ? await prepareDataDir("azurite", options) : undefined;
  const server = await spawnService({
    name: "azurite",
    command: process.execPath,
    args: [
      ...(options.nodeArgs ?? []),
      main,
      ...(dir ? ["--location", dir.path] : ["--inMemoryPersistence"]),
      "--silent",
      // Telemetry would try to reach hosts that may be unreachable.
      "--disableTelemetry",
      // @azure/storage-blob sends API versions newer than this Azurite knows.
      "--skipApiVersionCheck",
      "--blobHost",
      "127.0.0.1",
      "--blobPort",
      String(options.port ?? 0),
    ],
    ready: (output) => /Azurite Blob service successfully listens on (http:\/\/\S+)/.exec(output)?.[1],
    timeoutMs: options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS,
  });
  const blobEndpoint = `${server.ready.replace(/\/$/, "")}/${AZURITE_ACCOUNT_NAME}`;
  return {
    connectionString: azuriteConnectionString(blobEndpoint),
    blobEndpoint,
    pid: server.pid,
    dataDir: dir?.path,
    stop: server.stop,
  };
}

import { BlobServiceClient, type ContainerClient } from "@azure/storage-blob";
import type { Client } from "@connectrpc/connect";
import { BlobGatewayService } from "@emprops/contracts";
import { createServiceClient, mintToken } from "@emprops/platform";
import { createTestContainers, testNamespace, type TestContainers, type TestNamespace } from "@emprops/testkit";
import { loadConfig, type RunningGateway, startBlobGateway } from "../../src/index.js";

export const JWT_SECRET = "blob-gateway-test-secret-0123456789";

export interface GatewayUnderTest {
  gateway: RunningGateway;
  /** A gRPC client holding a "service" token, as the registry calls the gateway. */
  client: Client<typeof BlobGatewayService>;
  /** Direct storage access, to set up and inspect blobs. */
  userContainer: ContainerClient;
  sharedContainer: ContainerClient;
  containers: TestContainers;
  namespace: TestNamespace;
  /** A client with another token (or none). */
  clientWith(token: string | undefined): Client<typeof BlobGatewayService>;
  stop(): Promise<void>;
}

/**
 * The real gateway on a free port, with containers and a NATS namespace of
 * its own; `storageVia` lets it reach storage another way (e.g. a fault proxy).
 */
export async function startGatewayForTest(
  label: string,
  env: NodeJS.ProcessEnv = {},
  storageVia?: (containers: TestContainers) => Promise<string> | string,
): Promise<GatewayUnderTest> {
  const containers = await createTestContainers(label);
  const namespace = testNamespace(label);
  const gateway = await startBlobGateway(
    loadConfig({
      GATEWAY_PORT: "0",
      JWT_SECRET,
      LOG_LEVEL: "silent",
      NATS_URL: namespace.natsUrl,
      NATS_NAMESPACE: namespace.namespace,
      AZURE_STORAGE_CONNECTION_STRING: storageVia ? await storageVia(containers) : containers.connectionString,
      USER_LORA_CONTAINER: containers.userContainer,
      CLOUD_STORAGE_CONTAINER: containers.sharedContainer,
      ...env,
    }),
  );
  const token = await mintToken(JWT_SECRET, { subject: "lora-registry", roles: ["service"] });
  const storage = BlobServiceClient.fromConnectionString(containers.connectionString);
  const clientWith = (t: string | undefined) =>
    t === undefined
      ? createServiceClient(BlobGatewayService, gateway.url, () => "", [
          (next) => async (req) => {
            req.header.delete("authorization");
            return next(req);
          },
        ])
      : createServiceClient(BlobGatewayService, gateway.url, t);
  return {
    gateway,
    client: createServiceClient(BlobGatewayService, gateway.url, token),
    userContainer: storage.getContainerClient(containers.userContainer),
    sharedContainer: storage.getContainerClient(containers.sharedContainer),
    containers,
    namespace,
    clientWith,
    stop: async () => {
      await gateway.stop();
      await Promise.all([containers.cleanup(), namespace.cleanup()]);
    },
  };
}

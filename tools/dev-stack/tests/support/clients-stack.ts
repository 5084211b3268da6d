import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { mintToken } from "@emprops/platform";
import {
  createTestContainers,
  createTestDatabase,
  testEnv,
  testNamespace,
  type TestContainers,
  type TestDatabase,
  type TestNamespace,
} from "@emprops/testkit";
import { type RunningStack, startStack, type StackOptions } from "../../src/index.js";

export const JWT_SECRET = "clients-test-secret-0123456789abcdef";

/** The whole stack for one test file, isolated (database, NATS namespace, containers, machine dir). */
export interface ClientsStack {
  stack: RunningStack;
  containers: TestContainers;
  /** ComfyUI's models/loras of the stack's machine-cache. */
  loraDir: string;
  /** A user of this file, with a token. */
  userId: string;
  userToken: string;
  adminToken: string;
  machineToken: string;
  tokenFor(userId: string): Promise<string>;
  stop(): Promise<void>;
}

export async function startClientsStack(
  label: string,
  opts: { env?: StackOptions["env"]; azureConnectionString?: string } = {},
): Promise<ClientsStack> {
  let db: TestDatabase | undefined;
  let containers: TestContainers | undefined;
  const ns: TestNamespace = testNamespace(label);
  const machineDir = mkdtempSync(path.join(os.tmpdir(), `${label}-machine-`));
  const cleanup = async () => {
    await Promise.all([db?.cleanup(), ns.cleanup(), containers?.cleanup()]);
    rmSync(machineDir, { recursive: true, force: true });
  };
  try {
    [db, containers] = await Promise.all([createTestDatabase(label), createTestContainers(label)]);
    const stack = await startStack({
      databaseUrl: db.url,
      natsUrl: testEnv().natsUrl,
      natsNamespace: ns.namespace,
      azureConnectionString: opts.azureConnectionString ?? containers.connectionString,
      userContainer: containers.userContainer,
      sharedContainer: containers.sharedContainer,
      jwtSecret: JWT_SECRET,
      machineDir,
      machineId: `${label}-machine`,
      logLevel: "silent",
      env: opts.env,
    });
    const tokenFor = (userId: string) => mintToken(JWT_SECRET, { subject: userId, ttlSeconds: 3600 });
    const userId = randomUUID();
    const [userToken, adminToken, machineToken] = await Promise.all([
      tokenFor(userId),
      mintToken(JWT_SECRET, { subject: "clients-admin", roles: ["admin"] }),
      mintToken(JWT_SECRET, { subject: `${label}-machine`, roles: ["machine"] }),
    ]);
    return {
      stack,
      containers,
      loraDir: path.join(machineDir, "models", "loras"),
      userId,
      userToken,
      adminToken,
      machineToken,
      tokenFor,
      stop: async () => {
        await stack.stop();
        await cleanup();
      },
    };
  } catch (err) {
    await cleanup();
    throw err;
  }
}

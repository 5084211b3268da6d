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
export interface TestStack {
  stack: RunningStack;
  containers: TestContainers;
  /** This file's NATS namespace (subjects and consumers are named after it). */
  natsNamespace: string;
  /** The secret the stack's services verify tokens with. */
  jwtSecret: string;
  /** The machine-cache's machine directory (its SQLite database lives here). */
  machineDir: string;
  /** ComfyUI's models/loras of the stack's machine-cache. */
  loraDir: string;
  /** Where the stack's machine-cache keeps user LoRAs (its default: beside models/, in no ComfyUI folder). */
  userLoraDir: string;
  /** A user of this file, with a token. */
  userId: string;
  userToken: string;
  adminToken: string;
  machineToken: string;
  tokenFor(userId: string): Promise<string>;
  stop(): Promise<void>;
}

export interface TestStackOptions {
  env?: StackOptions["env"];
  /** Where the services reach Azure, e.g. through a proxy; may be derived from this file's containers. */
  azureConnectionString?: string | ((containers: TestContainers) => string | Promise<string>);
  /** Default JWT_SECRET. */
  jwtSecret?: string;
  /** Default `${label}-machine`. */
  machineId?: string;
}

export async function startTestStack(label: string, opts: TestStackOptions = {}): Promise<TestStack> {
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
    const jwtSecret = opts.jwtSecret ?? JWT_SECRET;
    const machineId = opts.machineId ?? `${label}-machine`;
    const azure = opts.azureConnectionString;
    const stack = await startStack({
      databaseUrl: db.url,
      natsUrl: testEnv().natsUrl,
      natsNamespace: ns.namespace,
      azureConnectionString:
        typeof azure === "function" ? await azure(containers) : (azure ?? containers.connectionString),
      userContainer: containers.userContainer,
      sharedContainer: containers.sharedContainer,
      jwtSecret,
      machineDir,
      machineId,
      logLevel: "silent",
      env: opts.env,
    });
    // As npm start before its "ready" line: on NATS, the machine's first statistics at the registry.
    await stack.ready;
    const tokenFor = (userId: string) => mintToken(jwtSecret, { subject: userId, ttlSeconds: 3600 });
    const userId = randomUUID();
    const [userToken, adminToken, machineToken] = await Promise.all([
      tokenFor(userId),
      mintToken(jwtSecret, { subject: "clients-admin", roles: ["admin"] }),
      mintToken(jwtSecret, { subject: machineId, roles: ["machine"] }),
    ]);
    return {
      stack,
      containers,
      natsNamespace: ns.namespace,
      jwtSecret,
      machineDir,
      loraDir: path.join(machineDir, "models", "loras"),
      userLoraDir: path.join(machineDir, "user_lora_cache"),
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

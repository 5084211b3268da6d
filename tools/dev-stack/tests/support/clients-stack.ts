import { createHash, randomUUID } from "node:crypto";
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from "node:fs";
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

/** kohya-style training metadata, as sd-scripts writes it into a LoRA's safetensors header. */
export function kohyaMetadata(outputName: string): Record<string, string> {
  return {
    ss_base_model_version: "sdxl_base_v1-0",
    ss_sd_model_name: "sd_xl_base_1.0.safetensors",
    ss_network_module: "networks.lora",
    ss_network_dim: "16",
    ss_network_alpha: "8",
    ss_num_epochs: "10",
    ss_num_train_images: "50",
    ss_resolution: "(1024, 1024)",
    ss_output_name: outputName,
    ss_tag_frequency: JSON.stringify({ "10_style": { "anime style": 40, "vibrant colors": 25, "1girl": 10 } }),
  };
}

/**
 * Writes a valid safetensors LoRA of about sizeBytes (one F16 tensor filled
 * with a pattern) with the given metadata, a MiB at a time; returns its sha256.
 */
export function writeLoraFile(file: string, sizeBytes: number, metadata: Record<string, string>): string {
  const headerRoom = 8 + 4096;
  const elements = Math.max(1, Math.floor((sizeBytes - headerRoom) / 2));
  const header = {
    __metadata__: metadata,
    "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": {
      dtype: "F16",
      shape: [elements],
      data_offsets: [0, elements * 2],
    },
  };
  let text = Buffer.from(JSON.stringify(header), "utf8");
  text = Buffer.concat([text, Buffer.alloc((8 - (text.length % 8)) % 8, " ")]);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(text.length));
  const hash = createHash("sha256");
  const fd = openSync(file, "w");
  try {
    const write = (b: Buffer) => {
      writeSync(fd, b);
      hash.update(b);
    };
    write(length);
    write(text);
    const chunk = Buffer.alloc(1 << 20);
    for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 31 + 7) & 0xff;
    for (let left = elements * 2; left > 0; left -= chunk.length)
      write(chunk.subarray(0, Math.min(left, chunk.length)));
  } finally {
    closeSync(fd);
  }
  return hash.digest("hex");
}

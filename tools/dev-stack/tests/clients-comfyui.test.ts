import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { BlobServiceClient } from "@azure/storage-blob";
import { createRegistryClients, uploadLora } from "@emprops/lora-cli";
import { blobEndpointOf, type FaultProxy, kohyaMetadata, startFaultProxy, writeLoraFile } from "@emprops/testkit";
import { startTestStack, type TestStack } from "./support/test-stack.js";

const ROOT = path.resolve(__dirname, "..", "..", "..");
const SHARED_LORA = "shared_style.safetensors";
const LOCAL_LORA = "on_this_node.safetensors";
const EXTRA_LORA = "extra_folder_style.safetensors";
const LARGE_SHARED_LORA = "large_shared_style.safetensors";
const UNCACHED_SHARED_LORA = "uncached_shared_style.safetensors";
const INTERRUPTED_SHARED_LORA = "interrupted_shared_style.safetensors";
const MIB = 1024 * 1024;

/**
 * The ComfyUI node's own tests (python3 -m unittest, integrations/comfyui)
 * against this stack's machine-cache: a user LoRA uploaded here, another
 * user's LoRA, a shared LoRA in the shared container only, and LoRAs only
 * on this node where ComfyUI keeps them (the top of models/loras, a second
 * loras folder), as nodes have them today. The stack's blob traffic crosses
 * the test kit's fault proxy shaped like a slow link (4 MiB/s), so the 8 MiB
 * shared LoRA takes a couple of seconds to arrive: long enough for the
 * node's progress bar to move.
 */
describe("the ComfyUI EmProps_Lora_Loader node against the real machine-cache", () => {
  let t: TestStack;
  let proxy: FaultProxy | undefined;
  let dir: string;
  const env: Record<string, string> = {};

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), "comfyui-"));
    t = await startTestStack("clients-comfyui", {
      azureConnectionString: async (c) => {
        proxy = await startFaultProxy(blobEndpointOf(c.connectionString), { shape: { totalBytesPerSecond: 4 * MIB } });
        return proxy.viaConnectionString(c.connectionString);
      },
      // A shared LoRA's first resolution waits for the gateway to verify it, over the same slow link.
      env: {
        gateway: { SHARED_LORA_VERIFY_WAIT_MS: "60000" },
        registry: { BLOB_GATEWAY_TIMEOUT_MS: "60000" },
        machineCache: { REGISTRY_TIMEOUT_MS: "60000" },
      },
    });
    const otherUser = "7d4c3b2a-1908-4f6e-8d5c-4b3a29180f7e";
    const upload = async (token: string, name: string) => {
      const file = path.join(dir, name);
      writeLoraFile(file, 256 * 1024, kohyaMetadata(name));
      const { lora } = await uploadLora({ client: createRegistryClients(t.stack.registry.url, token).lora, file });
      return lora.id;
    };
    const [mine, theirs] = await Promise.all([
      upload(t.userToken, "my_style.safetensors"),
      upload(await t.tokenFor(otherUser), "their_style.safetensors"),
    ]);
    // Straight to storage, not through the slow link.
    const shared = BlobServiceClient.fromConnectionString(t.containers.connectionString).getContainerClient(
      t.containers.sharedContainer,
    );
    for (const [name, size] of [
      [SHARED_LORA, 128 * 1024],
      [LARGE_SHARED_LORA, 8 * MIB],
      [UNCACHED_SHARED_LORA, 128 * 1024],
      [INTERRUPTED_SHARED_LORA, 8 * MIB],
    ] as const) {
      const file = path.join(dir, name);
      writeLoraFile(file, size, kohyaMetadata(name.replace(/\.safetensors$/, "")));
      await shared.getBlockBlobClient(`models/loras/${name}`).uploadFile(file);
    }
    writeLoraFile(path.join(t.loraDir, LOCAL_LORA), 64 * 1024, kohyaMetadata("on_this_node"));
    const extraDir = path.join(dir, "extra_model_paths", "loras");
    mkdirSync(extraDir, { recursive: true });
    writeLoraFile(path.join(extraDir, EXTRA_LORA), 64 * 1024, kohyaMetadata("extra_folder_style"));
    Object.assign(env, {
      MACHINE_CACHE_URL: t.stack.machineCache.url,
      MACHINE_TOKEN: t.machineToken,
      COMFYUI_LORA_DIR: t.loraDir,
      EMPROPS_TEST_USER_LORA_DIR: t.userLoraDir,
      EMPROPS_TEST_USER_ID: t.userId,
      EMPROPS_TEST_USER_LORA_ID: mine,
      EMPROPS_TEST_OTHER_USER_ID: otherUser,
      EMPROPS_TEST_OTHER_USER_LORA_ID: theirs,
      EMPROPS_TEST_SHARED_LORA: SHARED_LORA,
      EMPROPS_TEST_LOCAL_LORA: LOCAL_LORA,
      EMPROPS_TEST_EXTRA_LORA_DIR: extraDir,
      EMPROPS_TEST_EXTRA_LORA: EXTRA_LORA,
      EMPROPS_TEST_LARGE_SHARED_LORA: LARGE_SHARED_LORA,
      EMPROPS_TEST_UNCACHED_SHARED_LORA: UNCACHED_SHARED_LORA,
      EMPROPS_TEST_INTERRUPTED_SHARED_LORA: INTERRUPTED_SHARED_LORA,
    });
  });

  afterAll(async () => {
    await t?.stop();
    await proxy?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("python3 -m unittest passes every test of the node, none skipped", async () => {
    const run = await new Promise<{ code: number | null; output: string }>((resolve, reject) => {
      const child = spawn("python3", ["-m", "unittest", "discover", "-v", "-s", "tests", "-t", "."], {
        cwd: path.join(ROOT, "integrations", "comfyui"),
        env: { PATH: process.env.PATH, PYTHONDONTWRITEBYTECODE: "1", ...env },
        stdio: ["ignore", "pipe", "pipe"],
      });
      let output = "";
      child.stdout.on("data", (d: Buffer) => (output += d.toString()));
      child.stderr.on("data", (d: Buffer) => (output += d.toString()));
      child.on("error", reject);
      child.on("close", (code) => resolve({ code, output }));
    });
    expect({ code: run.code, output: run.output }).toEqual({ code: 0, output: expect.stringMatching(/\nOK\n$/) });
    expect(run.output).toMatch(/\nRan 31 tests in /);
    expect(run.output).not.toMatch(/skipped/);
  });

  test("no folder ComfyUI lists LoRAs from holds a user LoRA; the user LoRA directory is the service's user's alone", async () => {
    // What ComfyUI's LoraLoader lists: every file below its loras folders.
    const listed = (dir: string): string[] =>
      readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
        e.isDirectory() ? listed(path.join(dir, e.name)) : [path.join(dir, e.name)],
      );
    const comfyListed = [...listed(t.loraDir), ...listed(env.EMPROPS_TEST_EXTRA_LORA_DIR!)];
    expect(comfyListed.filter((f) => /my_style|their_style/.test(f))).toEqual([]);
    const cached = listed(t.userLoraDir);
    expect(cached).toEqual(
      expect.arrayContaining([
        expect.stringMatching(new RegExp(`/${t.userId}/${env.EMPROPS_TEST_USER_LORA_ID}-my_style\\.safetensors$`)),
      ]),
    );
    expect(statSync(t.userLoraDir).mode & 0o777).toBe(0o700);
    for (const file of cached) expect(statSync(file).mode & 0o777).toBe(0o600);
  });
});

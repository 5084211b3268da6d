import { execFile } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { LoraSource, MachineCacheService } from "@emprops/contracts";
import { bearerInterceptor, mintToken } from "@emprops/platform";
import { eventually, writeLoraFile } from "@emprops/testkit";
import { ROOT } from "./support/readme-blocks.js";
import { startTestStack, type TestStack } from "./support/test-stack.js";

const README = path.join(ROOT, "README.md");
const MARKER = "<!-- transcript: lora-cli";
const DEV_USER = "00000000-0000-4000-8000-000000000001";
const MiB = 1024 * 1024;
/** What the README shows for what differs per run. */
const SHOWN = { registry: "http://127.0.0.1:50051", config: "/tmp/lt/lora.json" };

interface Step {
  command: string;
  output: string;
}

/** The README's CLI session: each `$ command` with the lines it printed. */
function readTranscript(): { steps: Step[]; start: number; end: number; text: string } {
  const text = readFileSync(README, "utf8");
  const at = text.indexOf(MARKER);
  if (at < 0) throw new Error(`README.md has no ${MARKER} --> block`);
  const start = text.indexOf("```console\n", at) + "```console\n".length;
  const end = text.indexOf("\n```", start);
  const steps: Step[] = [];
  for (const line of text.slice(start, end).split("\n")) {
    if (line.startsWith("$ ")) steps.push({ command: line.slice(2), output: "" });
    else if (steps.length > 0) steps[steps.length - 1]!.output += `${line}\n`;
  }
  return { steps, start, end, text };
}

/**
 * Times differ per run: compared by their shape. Blocks land in any order and
 * the last is shorter, so a progress line's percentage may differ by one.
 */
const comparable = (output: string) =>
  output.replace(/\d{4}-\d\d-\d\d \d\d:\d\d/g, "YYYY-MM-DD hh:mm").replace(/^progress: \d+%/gm, "progress: N%");

/**
 * The README's `lora` session, run command by command against a fresh stack
 * (the files it names made here, deterministic, so sizes and sha256 are the
 * README's), stdout and stderr as a terminal shows them but without one (so
 * the upload's progress is one line per block). Only the registry's address,
 * the config file's path, the times and a progress percentage (comparable)
 * may differ from the README. With
 * UPDATE_README=1 the run writes its output into the README instead.
 */
describe("the README's lora session, as printed", () => {
  let t: TestStack;
  let dir: string;
  let env: NodeJS.ProcessEnv;
  const { steps, start, end, text } = readTranscript();
  const actual: string[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), "readme-transcript-"));
    t = await startTestStack("readme-transcript", {
      machineId: "local-machine",
      env: { machineCache: { CACHE_STATS_INTERVAL_SECONDS: "1", USAGE_FLUSH_INTERVAL_SECONDS: "1" } },
    });
    const files = path.join(dir, "files");
    mkdirSync(files);
    const meta = (title: string, tags: Record<string, number>, extra: Record<string, string> = {}) => ({
      ss_base_model_version: "sdxl_base_v1-0",
      ss_network_module: "networks.lora",
      ss_network_dim: "32",
      ss_network_alpha: "16",
      ss_num_epochs: "12",
      ss_num_train_images: "80",
      ss_resolution: "(1024, 1024)",
      ss_output_name: title,
      ss_tag_frequency: JSON.stringify({ "10_style": tags }),
      ...extra,
    });
    writeLoraFile(
      path.join(files, "my_anime_style.safetensors"),
      24 * MiB,
      meta("my_anime_style", { "anime style": 40, "vibrant colors": 25 }),
    );
    for (const name of ["portrait_lighting", "portrait_v2"]) {
      writeLoraFile(
        path.join(files, `${name}.safetensors`),
        16 * MiB,
        meta(name, { "rim light": 30, "studio portrait": 20 }),
      );
    }
    writeFileSync(path.join(files, "notes.txt"), "not a LoRA\n");
    // `lora` as the README's install block links it.
    const bin = path.join(dir, "bin");
    mkdirSync(bin);
    writeFileSync(
      path.join(bin, "lora"),
      `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(path.join(ROOT, "tools/lora-cli/bin/lora.js"))} "$@"\n`,
    );
    chmodSync(path.join(bin, "lora"), 0o755);
    env = {
      PATH: `${bin}:${process.env.PATH}`,
      HOME: dir,
      LORA_CONFIG: path.join(dir, "lora.json"),
      LORA_REGISTRY_URL: t.stack.registry.url,
      TOKEN: await t.tokenFor(DEV_USER),
      ADMIN: t.adminToken,
    };
  });

  afterAll(async () => {
    if (process.env.UPDATE_README === "1" && actual.length === steps.length) {
      writeFileSync(README, text.slice(0, start) + actual.join("").replace(/\n$/, "") + text.slice(end));
    }
    await t?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** One command in bash, in the files' directory, as the README shows its output. */
  const run = async (command: string): Promise<string> => {
    const { stdout } = await promisify(execFile)("bash", ["-c", `{ ${command}\n} 2>&1`], {
      cwd: path.join(dir, "files"),
      env,
    }).catch((err: { stdout: string }) => ({ stdout: err.stdout }));
    return stdout.replaceAll(t.stack.registry.url, SHOWN.registry).replaceAll(env.LORA_CONFIG as string, SHOWN.config);
  };

  /** What a job on the machine does before `lora show 1` (the README's comment says so). */
  const jobUses = async (loraId: string) => {
    const machine = createClient(
      MachineCacheService,
      createConnectTransport({
        baseUrl: t.stack.machineCache.url,
        httpVersion: "1.1",
        interceptors: [bearerInterceptor(await mintToken(t.jwtSecret, { subject: "comfyui", roles: ["machine"] }))],
      }),
    );
    const res = await machine.ensureLoras({
      jobId: "job-1",
      userId: DEV_USER,
      workflowId: "wf-1",
      workflowName: "Anime Portrait Generator",
      refs: [{ source: LoraSource.USER, identifier: loraId }],
    });
    expect(res.results[0]?.error).toBeUndefined();
  };

  test("has steps", () => expect(steps.length).toBeGreaterThan(10));

  test.each(steps.map((s, i) => [i + 1, s.command, s] as const))("step %i: $ %s", async (_i, command, step) => {
    if (command.includes("after a job's EnsureLoras")) await jobUses(/show (\d+)/.exec(command)![1]!);
    // Usage and cache statistics reach the registry over NATS a moment later.
    const eventual = command.includes("after a job's EnsureLoras") || command.includes("cache-stats");
    let output = "";
    const check = async () => {
      output = await run(command);
      if (process.env.UPDATE_README !== "1") expect(comparable(output)).toBe(comparable(step.output));
    };
    if (eventual && process.env.UPDATE_README !== "1") await eventually(check, { timeoutMs: 15_000 });
    else if (eventual) await new Promise((r) => setTimeout(r, 3000)).then(check);
    else await check();
    actual.push(`$ ${command}\n${output}`);
  });
});

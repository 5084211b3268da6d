import { execFile, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { startTestStack, type TestStack } from "./support/test-stack.js";
import {
  blobEndpointOf,
  callPickle,
  type FaultProxy,
  kohyaMetadata,
  putBlockIndex,
  startFaultProxy,
  testEnv,
  torchZip,
  writeLoraFile,
} from "@emprops/testkit";

const ROOT = path.resolve(__dirname, "..", "..", "..");
const CLI = path.join(ROOT, "tools", "lora-cli", "dist", "main.js");
const MiB = 1024 * 1024;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

describe("the lora CLI against the real stack", () => {
  let t: TestStack;
  let proxy: FaultProxy;
  let dir: string;
  let config: string;

  /** Runs the built CLI as a user would, with its own config file and no terminal. */
  const lora = (args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> =>
    new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [CLI, ...args], {
        env: { PATH: process.env.PATH, HOME: dir, LORA_CONFIG: config, ...env },
        stdio: ["ignore", "pipe", "pipe"],
      });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
      child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
      child.on("error", reject);
      child.on("close", (code) => resolve({ code, stdout, stderr }));
    });
  const admin = (args: string[]) => lora(["--token", t.adminToken, ...args]);
  const storedConfig = () => JSON.parse(readFileSync(config, "utf8")) as { token?: string; uploads?: object };
  /** Block indexes of the Put Block requests that reached storage, in order. */
  const storedBlocks = () =>
    proxy.requests
      .filter((r) => r.status >= 200 && r.status < 300 && putBlockIndex(r.path) >= 0)
      .map((r) => putBlockIndex(r.path));
  /** Block indexes of the Put Block requests the proxy cut. */
  const cutBlocks = () => proxy.requests.filter((r) => r.fault === "cut").map((r) => putBlockIndex(r.path));

  beforeAll(async () => {
    // The CLI as installed: compiled (incrementally; fast when up to date).
    await promisify(execFile)(
      process.execPath,
      [path.join(ROOT, "node_modules/typescript/bin/tsc"), "-b", "tools/lora-cli"],
      {
        cwd: ROOT,
      },
    );
    dir = mkdtempSync(path.join(os.tmpdir(), "lora-cli-"));
    config = path.join(dir, "config", "lora.json");
    // Signed URLs point at the proxy, so a test can cut Put Block requests like a failing network.
    const azure = testEnv().azureConnectionString;
    proxy = await startFaultProxy(blobEndpointOf(azure));
    t = await startTestStack("clients-cli", {
      azureConnectionString: proxy.viaConnectionString(azure),
      env: {
        gateway: { UPLOAD_BLOCK_SIZE_BYTES: String(MiB) },
        machineCache: { CACHE_STATS_INTERVAL_SECONDS: "1" },
      },
    });
  });

  afterAll(async () => {
    await t?.stop();
    await proxy?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("login checks the token and stores it, readable by the owner only", async () => {
    const bad = await lora(["--registry", t.stack.registry.url, "login", "--token", "not-a-token"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("not a JWT");

    const run = await lora(["--registry", t.stack.registry.url, "login", "--token", t.userToken]);
    expect(run).toMatchObject({ code: 0 });
    expect(run.stdout).toContain(`Logged in to ${t.stack.registry.url} as ${t.userId}`);
    expect(run.stdout).toContain("0 B of 10.0 GiB used");
    expect(storedConfig()).toMatchObject({ registryUrl: t.stack.registry.url, token: t.userToken });
    expect(statSync(config).mode & 0o777).toBe(0o600);

    const quota = await lora(["quota"]);
    expect(quota.code).toBe(0);
    expect(quota.stdout).toMatch(/used 0 B of 10\.0 GiB, 10\.0 GiB available/);
    expect(quota.stdout).toContain("LoRAs    0 of 100");
  });

  let loraId = "";
  let sha256 = "";

  test("upload shows progress, then the metadata read from the file; ls, search, tags and show find it", async () => {
    const file = path.join(dir, "anime_style.safetensors");
    sha256 = writeLoraFile(file, 3.5 * MiB, kohyaMetadata("anime_style"));
    const run = await lora(["upload", file, "--tags", "style,anime"]);
    // One line per block as it lands (blocks finish in any order), from 0% to 100%.
    const lines = run.stderr.trim().split("\n");
    expect(lines).toHaveLength(5);
    lines.forEach((line, block) =>
      expect(line).toMatch(new RegExp(`^progress: \\d+% \\([\\d.]+ (B|KiB|MiB) of 3\\.5 MiB, block ${block}/4\\)$`)),
    );
    expect(lines[0]).toBe("progress: 0% (0 B of 3.5 MiB, block 0/4)");
    expect(lines[4]).toBe("progress: 100% (3.5 MiB of 3.5 MiB, block 4/4)");
    const percents = lines.map((l) => Number(/(\d+)%/.exec(l)?.[1]));
    expect(percents).toEqual([...percents].sort((a, b) => a - b));
    expect(run.code).toBe(0);
    const id = /Uploaded anime_style\.safetensors as LoRA (\d+)/.exec(run.stdout)?.[1];
    expect(id).toBeDefined();
    loraId = id!;
    expect(run.stdout).toMatch(/base model: +SDXL/);
    expect(run.stdout).toMatch(/rank: +16 \(alpha 8\)/);
    expect(run.stdout).toMatch(/trigger words: +anime style, vibrant colors, 1girl/);
    expect(run.stdout).toMatch(/Quota: 3\.5 MiB of 10\.0 GiB used .*, 1 of 100 LoRAs/);
    expect(storedConfig().uploads).toEqual({});

    const ls = await lora(["ls"]);
    expect(ls.code).toBe(0);
    const [head, row, ...rest] = ls.stdout.trim().split("\n");
    expect(head).toMatch(/^ID +NAME +SIZE +UPLOADED +BASE MODEL +TRIGGER WORDS +USES +TAGS$/);
    expect(row).toMatch(
      new RegExp(`^ *${loraId} +anime_style\\.safetensors +3\\.5 MiB .* SDXL +anime style, .* +0 +style, anime$`),
    );
    expect(rest).toEqual([]);
    expect(ls.stderr).toBe("1 of 1 LoRAs\n");

    const search = await lora(["ls", "--search", "ANIME", "--json"]);
    expect(JSON.parse(search.stdout)).toMatchObject({
      loras: [{ id: loraId, name: "anime_style.safetensors" }],
      totalSize: 1,
    });
    expect((await lora(["ls", "--search", "portrait"])).stdout).toBe("No LoRA matches.\n");
    expect(JSON.parse((await lora(["ls", "--tag", "style", "--json"])).stdout).loras).toHaveLength(1);
    expect(JSON.parse((await lora(["ls", "--tag", "landscape", "--json"])).stdout).loras ?? []).toHaveLength(0);
    // Search reaches trigger words; base model and last use filter on the server.
    expect(JSON.parse((await lora(["ls", "--search", "VIBRANT COL", "--json"])).stdout).totalSize).toBe(1);
    expect((await lora(["ls", "--base-model", "flux.1"])).stdout).toBe("No LoRA matches.\n");
    expect(JSON.parse((await lora(["ls", "--base-model", "sdxl", "--json"])).stdout).totalSize).toBe(1);
    const unused = await lora([
      "ls",
      "--unused-since",
      "2000-01-01",
      "--sort",
      "last_used",
      "--order",
      "asc",
      "--json",
    ]);
    expect(JSON.parse(unused.stdout)).toMatchObject({ loras: [{ id: loraId }], totalSize: 1 });

    const show = await lora(["show", loraId]);
    expect(show.code).toBe(0);
    expect(show.stdout).toContain(`sha256:          ${sha256}`);
    expect(show.stdout).toMatch(/epochs: +10/);
    expect(show.stdout).toMatch(/training images: +50/);
    expect(show.stdout).toContain("No workflow has used it yet.");
  });

  test("an interrupted upload exits 10 and the same command resumes it, sending only the missing blocks", async () => {
    const file = path.join(dir, "portrait_detail.safetensors");
    writeLoraFile(file, 4 * MiB, kohyaMetadata("portrait_detail"));
    proxy.requests.length = 0;
    proxy.rules.push({
      method: "PUT",
      path: (p) => putBlockIndex(p) >= 2,
      times: Infinity,
      fault: { kind: "cut", afterBytes: 0 },
    });
    const first = await lora(["upload", file], { LORA_UPLOAD_RETRIES: "1" });
    expect(first.code).toBe(10);
    expect(first.stderr).toContain("upload interrupted");
    expect(first.stderr).toContain("Run the same command again to resume");
    expect(Object.keys(storedConfig().uploads ?? {})).toHaveLength(1);
    expect(storedBlocks().sort()).toEqual([0, 1]);
    expect(new Set(cutBlocks())).toEqual(new Set([2, 3]));

    proxy.reset();
    const second = await lora(["upload", file]);
    expect(second.stderr).toContain("already uploaded");
    expect(second.stderr).toMatch(/Resuming upload [0-9a-f-]{36}: 2 of 4 blocks \(2\.0 MiB\) already uploaded/);
    expect(second.code).toBe(0);
    expect(second.stdout).toMatch(/Uploaded portrait_detail\.safetensors as LoRA \d+/);
    expect(storedBlocks().sort()).toEqual([2, 3]);
    expect(storedConfig().uploads).toEqual({});
    expect(JSON.parse((await lora(["ls", "--json"])).stdout).totalSize).toBe(2);
  });

  test("ls pages through with page tokens", async () => {
    const first = await lora(["ls", "--limit", "1", "--sort", "name", "--order", "asc"]);
    expect(first.code).toBe(0);
    expect(first.stdout).toContain("anime_style.safetensors");
    const token = /--page-token (\S+)$/.exec(first.stderr.trim())?.[1];
    expect(first.stderr).toMatch(/^1 of 2 LoRAs; for the next page, repeat the command with --page-token \S+\n$/);
    const second = await lora(["ls", "--limit", "1", "--sort", "name", "--order", "asc", "--page-token", token!]);
    expect(second.stdout).toContain("portrait_detail.safetensors");
    expect(second.stderr).toBe("1 of 2 LoRAs\n");
    const all = JSON.parse(
      (await lora(["ls", "--limit", "1", "--sort", "name", "--order", "asc", "--all", "--json"])).stdout,
    );
    expect(all.loras.map((l: { name: string }) => l.name)).toEqual([
      "anime_style.safetensors",
      "portrait_detail.safetensors",
    ]);
    const bad = await lora(["ls", "--page-token", "forged"]);
    expect(bad.code).toBe(8);
    expect(bad.stderr).toContain("[INVALID_PAGE_TOKEN]");
  });

  test("files the server refuses exit 6 with its reason; over quota exits 7 with the numbers", async () => {
    const text = path.join(dir, "notes.txt");
    writeFileSync(text, "hello");
    const wrongType = await lora(["upload", text]);
    expect(wrongType.code).toBe(6);
    expect(wrongType.stderr).toBe("lora: File must be .safetensors or .pt format [INVALID_FILE_FORMAT]\n");

    const broken = path.join(dir, "broken.safetensors");
    writeFileSync(broken, Buffer.alloc(64 * 1024, 0x41));
    const invalid = await lora(["upload", broken]);
    expect(invalid.code).toBe(6);
    expect(invalid.stderr).toMatch(/lora: .+ \[INVALID_FILE_FORMAT\]\n$/);

    const evil = path.join(dir, "evil.pt");
    writeFileSync(evil, torchZip(callPickle("os", "system", "ls")));
    const unsafe = await lora(["upload", evil]);
    expect(unsafe.code).toBe(6);
    expect(unsafe.stderr).toMatch(/lora: .*os\.system.* \[UNSAFE_PICKLE\]\n$/);

    const setQuota = await admin(["admin", "quota", "set", t.userId, "--gb", String(8 / 1024)]);
    expect(setQuota.code).toBe(0);
    expect(setQuota.stdout).toContain("used 7.5 MiB of 8.0 MiB");
    expect(setQuota.stdout).toContain("Warning: more than 80% of the quota is used");
    const big = path.join(dir, "too_big.safetensors");
    writeLoraFile(big, 2 * MiB, kohyaMetadata("too_big"));
    const over = await lora(["upload", big]);
    expect(over.code).toBe(7);
    expect(over.stderr).toContain("[QUOTA_EXCEEDED]");
    expect(over.stderr).toMatch(/Storage: 7\.5 MiB of 8\.0 MiB used, [\d.]+ KiB available; this file needs 2\.0 MiB/);

    // Over the warning, `lora quota` names the LoRAs unused longest that bring it back under.
    const quota = await lora(["quota"]);
    expect(quota.code).toBe(0);
    expect(quota.stdout).toMatch(
      /Unused longest: deleting these frees [\d.]+ MiB \(lora rm ID\)\nID +NAME +SIZE +LAST USED\n/,
    );
    expect(quota.stdout).toMatch(/\n +\d+ +\S+\.safetensors +[\d.]+ MiB +never\n/);
    expect(quota.stderr).toMatch(/^You have used 9\d% of your LoRA quota \(warning at 80%\)\. Deleting the/);
    const json = JSON.parse((await lora(["quota", "--json"])).stdout) as { deletionSuggestions: unknown[] };
    expect(json.deletionSuggestions.length).toBeGreaterThan(0);
    expect((await admin(["admin", "quota", "set", t.userId, "--reset"])).code).toBe(0);
    expect(JSON.parse((await lora(["ls", "--json"])).stdout).totalSize).toBe(2);
  });

  test("a file whose first bytes show it is wrong is refused before anything is sent, with the verifier's reason", async () => {
    const image = path.join(dir, "picture.safetensors");
    const png = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    writeFileSync(image, Buffer.concat([png, Buffer.alloc(3 * MiB)]));
    const refusal = "lora: The file is named .safetensors but its content is a PNG image. [INVALID_FILE_FORMAT]\n";
    proxy.reset();
    // Not even the registry is asked: with an address nothing listens on, the answer is the same.
    const offline = await lora(["--registry", "http://127.0.0.1:9", "--token", t.userToken, "upload", image]);
    expect(offline).toEqual({ code: 6, stdout: "", stderr: refusal });
    const run = await lora(["upload", image]);
    expect(run).toEqual({ code: 6, stdout: "", stderr: refusal });
    expect(proxy.requests).toEqual([]);
    expect(Object.keys(storedConfig().uploads ?? {}).filter((key) => key.includes("picture"))).toEqual([]);
  });

  test("a file name the registry would refuse is refused before anything is sent, with the rule's message", async () => {
    const cases: [string, string[], RegExp][] = [
      [
        "CON.safetensors",
        [],
        /^lora: "CON" is a device name on Windows .*\[INVALID_NAME\]\n {2}rename the file, or upload it under another name with --name <name>\n$/,
      ],
      [
        "evil\u202Egpj.safetensors",
        [],
        /text-direction control U\+202E \(RIGHT-TO-LEFT OVERRIDE\) at position 5.*\[INVALID_NAME\]/,
      ],
      ["zero\u200Bwidth.safetensors", [], /invisible character U\+200B \(ZERO WIDTH SPACE\).*\[INVALID_NAME\]/],
      [" leading.safetensors", [], /starts with a space: remove it\. \[INVALID_NAME\]/],
      ["ok.safetensors", ["--name", "nul.pt"], /^lora: "NUL" is a device name on Windows .*\[INVALID_NAME\]\n$/],
      [
        "ok.safetensors",
        ["--name", `${"日".repeat(63)}.safetensors`],
        /201 bytes long in UTF-8; at most 200 are allowed/,
      ],
    ];
    const before = JSON.parse((await lora(["ls", "--json"])).stdout).totalSize;
    for (const [fileName, extra, message] of cases) {
      const file = path.join(dir, fileName);
      writeLoraFile(file, 64 * 1024, kohyaMetadata("named"));
      const run = await lora(["upload", file, ...extra]);
      expect(run.code).toBe(8);
      expect(run.stdout).toBe("");
      expect(run.stderr).toMatch(message);
    }
    expect(JSON.parse((await lora(["ls", "--json"])).stdout).totalSize).toBe(before);
  });

  test("bad arguments and server errors give clear messages and their exit codes", async () => {
    const cases: [string[], NodeJS.ProcessEnv, number, RegExp][] = [
      [["show", "abc"], {}, 2, /a LoRA id is a positive number/],
      [["ls", "--sort", "colour"], {}, 2, /Allowed choices are created_at, name, size/],
      [["upload", path.join(dir, "missing.safetensors")], {}, 2, /no such file/],
      [["frobnicate"], {}, 2, /unknown command 'frobnicate'/],
      [["admin", "quota", "set", "not-a-uuid", "--gb", "1"], {}, 2, /a user id is a UUID/],
      [["show", "999999"], {}, 5, /\[LORA_NOT_FOUND\]/],
      [["rm", "999999"], {}, 5, /\[LORA_NOT_FOUND\]/],
      [["--token", "garbage", "ls"], {}, 3, /\[TOKEN_INVALID\]/],
      [
        ["ls"],
        { LORA_CONFIG: path.join(dir, "nobody.json"), LORA_REGISTRY_URL: t.stack.registry.url },
        3,
        /run `lora login` first/,
      ],
      [["admin", "audit"], {}, 4, /\[ROLE_REQUIRED\]/],
      [["--registry", "http://127.0.0.1:9", "ls"], {}, 10, /cannot reach the registry at http:\/\/127\.0\.0\.1:9/],
    ];
    for (const [args, env, code, message] of cases) {
      const run = await lora(args, env);
      expect({ args, code: run.code, stderr: run.stderr }).toEqual({
        args,
        code,
        stderr: expect.stringMatching(message),
      });
    }
  });

  test("admin commands: audit log and every machine's cache statistics", async () => {
    const audit = await admin(["admin", "audit", "--user", t.userId, "--action", "lora.upload.complete"]);
    expect(audit.code).toBe(0);
    expect(audit.stdout.trim().split("\n")).toHaveLength(3);
    expect(audit.stdout).toContain(loraId);

    // The machine-cache reported at start, before the stack was ready; the registry keeps the latest report.
    const stats = await admin(["admin", "cache-stats", "--json"]);
    expect(JSON.parse(stats.stdout).machines).toEqual([expect.objectContaining({ machineId: "clients-cli-machine" })]);
    const table = await admin(["admin", "cache-stats", "--machine", "clients-cli-machine"]);
    expect(table.stdout).toMatch(/^MACHINE +CACHE +MAX .*\nclients-cli-machine +/);
    expect((await admin(["admin", "cache-stats", "--machine", "elsewhere"])).stdout).toBe(
      "Machine elsewhere has not reported.\n",
    );
  });

  test("download saves the owner's file with progress, checks its sha256, and refuses to overwrite", async () => {
    const source = path.join(dir, "to_fetch.safetensors");
    const sha = writeLoraFile(source, 2.5 * MiB, kohyaMetadata("to_fetch"));
    const uploaded = await lora(["upload", source, "--json"]);
    const id = (JSON.parse(uploaded.stdout) as { id: string }).id;
    const out = path.join(dir, "fetched", "copy.safetensors");
    mkdirSync(path.dirname(out));
    const run = await lora(["download", id, "-o", out]);
    expect(run.code).toBe(0);
    expect(run.stdout).toBe(`Downloaded to_fetch.safetensors (2.5 MiB) to ${out}\n  sha256: ${sha} (checked)\n`);
    const lines = run.stderr.trim().split("\n");
    expect(lines.length).toBeGreaterThanOrEqual(3);
    expect(lines.every((l) => /^progress: \d+% \([\d.]+ (B|KiB|MiB) of 2\.5 MiB\)$/.test(l))).toBe(true);
    expect(lines.at(-1)).toBe("progress: 100% (2.5 MiB of 2.5 MiB)");
    expect(createHash("sha256").update(readFileSync(out)).digest("hex")).toBe(sha);
    expect(existsSync(`${out}.part`)).toBe(false);

    const again = await lora(["download", id, "-o", out]);
    expect(again.code).toBe(2);
    expect(again.stderr).toContain("exists: choose another file with -o, or overwrite it with --force");
    expect((await lora(["download", id, "-o", out, "--force"])).code).toBe(0);

    // Without -o: the LoRA's name, in the current directory.
    const here = await new Promise<Run>((resolve, reject) => {
      const child = spawn(process.execPath, [CLI, "download", id], {
        cwd: path.dirname(out),
        env: { PATH: process.env.PATH, HOME: dir, LORA_CONFIG: config },
        stdio: ["ignore", "pipe", "pipe"],
      });
      let stdout = "";
      child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
      child.on("error", reject);
      child.on("close", (code) => resolve({ code, stdout, stderr: "" }));
    });
    expect(here.code).toBe(0);
    expect(readFileSync(path.join(path.dirname(out), "to_fetch.safetensors")).equals(readFileSync(source))).toBe(true);

    const stranger = await lora(["--token", await t.tokenFor("00000000-0000-4000-8000-0000000000aa"), "download", id]);
    expect(stranger.code).toBe(5);
    expect(stranger.stderr).toBe(`lora: LoRA with ID ${id} not found or access denied [LORA_NOT_FOUND]\n`);
    expect(await lora(["rm", id, "--yes"])).toMatchObject({ code: 0 });
  });

  test("rm deletes the LoRA and returns its bytes to the quota", async () => {
    const run = await lora(["rm", loraId]);
    expect(run.code).toBe(0);
    expect(run.stdout).toBe(`Deleted anime_style.safetensors (LoRA ${loraId}); 3.5 MiB returned to your quota.\n`);
    expect((await lora(["show", loraId])).code).toBe(5);
    const quota = JSON.parse((await lora(["quota", "--json"])).stdout);
    expect(quota.quota.usedCount).toBe(1);
    expect(quota.loras.map((l: { id: string }) => l.id)).not.toContain(loraId);
  });
});

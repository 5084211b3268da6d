import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { LoraService } from "@emprops/contracts";
import { bearerInterceptor } from "@emprops/platform";

const ROOT = path.resolve(__dirname, "..", "..", "..");
const MAIN = path.join(ROOT, "tools", "dev-stack", "dist", "main.js");

/** Processes whose command line names `dir` (the embedded PostgreSQL, Azurite and nats-server keep their data there). */
function processesUsing(dir: string): string[] {
  const found: string[] = [];
  for (const pid of readdirSync("/proc").filter((name) => /^\d+$/.test(name))) {
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ");
      if (cmdline.includes(dir)) found.push(`${pid}: ${cmdline.trim()}`);
    } catch {
      // Gone meanwhile.
    }
  }
  return found;
}

/**
 * `npm start`'s process, Ctrl-C'd the way a terminal does it: SIGINT to its
 * whole process group (every process that did not leave it gets one).
 */
describe("npm start stops cleanly on Ctrl-C", () => {
  let dataDir: string;
  let child: ChildProcess | undefined;
  let output = "";

  beforeAll(() => {
    execFileSync(path.join(ROOT, "node_modules", ".bin", "tsc"), ["-b", "tools/dev-stack"], { cwd: ROOT });
    dataDir = mkdtempSync(path.join(os.tmpdir(), "dev-stack-sigint-"));
    // As root, PostgreSQL runs as the postgres user, which must reach its data directory.
    chmodSync(dataDir, 0o755);
  });

  afterAll(() => {
    if (child?.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      process.kill(-child.pid, "SIGKILL");
    }
    rmSync(dataDir, { recursive: true, force: true });
  });

  test("every service logs stopped, the dependencies stop after them, exit code 0", async () => {
    child = spawn(process.execPath, [MAIN], {
      cwd: ROOT,
      // A process group of its own, led by the dev stack, as a shell's job would be.
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
      // Embedded dependencies (no DATABASE_URL, NATS_URL or Azure settings), free ports, a data directory of its own.
      env: {
        PATH: process.env.PATH,
        HOME: process.env.HOME,
        EMPROPS_DATA_DIR: dataDir,
        REGISTRY_PORT: "0",
        GATEWAY_PORT: "0",
        MACHINE_CACHE_PORT: "0",
        STUDIO_PORT: "0",
        LOG_LEVEL: "info",
      },
    });
    const running = child;
    running.stdout?.on("data", (d: Buffer) => (output += d.toString()));
    running.stderr?.on("data", (d: Buffer) => (output += d.toString()));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      running.once("exit", (code, signal) => resolve({ code, signal })),
    );
    const early = exited.then(({ code, signal }) => {
      throw new Error(`npm start ended before it was ready (${signal ?? code}):\n${output}`);
    });
    await Promise.race([
      early,
      new Promise<void>((resolve) => {
        const check = () => (/\nready: /.test(output) ? resolve() : setTimeout(check, 100));
        check();
      }),
    ]);
    early.catch(() => {});

    // The registry's pool holds open connections when PostgreSQL is asked to stop: a real call first.
    const registryUrl = /lora-registry\s+(http:\/\/\S+)/.exec(output)?.[1] as string;
    const userToken = /dev user \S+ token:\n\s+(\S+)/.exec(output)?.[1] as string;
    const lora = createClient(
      LoraService,
      createConnectTransport({
        baseUrl: registryUrl,
        httpVersion: "1.1",
        interceptors: [bearerInterceptor(userToken)],
      }),
    );
    expect((await lora.listLoras({})).loras).toEqual([]);
    expect(processesUsing(dataDir).length).toBeGreaterThanOrEqual(2);

    process.kill(-(running.pid as number), "SIGINT");
    // Under `npm start`, npm forwards the terminal's SIGINT to its child once more.
    process.kill(running.pid as number, "SIGINT");
    const { code, signal } = await exited;

    expect({ code, signal }).toEqual({ code: 0, signal: null });
    const logged = output
      .split("\n")
      .filter((line) => line.startsWith("{"))
      .map((line) => JSON.parse(line) as { level: string; msg: string });
    const messages = logged.map((l) => l.msg);
    for (const service of ["machine-cache", "lora-registry", "blob-gateway", "dev-stack"]) {
      expect(messages).toContain(`${service} stopped`);
    }
    // Services first: the last service stopped before the dev stack reported its dependencies gone.
    expect(messages.indexOf("blob-gateway stopped")).toBeLessThan(messages.indexOf("dev-stack stopped"));
    expect(logged.filter((l) => l.level === "error" || l.level === "fatal")).toEqual([]);
    expect(output).not.toMatch(/Unhandled|terminating connection/);
    // PostgreSQL, Azurite and nats-server are gone with it.
    expect(processesUsing(dataDir)).toEqual([]);
  }, 120_000);
});

import { spawn } from "node:child_process";
import { once } from "./once.js";
import { guardAgainstOrphan } from "./orphan-guard.js";
import { OutputTail } from "./output-tail.js";
import { stopChild, unrefChild } from "./stop-child.js";

export interface SpawnServiceOptions<T> {
  /** Name used in messages. */
  name: string;
  command: string;
  args: string[];
  /** The child's environment (default: this process's). */
  env?: NodeJS.ProcessEnv;
  /** Looks at everything printed so far (stdout and stderr); returns a value once the service is ready. */
  ready(output: string): T | undefined;
  timeoutMs: number;
  /** Signal for a graceful stop. Default SIGTERM. */
  stopSignal?: NodeJS.Signals;
  /** Appended to the error when the command cannot be run at all. */
  notFoundHint?: string;
  /** Removed by the orphan guard if this process dies without calling stop(). */
  scratchDir?: string;
}

export interface SpawnedService<T> {
  /** What `ready` returned. */
  ready: T;
  pid: number;
  /** The last few kilobytes the process printed. */
  output(): string;
  /** Stops the process and waits until it has exited. Idempotent. */
  stop(): Promise<void>;
}

const MAX_STARTUP_CHARS = 256_000;

/** Spawns a long-running process and waits until its output says it is ready. */
export async function spawnService<T>(options: SpawnServiceOptions<T>): Promise<SpawnedService<T>> {
  const { name, timeoutMs } = options;
  const stopSignal = options.stopSignal ?? "SIGTERM";
  const tail = new OutputTail();
  const guard = guardAgainstOrphan(stopSignal, options.scratchDir);
  const child = spawn(options.command, options.args, { stdio: ["ignore", "pipe", "pipe"], env: options.env });
  if (child.pid !== undefined) guard.watch(child.pid);
  // A server nobody stopped must not keep its owner (a jest run) alive for
  // ever; when the owner exits, the guard stops it. Startup and stop() wait
  // on timers of their own, which do keep the owner alive meanwhile.
  unrefChild(child);
  // Once the pid is gone it may be reused: the watchdog must not kill it later.
  child.once("exit", () => void guard.release());

  const stop = async () => {
    await stopChild(child, stopSignal);
    await guard.release();
  };

  let value: T;
  try {
    value = await new Promise<T>((resolve, reject) => {
      let settled = false;
      let startup = "";
      const settle = (error: Error | undefined, result?: T) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (error) reject(error);
        else resolve(result as T);
      };
      const timer = setTimeout(
        () => settle(new Error(`${name} did not come up within ${timeoutMs / 1000} s${tail.quote()}`)),
        timeoutMs,
      );
      const onData = (chunk: Buffer) => {
        tail.push(chunk);
        if (settled) return;
        startup = (startup + chunk.toString()).slice(-MAX_STARTUP_CHARS);
        const ready = options.ready(startup);
        if (ready !== undefined) settle(undefined, ready);
      };
      child.stdout?.on("data", onData);
      child.stderr?.on("data", onData);
      child.once("error", (error) => {
        const hint = options.notFoundHint && (error as NodeJS.ErrnoException).code === "ENOENT";
        settle(
          new Error(
            `${name}: cannot run ${options.command}: ${error.message}${hint ? `. ${options.notFoundHint}` : ""}`,
          ),
        );
      });
      child.once("exit", (code, signal) =>
        settle(new Error(`${name} exited before it was ready (${signal ?? `code ${code}`})${tail.quote()}`)),
      );
    });
  } catch (error) {
    await stopChild(child, "SIGKILL");
    await guard.release();
    throw error;
  }

  return { ready: value, pid: child.pid as number, output: () => tail.toString(), stop: once(stop) };
}

import path from "node:path";
import { type SpawnedService, spawnService } from "@emprops/testkit";

export type ServiceName = "lora-registry" | "blob-gateway" | "machine-cache";

export interface ServiceProcess {
  name: ServiceName;
  url: string;
  pid: number;
  /** The last few kilobytes it logged. */
  output(): string;
  /** SIGTERM and wait (a --cpu-prof profile is written as it exits). */
  stop(): Promise<void>;
}

/**
 * One service as a node runs it: its built dist/main.js in a process of its
 * own, configured by environment, so its memory and CPU are its own. Ready
 * when it logs its "listening" line (LOG_LEVEL must let info through).
 */
export async function startServiceProcess(
  name: ServiceName,
  env: NodeJS.ProcessEnv,
  nodeArgs: string[] = [],
): Promise<ServiceProcess> {
  const main = path.join(path.dirname(require.resolve(`@emprops/${name}/package.json`)), "dist", "main.js");
  const listening = new RegExp(`"url":"(http://[^"]+)"[^\\n]*${name} listening`);
  const spawned: SpawnedService<string> = await spawnService({
    name,
    command: process.execPath,
    args: [...nodeArgs, main],
    env: { ...process.env, LOG_LEVEL: "info", ...env },
    ready: (output) => listening.exec(output)?.[1],
    timeoutMs: 60_000,
  });
  return { name, url: spawned.ready, pid: spawned.pid, output: spawned.output, stop: spawned.stop };
}

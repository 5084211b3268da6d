import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { MiB } from "./stats.js";

/** One run of a command-line tool: wall time, and the CPU time it (and its children) used. */
export interface ToolRun {
  seconds: number;
  /** User + system CPU seconds of the command, from its shell's cutime + cstime (10 ms resolution). */
  cpuSeconds: number;
}

/** Clock ticks per second of /proc/<pid>/stat on Linux. */
const TICKS = 100;

/**
 * Runs a command in a shell that, after it exits, prints its own
 * /proc/self/stat: cutime and cstime there are the CPU time of the children
 * it waited for, i.e. exactly the command's.
 */
export function runMeasured(command: string, args: string[]): Promise<ToolRun & { stderr: string }> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn("sh", ["-c", '"$@" >&2 || exit $?; cat /proc/$$/stat', "sh", command, ...args], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
    child.stderr.on("data", (c: Buffer) => (stderr = (stderr + c.toString()).slice(-4000)));
    child.on("error", reject);
    child.on("close", (code) => {
      const seconds = (performance.now() - started) / 1000;
      if (code !== 0) return reject(new Error(`${command} exited with ${code}: ${stderr.trim()}`));
      // Fields after the command name start at state (field 3); cutime and cstime are fields 16 and 17.
      const fields = stdout.slice(stdout.lastIndexOf(")") + 2).split(" ");
      const cpuSeconds = (Number(fields[13]) + Number(fields[14])) / TICKS;
      if (!Number.isFinite(cpuSeconds)) return reject(new Error(`unreadable /proc stat: ${stdout}`));
      resolve({ seconds, cpuSeconds, stderr });
    });
  });
}

/** One `curl` stream of the URL to a file. */
export function curlDownload(url: string, file: string): Promise<ToolRun> {
  return runMeasured("curl", ["--silent", "--show-error", "--fail", "--output", file, url]);
}

/**
 * `aria2c` with `connections` connections and splits of at least `partBytes`
 * (the usual multi-connection downloader), writing the file without
 * preallocating it (as the machine cache does).
 */
export function aria2Download(
  url: string,
  file: string,
  opts: { connections: number; partBytes: number },
): Promise<ToolRun> {
  const n = String(opts.connections);
  return runMeasured("aria2c", [
    `--max-connection-per-server=${n}`,
    `--split=${n}`,
    `--min-split-size=${Math.max(1, Math.round(opts.partBytes / MiB))}M`,
    "--file-allocation=none",
    "--allow-overwrite=true",
    "--auto-file-renaming=false",
    "--check-certificate=false",
    "--max-tries=1",
    "--quiet=true",
    `--dir=${path.dirname(file)}`,
    `--out=${path.basename(file)}`,
    url,
  ]);
}

/** `sha256sum` of a file. */
export function sha256sum(file: string): Promise<ToolRun> {
  return runMeasured("sha256sum", [file]);
}

/** Removes a downloaded file and whatever its tool left beside it. */
export async function removeDownload(file: string): Promise<void> {
  await Promise.all([fs.rm(file, { force: true }), fs.rm(`${file}.aria2`, { force: true })]);
}

/**
 * aria2c from Debian's aria2 package when it is not on PATH (apt works on this
 * machine kind); curl and sha256sum are part of the base system.
 */
export function ensureDownloadTools(log: (line: string) => void): void {
  const has = (cmd: string) => {
    try {
      execFileSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" });
      return true;
    } catch {
      return false;
    }
  };
  if (!has("aria2c")) {
    log("installing aria2 (apt-get install -y aria2) for the aria2c baseline ...");
    execFileSync("sh", ["-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq aria2"], {
      stdio: "inherit",
    });
  }
  for (const cmd of ["curl", "sha256sum", "aria2c"]) {
    if (!has(cmd)) throw new Error(`${cmd} is needed for the download baselines`);
  }
}

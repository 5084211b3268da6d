import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import os from "node:os";

export interface MachineInfo {
  cpu: string;
  cores: number;
  ramGb: number;
  node: string;
  os: string;
  /** The file system the scratch files and blobs live on. */
  disk: string;
  loadAverage: string;
}

/** What the figures were measured on. */
export function describeMachine(dir: string): MachineInfo {
  const cpus = os.cpus();
  let disk = "unknown";
  try {
    // Source, type, size and free space of the file system holding `dir`.
    const [, line] = execFileSync("df", ["-hT", dir], { encoding: "utf8" }).trim().split("\n");
    const [source, type, size, , avail] = (line ?? "").split(/\s+/);
    const device = (source ?? "").replace(/^\/dev\//, "");
    let kind = "";
    try {
      const rotational = readFileSync(`/sys/block/${device}/queue/rotational`, "utf8").trim();
      kind = rotational === "1" ? ", reported rotational" : ", reported non-rotational";
    } catch {
      kind = "";
    }
    disk = `${source} (${type}${kind}), ${size}, ${avail} free`;
  } catch (err) {
    disk = `unknown (${(err as Error).message})`;
  }
  return {
    cpu: cpus[0]?.model.trim() ?? "unknown",
    cores: cpus.length,
    ramGb: Math.round(os.totalmem() / 1e9),
    node: process.version,
    os: `${os.type()} ${os.release()}`,
    disk,
    loadAverage: loadAverage(),
  };
}

export function loadAverage(): string {
  return os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(" ");
}

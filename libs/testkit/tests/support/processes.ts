import { readdirSync, readFileSync } from "node:fs";

/** Whether a process with this pid is running. A zombie is not: it has exited and only awaits its reaper. */
export function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

function processes(): { pid: number; ppid: number; cmdline: string[] }[] {
  const result = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      // The command name is in parentheses and may itself hold spaces.
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0");
      result.push({ pid: Number(entry), ppid, cmdline });
    } catch {
      // Gone while we looked.
    }
  }
  return result;
}

/** Pids of the direct children of `pid` (Linux /proc). */
export function childrenOf(pid: number): number[] {
  return processes()
    .filter((p) => p.ppid === pid)
    .map((p) => p.pid);
}

/** Pids of processes whose command line has an argument containing `text`. */
export function processesMentioning(text: string): number[] {
  return processes()
    .filter((p) => p.pid !== process.pid && p.cmdline.some((arg) => arg.includes(text)))
    .map((p) => p.pid);
}

/** Pids of the orphan-guard watchdogs `pid` started and that are still running. */
export function watchdogsOf(pid: number): number[] {
  return processes()
    .filter((p) => p.ppid === pid && p.cmdline.includes("orphan-guard"))
    .map((p) => p.pid);
}

import { readFileSync } from "node:fs";

/** Clock ticks per second of /proc/<pid>/stat on Linux. */
const TICKS = 100;

/** CPU seconds (user + system) a process has used so far. */
export function cpuSecondsOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the command name (which may hold spaces) start at state; utime and stime are 14th and 15th.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / TICKS;
}

/** Share of one core a process used while `during` ran (1 = one core busy). */
export async function cpuShareDuring<T>(
  pids: number[],
  during: () => Promise<T>,
): Promise<{ result: T; shares: number[] }> {
  const started = performance.now();
  const before = pids.map((pid) => (pid === process.pid ? selfCpu() : cpuSecondsOf(pid)));
  const result = await during();
  const seconds = (performance.now() - started) / 1000;
  const shares = pids.map((pid, i) => ((pid === process.pid ? selfCpu() : cpuSecondsOf(pid)) - before[i]!) / seconds);
  return { result, shares };
}

function selfCpu(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** CPU time of the whole machine so far, all cores (from /proc/stat): busy and total, seconds. */
export function machineCpuSeconds(): { busy: number; total: number } {
  const line = readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "";
  const ticks = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal (guest time is already in user).
  const total = ticks.slice(0, 8).reduce((a, b) => a + b, 0);
  const idle = (ticks[3] ?? 0) + (ticks[4] ?? 0);
  return { busy: (total - idle) / TICKS, total: total / TICKS };
}

/** A process whose CPU use is watched during each step. */
export interface Watched {
  name: string;
  pid: number;
}

/**
 * Cores each watched process kept busy while `during` ran (CPU seconds ÷
 * wall seconds; 1 = one core), and the whole machine's busy cores (other
 * work on a shared machine included) under "machine".
 */
export async function coresDuring<T>(
  watched: Watched[],
  during: () => Promise<T>,
): Promise<{ result: T; cores: Record<string, number> }> {
  const cpuOf = (pid: number) => (pid === process.pid ? selfCpu() : cpuSecondsOf(pid));
  const started = performance.now();
  const before = watched.map((w) => cpuOf(w.pid));
  const machineBefore = machineCpuSeconds().busy;
  const result = await during();
  const seconds = (performance.now() - started) / 1000;
  const cores: Record<string, number> = {};
  watched.forEach((w, i) => (cores[w.name] = (cpuOf(w.pid) - before[i]!) / seconds));
  cores.machine = (machineCpuSeconds().busy - machineBefore) / seconds;
  return { result, cores };
}

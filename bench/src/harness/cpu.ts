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

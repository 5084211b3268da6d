import { readFileSync } from "node:fs";

export interface ProcessMemory {
  /** Resident set now (VmRSS), bytes. */
  rss: number;
  /** The kernel's high-water mark of the resident set (VmHWM), bytes. */
  hwm: number;
}

export function memoryOf(pid: number): ProcessMemory {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kib = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? 0) * 1024;
  return { rss: kib("VmRSS"), hwm: kib("VmHWM") };
}

export interface PeakMemory {
  /** RSS when sampling began. */
  before: number;
  /** Highest RSS sampled while `during` ran. */
  peak: number;
  /** VmHWM afterwards (the process's lifetime peak). */
  hwm: number;
}

/** Runs `during` while sampling the RSS of `pid` every `everyMs`. */
export async function peakMemoryDuring<T>(
  pid: number,
  during: () => Promise<T>,
  everyMs = 10,
): Promise<{ result: T; memory: PeakMemory }> {
  const before = memoryOf(pid).rss;
  let peak = before;
  const sampler = setInterval(() => {
    peak = Math.max(peak, memoryOf(pid).rss);
  }, everyMs);
  try {
    const result = await during();
    const after = memoryOf(pid);
    return { result, memory: { before, peak: Math.max(peak, after.rss), hwm: after.hwm } };
  } finally {
    clearInterval(sampler);
  }
}

import { readFileSync } from "node:fs";
import type { StepWindow } from "./upload.js";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface Frame {
  /** Function and where it is: "name (file:line)". */
  frame: string;
  /** Its most frequent caller, for native frames that have no file. */
  via: string;
  selfMs: number;
  /** Of the window's busy time (samples other than idle). */
  share: number;
}

export interface ProfileSummary {
  /** Sampled time inside the window that was not idle. */
  busyMs: number;
  windowMs: number;
  top: Frame[];
  /** Busy time by where the code comes from: our packages, dependencies, Node.js, V8. */
  areas: { area: string; share: number }[];
}

const SPECIAL = new Set(["(garbage collector)", "(program)", "(idle)", "(root)"]);

/** Short, repository-relative location of a frame's script. */
function where(url: string): string {
  const path = url.replace(/^file:\/\//, "");
  const nm = path.lastIndexOf("/node_modules/");
  if (nm >= 0) return path.slice(nm + "/node_modules/".length);
  const repo = /\/(services|libs|tools|bench)\/.*$/.exec(path);
  return repo ? repo[0].slice(1) : path;
}

function areaOf(node: ProfileNode): string {
  const { url, functionName } = node.callFrame;
  if (SPECIAL.has(functionName))
    return functionName === "(garbage collector)" ? "V8 garbage collector" : "V8 (program)";
  if (!url) return "native code (V8 builtins, Node.js bindings)";
  if (url.startsWith("node:")) return "Node.js (JavaScript)";
  const nm = url.lastIndexOf("/node_modules/");
  if (nm >= 0) {
    const parts = url.slice(nm + "/node_modules/".length).split("/");
    return `dependency ${parts[0]?.startsWith("@") ? `${parts[0]}/${parts[1]}` : parts[0]}`;
  }
  const ours = /\/(services|libs|tools)\/([^/]+)\//.exec(url);
  return ours ? `ours: ${ours[2]}` : "other";
}

const label = (node: ProfileNode) => {
  const { functionName, url, lineNumber } = node.callFrame;
  const name = functionName || "(anonymous)";
  return url ? `${name} (${where(url)}:${lineNumber + 1})` : name;
};

/**
 * Self time per frame of a --cpu-prof profile, only for samples taken inside
 * `window` (same monotonic clock as process.hrtime), busiest first.
 */
export function summariseProfile(file: string, window?: StepWindow, topN = 12): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parentOf = new Map<number, ProfileNode>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parentOf.set(c, n);
  const self = new Map<string, { ms: number; callers: Map<string, number> }>();
  const areas = new Map<string, number>();
  let busy = 0;
  let t = profile.startTime;
  const from = window?.fromUs ?? -Infinity;
  const to = window?.toUs ?? Infinity;
  for (let i = 0; i < profile.samples.length; i++) {
    const delta = profile.timeDeltas[i] ?? 0;
    t += delta;
    if (t < from || t > to) continue;
    const node = byId.get(profile.samples[i]!);
    if (!node || node.callFrame.functionName === "(idle)") continue;
    const ms = delta / 1000;
    busy += ms;
    const key = label(node);
    const entry = self.get(key) ?? { ms: 0, callers: new Map<string, number>() };
    entry.ms += ms;
    // The nearest caller with a script: what a native frame was doing it for.
    let caller = parentOf.get(node.id);
    while (caller && !caller.callFrame.url && !SPECIAL.has(caller.callFrame.functionName)) {
      caller = parentOf.get(caller.id);
    }
    const callerKey = caller ? label(caller) : "";
    entry.callers.set(callerKey, (entry.callers.get(callerKey) ?? 0) + ms);
    self.set(key, entry);
    const area = areaOf(node);
    areas.set(area, (areas.get(area) ?? 0) + ms);
  }
  const top = [...self]
    .sort((a, b) => b[1].ms - a[1].ms)
    .slice(0, topN)
    .map(([frame, e]) => ({
      frame,
      via: [...e.callers].sort((a, b) => b[1] - a[1])[0]?.[0] ?? "",
      selfMs: e.ms,
      share: busy > 0 ? e.ms / busy : 0,
    }));
  return {
    busyMs: busy,
    windowMs: window ? (window.toUs - window.fromUs) / 1000 : (profile.endTime - profile.startTime) / 1000,
    top,
    areas: [...areas].sort((a, b) => b[1] - a[1]).map(([area, ms]) => ({ area, share: busy > 0 ? ms / busy : 0 })),
  };
}

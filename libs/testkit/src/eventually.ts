export interface EventuallyOptions {
  /** Give up after this long (default 20 s). */
  timeoutMs?: number;
  /** Pause between tries (default 100 ms). */
  intervalMs?: number;
}

/**
 * Runs `check` until it passes, for things that happen asynchronously (an
 * event consumed, a file deleted, a span exported). A check passes when it
 * neither throws nor returns `false`; an `expect(...)` inside it is the usual
 * way to say what must hold. Returns what the passing check returned. When the
 * time is up it throws the last failure — the check's own error (a failed
 * expect with its message) or one saying it returned false — so a test that
 * forgets to look at the result still fails. Modelled on Testing Library's
 * `waitFor`, which rethrows the last error the same way.
 */
export async function eventually<T>(
  check: () => T | Promise<T>,
  opts: EventuallyOptions = {},
): Promise<Exclude<T, false>> {
  const timeoutMs = opts.timeoutMs ?? 20_000;
  const intervalMs = opts.intervalMs ?? 100;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let failure: unknown;
    try {
      const result = await check();
      if (result !== false) return result as Exclude<T, false>;
      failure = new Error("the check returned false");
    } catch (err) {
      failure = err;
    }
    if (Date.now() >= deadline) {
      if (failure instanceof Error) {
        failure.message = `not met within ${timeoutMs} ms: ${failure.message}`;
        throw failure;
      }
      throw new Error(`not met within ${timeoutMs} ms: ${String(failure)}`, { cause: failure });
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

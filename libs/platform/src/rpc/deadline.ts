import { AsyncLocalStorage } from "node:async_hooks";
import { performance } from "node:perf_hooks";
import type { Interceptor } from "@connectrpc/connect";

/** When the call being handled must be answered (performance.now() time), for the calls it makes. */
const callerDeadline = new AsyncLocalStorage<number>();

/**
 * What is kept back of a caller's remaining deadline for the answer (an error
 * at worst) to reach it in time: a tenth, at least 100 ms and at most 1 s.
 */
export function answerMarginMs(remainingMs: number): number {
  return Math.min(1000, Math.max(100, remainingMs / 10));
}

const GRPC_TIMEOUT_UNIT_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 1e-3, n: 1e-6 };

/** The deadline a request carries: gRPC's `grpc-timeout` or Connect's `connect-timeout-ms` (undefined: none). */
export function requestTimeoutMs(header: Headers): number | undefined {
  const grpc = /^(\d{1,8})([HMSmun])$/.exec(header.get("grpc-timeout") ?? "");
  if (grpc) return Number(grpc[1]) * (GRPC_TIMEOUT_UNIT_MS[grpc[2] as string] as number);
  const connect = /^\d{1,10}$/.exec(header.get("connect-timeout-ms") ?? "");
  return connect ? Number(connect[0]) : undefined;
}

/**
 * Server side: the handler and every call it makes through a service client
 * know the caller's deadline. Every call gets a store of its own (Infinity
 * without a deadline): a connection's events may run in the context of
 * whichever call opened it, whose deadline is not this call's.
 */
export const callerDeadlineInterceptor: Interceptor = (next) => (req) => {
  const ms = requestTimeoutMs(req.header);
  return callerDeadline.run(ms === undefined ? Number.POSITIVE_INFINITY : performance.now() + ms, () => next(req));
};

/** What is left of the deadline of the call being handled (undefined: none, or not in a call). */
export function remainingCallerMs(): number | undefined {
  const at = callerDeadline.getStore();
  return at === undefined || at === Number.POSITIVE_INFINITY ? undefined : at - performance.now();
}

/**
 * The deadline of an outgoing call: its own (or the client's default), cut
 * to what is left of `callerMs` (default: the deadline of the call being
 * handled) less answerMarginMs, in whole milliseconds (grpc-timeout takes
 * integers) and at least 1 (0 would mean none).
 */
export function outgoingTimeoutMs(own: number | undefined, callerMs = remainingCallerMs()): number | undefined {
  if (callerMs === undefined) return own;
  const cut = callerMs - answerMarginMs(callerMs);
  return Math.max(1, Math.floor(Math.min(own ?? Number.POSITIVE_INFINITY, cut)));
}

/** Runs `fn` outside the call being handled: background work started by a call must not inherit its deadline. */
export function detachedFromCaller<T>(fn: () => T): T {
  return callerDeadline.exit(fn);
}

import { AsyncLocalStorage } from "node:async_hooks";
import { performance } from "node:perf_hooks";
import type { Interceptor } from "@connectrpc/connect";

/** When the call being handled must be answered (performance.now() time), for the calls it makes. */
const callerDeadline = new AsyncLocalStorage<number>();

/** Kept back from a caller's deadline so an answer (an error at worst) still reaches it in time. */
export const ANSWER_MARGIN_MS = 100;

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
 * to what is left of the caller's less ANSWER_MARGIN_MS, in whole
 * milliseconds (grpc-timeout takes integers) and at least 1 (0 would mean
 * none).
 */
export function outgoingTimeoutMs(own: number | undefined): number | undefined {
  const remaining = remainingCallerMs();
  if (remaining === undefined) return own;
  return Math.max(1, Math.floor(Math.min(own ?? Number.POSITIVE_INFINITY, remaining - ANSWER_MARGIN_MS)));
}

/** Runs `fn` outside the call being handled: background work started by a call must not inherit its deadline. */
export function detachedFromCaller<T>(fn: () => T): T {
  return callerDeadline.exit(fn);
}

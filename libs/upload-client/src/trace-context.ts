import type { DescService } from "@bufbuild/protobuf";
import type { CallOptions, Client } from "@connectrpc/connect";

/** 16 random bytes as 32 hex digits: a W3C trace id (never all zeros). */
export function newTraceId(): string {
  for (;;) {
    const id = hex(16);
    if (!/^0+$/.test(id)) return id;
  }
}

function hex(bytes: number): string {
  const buf = new Uint8Array(bytes);
  globalThis.crypto.getRandomValues(buf);
  return Array.from(buf, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A `traceparent` (W3C Trace Context, version 00, sampled) in the trace, with a fresh parent id. */
export function traceparent(traceId: string): string {
  let spanId = hex(8);
  while (/^0+$/.test(spanId)) spanId = hex(8);
  return `00-${traceId}-${spanId}-01`;
}

/**
 * The client, with every call carrying a `traceparent` of one trace: the
 * services' spans of the whole upload (create, resume, complete) then join
 * one trace, whichever process or page made the calls.
 */
export function inTrace<S extends DescService>(client: Client<S>, traceId: string): Client<S> {
  return new Proxy(client, {
    get(target, prop, receiver) {
      const method = Reflect.get(target, prop, receiver) as unknown;
      if (typeof method !== "function") return method;
      return (request: unknown, options: CallOptions = {}) => {
        const headers = new Headers(options.headers);
        headers.set("traceparent", traceparent(traceId));
        return (method as (r: unknown, o: CallOptions) => unknown).call(target, request, { ...options, headers });
      };
    },
  });
}

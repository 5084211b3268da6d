import type { DescService } from "@bufbuild/protobuf";
import { type CallOptions, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { bearerInterceptor } from "../auth.js";
import { clientTracingInterceptor } from "../telemetry.js";
import { outgoingTimeoutMs } from "./deadline.js";

/**
 * A gRPC (HTTP/2) client of another service, sending a bearer token and the
 * trace context on every call. Every call's deadline — its own `timeoutMs`,
 * else `defaultTimeoutMs` — is cut to what is left of the deadline of the
 * call being handled (callerDeadlineInterceptor, on every server), so a
 * caller's deadline reaches the services behind it.
 */
export function createServiceClient<S extends DescService>(
  service: S,
  baseUrl: string,
  token: string | (() => Promise<string> | string),
  extra: Interceptor[] = [],
  opts: { defaultTimeoutMs?: number } = {},
): Client<S> {
  const transport = createGrpcTransport({
    baseUrl,
    interceptors: [clientTracingInterceptor(), bearerInterceptor(token), ...extra],
  });
  const client = createClient(service, transport);
  return new Proxy(client, {
    get(target, name, receiver) {
      const method: unknown = Reflect.get(target, name, receiver);
      if (typeof method !== "function") return method;
      return (input: unknown, options: CallOptions = {}) =>
        (method as (i: unknown, o: CallOptions) => unknown)(input, {
          ...options,
          timeoutMs: outgoingTimeoutMs(options.timeoutMs ?? opts.defaultTimeoutMs),
        });
    },
  });
}

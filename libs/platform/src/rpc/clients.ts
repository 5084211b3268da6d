import type { DescService } from "@bufbuild/protobuf";
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { bearerInterceptor } from "../auth.js";
import { clientTracingInterceptor } from "../telemetry.js";

/**
 * A gRPC (HTTP/2) client of another service, sending a bearer token and the
 * trace context on every call.
 */
export function createServiceClient<S extends DescService>(
  service: S,
  baseUrl: string,
  token: string | (() => Promise<string> | string),
  extra: Interceptor[] = [],
): Client<S> {
  const transport = createGrpcTransport({
    baseUrl,
    interceptors: [clientTracingInterceptor(), bearerInterceptor(token), ...extra],
  });
  return createClient(service, transport);
}

import { existsSync, readdirSync } from "node:fs";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

/**
 * Field names in lowerCamelCase (as in protobuf-es and proto3 JSON), int64 as
 * decimal strings, enums as names, absent fields filled with defaults, and the
 * name of the set field of each oneof under the oneof's name.
 */
export const DEFAULT_LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

/** Applied when a call passes no deadline: a hung server fails the call, not the whole test. */
export const DEFAULT_DEADLINE_MS = 10_000;

export interface GrpcJsClientOptions {
  /** Default: the repository's `proto/` directory, found by findProtoRoot(). */
  protoRoot?: string;
  /** Default: plaintext (h2c), as our servers listen locally. */
  credentials?: grpc.ChannelCredentials;
  /** Default: DEFAULT_LOADER_OPTIONS. */
  loaderOptions?: protoLoader.Options;
  channelOptions?: grpc.ChannelOptions;
}

export interface GrpcCallOptions {
  /** e.g. `{ authorization: "Bearer …" }` */
  metadata?: grpc.Metadata | Record<string, string>;
  /** Default DEFAULT_DEADLINE_MS. */
  deadlineMs?: number;
}

/** The repository's `proto/` directory: the nearest one above `from` holding grpc/health/v1/health.proto. */
export function findProtoRoot(from: string = __dirname): string {
  for (let dir = path.resolve(from); ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, "proto");
    if (existsSync(path.join(candidate, "grpc", "health", "v1", "health.proto"))) return candidate;
    if (path.dirname(dir) === dir)
      throw new Error(`no proto/ directory with grpc/health/v1/health.proto above ${from}`);
  }
}

const cache = new Map<string, protoLoader.PackageDefinition>();

/**
 * The grpc-js service definition of a fully qualified service name such as
 * `emprops.lora.v1.LoraService`, `grpc.health.v1.Health` or
 * `grpc.reflection.v1alpha.ServerReflection`. Loads only that package's
 * directory (buf's PACKAGE_DIRECTORY_MATCH puts package a.b.v1 in a/b/v1/).
 */
export function loadServiceDefinition(serviceName: string, options: GrpcJsClientOptions = {}): grpc.ServiceDefinition {
  const protoRoot = options.protoRoot ?? findProtoRoot();
  const packageName = serviceName.split(".").slice(0, -1).join(".");
  const packageDir = path.join(protoRoot, ...packageName.split("."));
  if (!packageName || !existsSync(packageDir)) {
    throw new Error(`no proto package directory for ${JSON.stringify(serviceName)} (looked in ${packageDir})`);
  }
  const key = `${packageDir}\0${options.loaderOptions ? "custom" : "default"}`;
  let definition = options.loaderOptions ? undefined : cache.get(key);
  if (!definition) {
    const files = readdirSync(packageDir)
      .filter((file) => file.endsWith(".proto"))
      .map((file) => path.relative(protoRoot, path.join(packageDir, file)));
    definition = protoLoader.loadSync(files, {
      ...(options.loaderOptions ?? DEFAULT_LOADER_OPTIONS),
      includeDirs: [protoRoot],
    });
    if (!options.loaderOptions) cache.set(key, definition);
  }
  const found = definition[serviceName];
  // Messages and enums carry a `format`; services are plain maps of methods.
  if (!found || "format" in found) {
    const services = Object.keys(definition).filter((name) => !("format" in (definition[name] ?? {})));
    throw new Error(`no service ${serviceName} in ${packageDir}; it has: ${services.join(", ") || "none"}`);
  }
  return found as grpc.ServiceDefinition;
}

/** A generic grpc-js client for any service in our protos; its methods are also callable through grpcUnary(). */
export function createGrpcJsClient(
  address: string,
  serviceName: string,
  options: GrpcJsClientOptions = {},
): grpc.Client {
  const Client = grpc.makeGenericClientConstructor(loadServiceDefinition(serviceName, options), serviceName);
  return new Client(address, options.credentials ?? grpc.credentials.createInsecure(), options.channelOptions);
}

/**
 * Calls a unary method (`"Check"` or `"check"`) of a client made by
 * createGrpcJsClient(). Rejects with grpc-js's ServiceError (`code`,
 * `details`, `metadata`) when the server answers with an error status.
 */
export function grpcUnary<Response = Record<string, unknown>>(
  client: grpc.Client,
  method: string,
  request: object,
  options: GrpcCallOptions = {},
): Promise<Response> {
  const definition = methodDefinition(client, method);
  if (definition.requestStream || definition.responseStream) throw new Error(`${definition.path} is not unary`);
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(
      definition.path,
      definition.requestSerialize,
      definition.responseDeserialize,
      request,
      toMetadata(options.metadata),
      callOptions(options),
      (error, response) => (error ? reject(error) : resolve(response as Response)),
    );
  });
}

/**
 * Calls a server-streaming method of a client made by createGrpcJsClient()
 * and collects its messages; `onMessage` sees each as it arrives and may
 * cancel the call (grpc-js's cancel(): the server sees the client go away).
 * Resolves with the messages once the stream ends; rejects with grpc-js's
 * ServiceError when it ends with an error status (CANCELLED after a cancel).
 */
export function grpcServerStream<Response = Record<string, unknown>>(
  client: grpc.Client,
  method: string,
  request: object,
  options: GrpcCallOptions & { onMessage?: (message: Response, cancel: () => void) => void } = {},
): Promise<Response[]> {
  const definition = methodDefinition(client, method);
  if (definition.requestStream || !definition.responseStream)
    throw new Error(`${definition.path} is not server-streaming`);
  const call = client.makeServerStreamRequest(
    definition.path,
    definition.requestSerialize,
    definition.responseDeserialize,
    request,
    toMetadata(options.metadata),
    callOptions(options),
  );
  return new Promise((resolve, reject) => {
    const messages: Response[] = [];
    call.on("data", (message: Response) => {
      messages.push(message);
      options.onMessage?.(message, () => call.cancel());
    });
    call.on("error", reject);
    call.on("end", () => resolve(messages));
  });
}

/**
 * Asks a server's reflection service (`v1` by default, or `v1alpha`) to list
 * its services, over the bidirectional ServerReflectionInfo stream, and
 * returns their fully qualified names in the server's order.
 */
export async function listServicesViaReflection(
  address: string,
  options: Omit<GrpcJsClientOptions, "loaderOptions"> & GrpcCallOptions & { version?: "v1" | "v1alpha" } = {},
): Promise<string[]> {
  const client = createGrpcJsClient(address, `grpc.reflection.${options.version ?? "v1"}.ServerReflection`, {
    ...options,
    loaderOptions: undefined,
  });
  try {
    const definition = methodDefinition(client, "ServerReflectionInfo");
    const call = client.makeBidiStreamRequest(
      definition.path,
      definition.requestSerialize,
      definition.responseDeserialize,
      toMetadata(options.metadata),
      callOptions(options),
    );
    return await new Promise<string[]>((resolve, reject) => {
      const names: string[] = [];
      call.on("data", (response: ReflectionResponse) => {
        if (response.errorResponse) {
          const { errorCode, errorMessage } = response.errorResponse;
          reject(new Error(`reflection error ${errorCode}: ${errorMessage}`));
        }
        for (const service of response.listServicesResponse?.service ?? []) names.push(service.name);
      });
      call.on("error", reject);
      call.on("end", () => resolve(names));
      // `list_services` takes any string; "" asks for everything.
      call.write({ listServices: "" });
      call.end();
    });
  } finally {
    client.close();
  }
}

interface ReflectionResponse {
  listServicesResponse?: { service: { name: string }[] } | null;
  errorResponse?: { errorCode: number; errorMessage: string } | null;
}

function methodDefinition(client: grpc.Client, method: string): grpc.MethodDefinition<object, object> {
  const service = (client.constructor as Partial<grpc.ServiceClientConstructor>).service;
  if (!service) throw new Error("not a client made by createGrpcJsClient()");
  const found = service[method] ?? Object.values(service).find((definition) => definition.originalName === method);
  if (!found) throw new Error(`no method ${method}; the service has ${Object.keys(service).join(", ")}`);
  return found;
}

function toMetadata(metadata: GrpcCallOptions["metadata"]): grpc.Metadata {
  if (metadata instanceof grpc.Metadata) return metadata;
  const result = new grpc.Metadata();
  for (const [key, value] of Object.entries(metadata ?? {})) result.set(key, value);
  return result;
}

function callOptions(options: GrpcCallOptions): grpc.CallOptions {
  return { deadline: Date.now() + (options.deadlineMs ?? DEFAULT_DEADLINE_MS) };
}

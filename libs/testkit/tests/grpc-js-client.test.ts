import * as grpc from "@grpc/grpc-js";
import {
  createGrpcJsClient,
  findProtoRoot,
  grpcUnary,
  listServicesViaReflection,
  loadServiceDefinition,
} from "@emprops/testkit";
import path from "node:path";

type Reflection = grpc.ServerDuplexStream<{ listServices?: string; messageRequest?: string }, Record<string, unknown>>;

/** A real grpc-js server with health and both reflection versions, as our services expose them. */
async function startServer(reflectionError = false): Promise<{ address: string; server: grpc.Server }> {
  const server = new grpc.Server();
  server.addService(loadServiceDefinition("grpc.health.v1.Health"), {
    Check: (
      call: grpc.ServerUnaryCall<{ service: string }, unknown>,
      callback: grpc.sendUnaryData<{ status: string }>,
    ) => {
      if (call.request.service === "" || call.request.service === "emprops.lora.v1.LoraService") {
        callback(null, { status: "SERVING" });
      } else {
        callback({ code: grpc.status.NOT_FOUND, details: `unknown service ${call.request.service}` });
      }
    },
    Watch: (call: grpc.ServerWritableStream<unknown, unknown>) => call.end(),
  });
  const services = ["emprops.lora.v1.LoraService", "grpc.health.v1.Health"];
  for (const version of ["v1", "v1alpha"]) {
    server.addService(loadServiceDefinition(`grpc.reflection.${version}.ServerReflection`), {
      ServerReflectionInfo: (call: Reflection) => {
        call.on("data", (request) => {
          if (reflectionError) {
            call.write({ errorResponse: { errorCode: grpc.status.UNIMPLEMENTED, errorMessage: "not here" } });
          } else if (request.messageRequest === "listServices") {
            call.write({
              listServicesResponse: { service: [...services, `${version}-only`].map((name) => ({ name })) },
            });
          }
        });
        call.on("end", () => call.end());
      },
    });
  }
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, bound) =>
      error ? reject(error) : resolve(bound),
    ),
  );
  return { address: `127.0.0.1:${port}`, server };
}

describe("grpc-js client helpers", () => {
  let address: string;
  let server: grpc.Server;

  beforeAll(async () => {
    ({ address, server } = await startServer());
  });
  afterAll(() => {
    server?.forceShutdown();
  });

  it("finds the repository's proto directory", () => {
    expect(findProtoRoot()).toBe(path.resolve(__dirname, "../../../proto"));
  });

  it("calls a unary method and returns the decoded response", async () => {
    const client = createGrpcJsClient(address, "grpc.health.v1.Health");
    try {
      await expect(grpcUnary(client, "Check", { service: "" })).resolves.toEqual({ status: "SERVING" });
      await expect(grpcUnary(client, "check", { service: "emprops.lora.v1.LoraService" })).resolves.toEqual({
        status: "SERVING",
      });
    } finally {
      client.close();
    }
  });

  it("rejects with the server's status code and details", async () => {
    const client = createGrpcJsClient(address, "grpc.health.v1.Health");
    try {
      await expect(grpcUnary(client, "Check", { service: "nope" })).rejects.toMatchObject({
        code: grpc.status.NOT_FOUND,
        details: "unknown service nope",
      });
    } finally {
      client.close();
    }
  });

  it("sends metadata and honours the deadline", async () => {
    const slow = new grpc.Server();
    let seen: string | undefined;
    slow.addService(loadServiceDefinition("grpc.health.v1.Health"), {
      Check: (call: grpc.ServerUnaryCall<unknown, unknown>) => {
        seen = String(call.metadata.get("authorization")[0]);
        // never answers
      },
      Watch: (call: grpc.ServerWritableStream<unknown, unknown>) => call.end(),
    });
    const port = await new Promise<number>((resolve, reject) =>
      slow.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
    );
    const client = createGrpcJsClient(`127.0.0.1:${port}`, "grpc.health.v1.Health");
    try {
      await expect(
        grpcUnary(client, "Check", {}, { metadata: { authorization: "Bearer t" }, deadlineMs: 300 }),
      ).rejects.toMatchObject({ code: grpc.status.DEADLINE_EXCEEDED });
      expect(seen).toBe("Bearer t");
    } finally {
      client.close();
      slow.forceShutdown();
    }
  });

  it("lists services through reflection v1 and v1alpha", async () => {
    await expect(listServicesViaReflection(address)).resolves.toEqual([
      "emprops.lora.v1.LoraService",
      "grpc.health.v1.Health",
      "v1-only",
    ]);
    await expect(listServicesViaReflection(address, { version: "v1alpha" })).resolves.toEqual([
      "emprops.lora.v1.LoraService",
      "grpc.health.v1.Health",
      "v1alpha-only",
    ]);
  });

  it("reports a reflection error response", async () => {
    const failing = await startServer(true);
    try {
      await expect(listServicesViaReflection(failing.address)).rejects.toThrow("reflection error 12: not here");
    } finally {
      failing.server.forceShutdown();
    }
  });

  it("builds clients for our own services", () => {
    for (const name of [
      "emprops.lora.v1.LoraService",
      "emprops.lora.v1.LoraAdminService",
      "emprops.lora.v1.LoraResolverService",
      "emprops.blob.v1.BlobGatewayService",
      "emprops.cache.v1.MachineCacheService",
    ]) {
      const client = createGrpcJsClient(address, name);
      client.close();
    }
    expect(Object.keys(loadServiceDefinition("emprops.lora.v1.LoraService"))).toContain("CreateLoraUpload");
  });

  it("says what is wrong with an unknown service or method", () => {
    expect(() => loadServiceDefinition("emprops.lora.v1.NoSuchService")).toThrow(
      /no service emprops\.lora\.v1\.NoSuchService in .*proto\/emprops\/lora\/v1; it has: .*LoraService/,
    );
    expect(() => loadServiceDefinition("nope.v9.Thing")).toThrow(/no proto package directory/);
    const client = createGrpcJsClient(address, "grpc.health.v1.Health");
    try {
      expect(() => grpcUnary(client, "Nope", {})).toThrow(/no method Nope; the service has Check, Watch/);
      expect(() => grpcUnary(client, "Watch", {})).toThrow(/Watch is not unary/);
    } finally {
      client.close();
    }
  });
});

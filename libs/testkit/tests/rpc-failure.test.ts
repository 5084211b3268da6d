import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { ErrorReason, LoraService } from "@emprops/contracts";
import { createLogger, notFound, type RpcServer, startRpcServer } from "@emprops/platform";
import { rpcFailure } from "@emprops/testkit";

describe("rpcFailure", () => {
  let server: RpcServer;
  const client = () => createClient(LoraService, createConnectTransport({ baseUrl: server.url, httpVersion: "1.1" }));

  beforeAll(async () => {
    server = await startRpcServer({
      name: "rpc-failure-test",
      host: "127.0.0.1",
      port: 0,
      logger: createLogger("rpc-failure-test", "silent"),
      routes: (router) =>
        router.service(LoraService, {
          getLora: ({ loraId }) => {
            throw notFound(ErrorReason.LORA_NOT_FOUND, `LoRA ${loraId} not found`, { lora_id: loraId });
          },
          getQuota: () => ({}),
        }),
    });
  });

  afterAll(() => server?.close());

  it("returns the code name, reason, message and metadata a client received", async () => {
    expect(await rpcFailure(client().getLora({ loraId: "42" }))).toEqual({
      code: "NotFound",
      reason: "LORA_NOT_FOUND",
      message: "LoRA 42 not found",
      metadata: { lora_id: "42" },
    });
  });

  it("gives an empty reason to an error without ErrorInfo", async () => {
    expect(await rpcFailure(client().listLoras({}))).toMatchObject({ code: "Unimplemented", reason: "" });
  });

  it("fails when the call succeeds", async () => {
    await expect(rpcFailure(client().getQuota({}))).rejects.toThrow("the call succeeded but was expected to fail");
  });

  it("fails when the call fails with something other than a ConnectError", async () => {
    await expect(rpcFailure(Promise.reject(new TypeError("boom")))).rejects.toThrow(
      "the call failed without a ConnectError: TypeError: boom",
    );
    expect(await rpcFailure(Promise.reject(new ConnectError("gone", Code.Unavailable)))).toMatchObject({
      code: "Unavailable",
      message: "gone",
    });
  });
});

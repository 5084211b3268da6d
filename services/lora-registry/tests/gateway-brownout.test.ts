import net from "node:net";
import { randomUUID } from "node:crypto";
import { rpcFailure } from "@emprops/testkit";
import { type RegistryUnderTest, startRegistryForTest } from "./support/registry.js";

/** A blob-gateway that accepts connections and never answers (a hung process, a black-holed network). */
async function frozenGateway(): Promise<{ url: string; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("error", () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

let gateway: Awaited<ReturnType<typeof frozenGateway>>;
let t: RegistryUnderTest;

beforeAll(async () => {
  gateway = await frozenGateway();
  t = await startRegistryForTest("gw-brownout", { env: { BLOB_GATEWAY_URL: gateway.url } });
});

afterAll(async () => {
  await t?.stop();
  await gateway?.close();
});

test("the caller's deadline reaches the gateway call: a hung gateway answers DEPENDENCY_UNAVAILABLE within it, not the caller's DEADLINE_EXCEEDED", async () => {
  const { lora } = t.as(randomUUID());
  const failure = await rpcFailure(
    lora.createLoraUpload({ name: "style.safetensors", sizeBytes: 1024n }, { timeoutMs: 3000 }),
  );
  expect(failure).toMatchObject({ code: "Unavailable", reason: "DEPENDENCY_UNAVAILABLE" });
  // Nothing was kept of the refused upload: the quota reservation went back.
  const { quota } = await lora.getQuota({});
  expect(quota).toMatchObject({ usedBytes: 0n, usedCount: 0 });
});

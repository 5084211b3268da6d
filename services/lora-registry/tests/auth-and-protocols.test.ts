import { randomUUID } from "node:crypto";
import { mintToken } from "@emprops/platform";
import { createGrpcJsClient, grpcUnary, listServicesViaReflection, rpcFailure } from "@emprops/testkit";
import { JWT_SECRET, type RegistryUnderTest, startRegistryForTest } from "./support/registry.js";
import { seedLoras } from "./support/seed.js";

let t: RegistryUnderTest;
const user = randomUUID();

beforeAll(async () => {
  t = await startRegistryForTest("auth", { env: { CORS_ALLOWED_ORIGINS: "https://studio.example.com" } });
  await seedLoras(t.db, [{ userId: user, name: "style.safetensors", sizeBytes: 4096 }]);
});

afterAll(async () => {
  await t?.stop();
});

describe("authentication", () => {
  it("needs a bearer token for every service", async () => {
    const anonymous = t.withToken(undefined);
    for (const call of [
      anonymous.lora.getQuota({}),
      anonymous.admin.getCacheStats({}),
      anonymous.resolver.listPopularLoras({}),
    ]) {
      expect(await rpcFailure(call)).toMatchObject({ code: "Unauthenticated", reason: "TOKEN_MISSING" });
    }
  });

  it("refuses a token that is malformed, signed with another secret or expired", async () => {
    const wrongSecret = await mintToken("some-other-secret-0123456789", { subject: user });
    const expired = await mintToken(JWT_SECRET, { subject: user, ttlSeconds: -60 });
    expect(await rpcFailure(t.withToken("not.a.jwt").lora.getQuota({}))).toMatchObject({
      code: "Unauthenticated",
      reason: "TOKEN_INVALID",
    });
    expect(await rpcFailure(t.withToken(wrongSecret).lora.getQuota({}))).toMatchObject({
      code: "Unauthenticated",
      reason: "TOKEN_INVALID",
    });
    expect(await rpcFailure(t.withToken(expired).lora.getQuota({}))).toMatchObject({
      code: "Unauthenticated",
      reason: "TOKEN_EXPIRED",
    });
  });

  it("gives each service only to its role", async () => {
    const denied = { code: "PermissionDenied", reason: "ROLE_REQUIRED" };
    expect(await rpcFailure(t.as(user).admin.getCacheStats({}))).toMatchObject(denied);
    expect(await rpcFailure(t.as(user).resolver.listPopularLoras({}))).toMatchObject(denied);
    expect(await rpcFailure(t.as("gpu-1", ["machine"]).admin.getCacheStats({}))).toMatchObject(denied);
    expect(await rpcFailure(t.as("root", ["admin"]).resolver.listPopularLoras({}))).toMatchObject(denied);
    await expect(t.as("root", ["admin"]).admin.getCacheStats({})).resolves.toBeDefined();
    await expect(t.as("gpu-1", ["machine"]).resolver.listPopularLoras({})).resolves.toBeDefined();
    // LoraService acts for a user: only a user's own token, and its subject must be a user id.
    const userTokenRequired = { code: "PermissionDenied", reason: "USER_TOKEN_REQUIRED" };
    expect(await rpcFailure(t.as("gpu-1", ["machine"]).lora.getQuota({}))).toMatchObject(userTokenRequired);
    expect(await rpcFailure(t.as(user, ["machine"]).lora.getQuota({}))).toMatchObject(userTokenRequired);
    expect(await rpcFailure(t.as("not-a-user-id").lora.getQuota({}))).toMatchObject(userTokenRequired);
  });
});

describe("protocols", () => {
  it("answers Connect JSON over HTTP/1.1, as curl and the Studio BFF call it", async () => {
    const token = await mintToken(JWT_SECRET, { subject: user });
    const res = await fetch(`${t.url}/emprops.lora.v1.LoraService/ListLoras`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: JSON.stringify({ search: "STYLE", sort: "LORA_SORT_FIELD_NAME", order: "SORT_ORDER_ASC" }),
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { loras: { name: string; sizeBytes: string }[]; totalSize: number };
    expect(body.totalSize).toBe(1);
    expect(body.loras[0]).toMatchObject({ name: "style.safetensors", sizeBytes: "4096" });

    const bad = await fetch(`${t.url}/emprops.lora.v1.LoraService/ListLoras`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: JSON.stringify({ pageSize: -1 }),
    });
    expect(bad.status).toBe(400);
    const error = (await bad.json()) as { code: string; details: { type: string; debug?: { reason: string } }[] };
    expect(error.code).toBe("invalid_argument");
    expect(error.details[0]?.type).toBe("google.rpc.ErrorInfo");

    // A field mask in JSON is one string of camelCase paths, as the README shows.
    const id = body.loras.length > 0 ? (await t.as(user).lora.listLoras({})).loras[0]!.id : "";
    const updated = await fetch(`${t.url}/emprops.lora.v1.LoraService/UpdateLora`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: JSON.stringify({
        loraId: id,
        name: "style_v2.safetensors",
        triggerWords: ["cel shading"],
        updateMask: "name,triggerWords",
      }),
    });
    expect(updated.status).toBe(200);
    const lora = ((await updated.json()) as { lora: { name: string; metadata: { triggerWords: string[] } } }).lora;
    expect(lora.name).toBe("style_v2.safetensors");
    expect(lora.metadata.triggerWords).toEqual(["cel shading"]);
  });

  it("answers a plain grpc-js client, health checks and reflection", async () => {
    const address = new URL(t.url).host;
    const token = await mintToken(JWT_SECRET, { subject: user });
    const client = createGrpcJsClient(address, "emprops.lora.v1.LoraService");
    try {
      const quota = await grpcUnary<{ quota: { usedCount: number; usedBytes: string } }>(
        client,
        "GetQuota",
        {},
        {
          metadata: { authorization: `Bearer ${token}` },
        },
      );
      expect(quota.quota).toMatchObject({ usedCount: 1, usedBytes: "4096" });
    } finally {
      client.close();
    }
    const health = createGrpcJsClient(address, "grpc.health.v1.Health");
    try {
      const check = (service: string) => grpcUnary<{ status: string }>(health, "Check", { service });
      // This registry has no blob-gateway: what needs one is not ready (readiness), the server is alive (liveness).
      expect(await check("")).toEqual({ status: "SERVING" });
      expect(await check("emprops.lora.v1.LoraAdminService")).toEqual({ status: "SERVING" });
      expect(await check("emprops.lora.v1.LoraService")).toEqual({ status: "NOT_SERVING" });
    } finally {
      health.close();
    }
    const services = await listServicesViaReflection(address);
    expect(services).toEqual(
      expect.arrayContaining([
        "emprops.lora.v1.LoraService",
        "emprops.lora.v1.LoraAdminService",
        "emprops.lora.v1.LoraResolverService",
      ]),
    );
  });

  it("lets the Studio page's origin call from a browser, and no other", async () => {
    const preflight = (origin: string) =>
      fetch(`${t.url}/emprops.lora.v1.LoraService/ListLoras`, {
        method: "OPTIONS",
        headers: {
          origin,
          "access-control-request-method": "POST",
          "access-control-request-headers": "authorization,content-type,connect-protocol-version",
        },
      });
    const allowed = await preflight("https://studio.example.com");
    expect(allowed.status).toBe(204);
    expect(allowed.headers.get("access-control-allow-origin")).toBe("https://studio.example.com");
    expect(allowed.headers.get("access-control-allow-headers")?.toLowerCase()).toContain("authorization");
    const other = await preflight("https://evil.example.com");
    expect(other.status).toBe(403);
    expect(other.headers.get("access-control-allow-origin")).toBeNull();
  });
});

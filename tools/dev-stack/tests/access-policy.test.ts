import { randomUUID } from "node:crypto";
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import {
  BlobGatewayService,
  LoraAdminService,
  LoraResolverService,
  LoraService,
  MachineCacheService,
  PlacementService,
} from "@emprops/contracts";
import { errorReason, mintToken, type Role } from "@emprops/platform";
import { SignJWT } from "jose";
import { startTestStack, type TestStack } from "./support/test-stack.js";

/**
 * Every public RPC of every service, called with every kind of token over
 * Connect and gRPC. "runs" means the token was admitted and the handler ran
 * (on an empty request it may still refuse the input, never the token).
 */
type Kind = "none" | "user" | "machine-with-user-sub" | "machine" | "service" | "scheduler" | "admin";
type Outcome = "runs" | "TOKEN_MISSING" | "USER_TOKEN_REQUIRED" | "ROLE_REQUIRED";

const KINDS: Kind[] = ["none", "user", "machine-with-user-sub", "machine", "service", "scheduler", "admin"];

/** Written out by hand (not derived from the services' policies), so a policy change shows here. */
const USER_ONLY: Record<Kind, Outcome> = {
  none: "TOKEN_MISSING",
  user: "runs",
  "machine-with-user-sub": "USER_TOKEN_REQUIRED",
  machine: "USER_TOKEN_REQUIRED",
  service: "USER_TOKEN_REQUIRED",
  scheduler: "USER_TOKEN_REQUIRED",
  admin: "USER_TOKEN_REQUIRED",
};
const only = (...roles: Role[]): Record<Kind, Outcome> => ({
  none: "TOKEN_MISSING",
  user: "ROLE_REQUIRED",
  "machine-with-user-sub": roles.includes("machine") ? "runs" : "ROLE_REQUIRED",
  machine: roles.includes("machine") ? "runs" : "ROLE_REQUIRED",
  service: roles.includes("service") ? "runs" : "ROLE_REQUIRED",
  scheduler: roles.includes("scheduler") ? "runs" : "ROLE_REQUIRED",
  admin: roles.includes("admin") ? "runs" : "ROLE_REQUIRED",
});

const EXPECTED: Record<string, Record<Kind, Outcome>> = {
  "emprops.lora.v1.LoraService/CreateLoraUpload": USER_ONLY,
  "emprops.lora.v1.LoraService/GetLoraUpload": USER_ONLY,
  "emprops.lora.v1.LoraService/CompleteLoraUpload": USER_ONLY,
  "emprops.lora.v1.LoraService/AbortLoraUpload": USER_ONLY,
  "emprops.lora.v1.LoraService/ListLoras": USER_ONLY,
  "emprops.lora.v1.LoraService/GetLora": USER_ONLY,
  "emprops.lora.v1.LoraService/UpdateLora": USER_ONLY,
  "emprops.lora.v1.LoraService/DeleteLora": USER_ONLY,
  "emprops.lora.v1.LoraService/GetQuota": USER_ONLY,
  "emprops.lora.v1.LoraService/GetLoraDownloadUrl": USER_ONLY,
  "emprops.lora.v1.LoraService/SetLoraPreview": USER_ONLY,
  "emprops.lora.v1.LoraService/DeleteLoraPreview": USER_ONLY,
  "emprops.lora.v1.LoraService/GetLoraPreviewUrls": USER_ONLY,
  "emprops.lora.v1.LoraAdminService/SetUserQuota": only("admin"),
  "emprops.lora.v1.LoraAdminService/GetUserQuota": only("admin"),
  "emprops.lora.v1.LoraAdminService/GetCacheStats": only("admin"),
  "emprops.lora.v1.LoraAdminService/ListAuditEvents": only("admin"),
  "emprops.lora.v1.LoraAdminService/DeleteUserLoras": only("admin"),
  "emprops.lora.v1.LoraAdminService/ReconcileQuota": only("admin"),
  "emprops.lora.v1.LoraAdminService/CheckStorageConsistency": only("admin"),
  "emprops.lora.v1.LoraAdminService/GetStorageConsistencyReport": only("admin"),
  "emprops.lora.v1.LoraResolverService/ResolveLoras": only("machine"),
  "emprops.lora.v1.LoraResolverService/ListPopularLoras": only("machine"),
  "emprops.lora.v1.PlacementService/RankMachines": only("scheduler"),
  "emprops.lora.v1.PlacementService/FindLoraHolders": only("scheduler"),
  "emprops.blob.v1.BlobGatewayService/CreateUploadUrl": only("service", "admin"),
  "emprops.blob.v1.BlobGatewayService/GetUploadState": only("service", "admin"),
  "emprops.blob.v1.BlobGatewayService/CommitUpload": only("service", "admin"),
  "emprops.blob.v1.BlobGatewayService/SealUpload": only("service", "admin"),
  "emprops.blob.v1.BlobGatewayService/VerifyBlob": only("service", "admin"),
  "emprops.blob.v1.BlobGatewayService/CreateDownloadUrls": only("service", "admin"),
  "emprops.blob.v1.BlobGatewayService/DeleteBlob": only("service", "admin"),
  "emprops.blob.v1.BlobGatewayService/UploadBlob": only("service", "admin"),
  "emprops.blob.v1.BlobGatewayService/StorePreview": only("service", "admin"),
  "emprops.blob.v1.BlobGatewayService/DeletePreview": only("service", "admin"),
  "emprops.blob.v1.BlobGatewayService/ListBlobs": only("service"),
  "emprops.blob.v1.BlobGatewayService/DeleteListedBlob": only("service"),
  "emprops.cache.v1.MachineCacheService/EnsureLoras": only("machine", "admin"),
  "emprops.cache.v1.MachineCacheService/EnsureLorasWithProgress": only("machine", "admin"),
  "emprops.cache.v1.MachineCacheService/GetCacheStats": only("machine", "admin"),
  "emprops.cache.v1.MachineCacheService/ListCachedModels": only("machine", "admin"),
  "emprops.cache.v1.MachineCacheService/EvictLoras": only("admin"),
  "emprops.cache.v1.MachineCacheService/WarmLoras": only("machine", "admin"),
};

const PROTOCOLS = {
  connect: (baseUrl: string): Transport => createConnectTransport({ baseUrl, httpVersion: "1.1" }),
  grpc: (baseUrl: string): Transport => createGrpcTransport({ baseUrl }),
};
type Protocol = keyof typeof PROTOCOLS;

type AnyCall = (input: unknown, options: { headers: Record<string, string> }) => unknown;

/** Calls one RPC with an empty request (an empty stream for client streaming). */
async function invoke(transport: Transport, service: DescService, method: DescMethod, token?: string) {
  const client = createClient(service, transport) as unknown as Record<string, AnyCall>;
  const call = client[method.localName]!;
  const headers: Record<string, string> = token === undefined ? {} : { authorization: `Bearer ${token}` };
  const options = { headers };
  switch (method.methodKind) {
    case "unary":
      return call({}, options);
    case "client_streaming":
      return call((async function* () {})(), options);
    default:
      for await (const _ of call({}, options) as AsyncIterable<unknown>) void _;
  }
}

async function outcome(...args: Parameters<typeof invoke>): Promise<string> {
  try {
    await invoke(...args);
    return "runs";
  } catch (err) {
    const ce = ConnectError.from(err);
    if (ce.code !== Code.Unauthenticated && ce.code !== Code.PermissionDenied) return "runs";
    return errorReason(ce) || Code[ce.code];
  }
}

let t: TestStack;
const tokens = {} as Record<Exclude<Kind, "none">, string>;

beforeAll(async () => {
  t = await startTestStack("access-policy", {
    env: Object.fromEntries(
      (["registry", "gateway", "machineCache"] as const).map((s) => [
        s,
        { JWT_MAX_LIFETIME_MACHINE_SECONDS: String(2 * 24 * 3600), JWT_CLOCK_SKEW_SECONDS: "30" },
      ]),
    ),
  });
  const mint = (subject: string, roles: Role[]) => mintToken(t.jwtSecret, { subject, roles });
  tokens.user = t.userToken;
  tokens["machine-with-user-sub"] = await mint(t.userId, ["machine"]);
  tokens.machine = await mint("access-policy-machine", ["machine"]);
  tokens.service = await mint("some-service", ["service"]);
  tokens.scheduler = await mint("job-broker", ["scheduler"]);
  tokens.admin = await mint("ops", ["admin"]);
});

afterAll(async () => {
  await t?.stop();
});

const services = () => [
  { url: t.stack.registry.url, services: [LoraService, LoraAdminService, LoraResolverService, PlacementService] },
  { url: t.stack.gateway.url, services: [BlobGatewayService] },
  { url: t.stack.machineCache.url, services: [MachineCacheService] },
];

test("the expected table names every RPC of every service", () => {
  const all = services().flatMap((s) =>
    s.services.flatMap((svc) => svc.methods.map((m) => `${svc.typeName}/${m.name}`)),
  );
  expect(all.sort()).toEqual(Object.keys(EXPECTED).sort());
});

test.each(Object.keys(PROTOCOLS) as Protocol[])(
  "each RPC admits exactly the tokens its policy names, over %s",
  async (protocol) => {
    const seen: Record<string, Record<Kind, string>> = {};
    for (const { url, services: list } of services()) {
      const transport = PROTOCOLS[protocol](url);
      for (const service of list) {
        for (const method of service.methods) {
          const row = {} as Record<Kind, string>;
          for (const kind of KINDS) {
            row[kind] = await outcome(transport, service, method, kind === "none" ? undefined : tokens[kind]);
          }
          seen[`${service.typeName}/${method.name}`] = row;
        }
      }
    }
    expect(seen).toEqual(EXPECTED);
  },
);

describe("every service checks token claims with its configured limits", () => {
  const now = () => Math.floor(Date.now() / 1000);
  const sign = (claims: Record<string, unknown>) =>
    new SignJWT(claims).setProtectedHeader({ alg: "HS256" }).sign(new TextEncoder().encode(t.jwtSecret));
  /** One admitted RPC per service, with the subject and roles it admits. */
  const targets = () => [
    {
      name: "lora-registry",
      sub: t.userId,
      roles: [] as Role[],
      call: (token: string, p: Protocol) =>
        outcomeOf(PROTOCOLS[p](t.stack.registry.url), LoraService, "GetQuota", token),
    },
    {
      name: "blob-gateway",
      sub: "some-service",
      roles: ["service"] as Role[],
      call: (token: string, p: Protocol) =>
        outcomeOf(PROTOCOLS[p](t.stack.gateway.url), BlobGatewayService, "GetUploadState", token),
    },
    {
      name: "machine-cache",
      sub: "access-policy-machine",
      roles: ["machine"] as Role[],
      call: (token: string, p: Protocol) =>
        outcomeOf(PROTOCOLS[p](t.stack.machineCache.url), MachineCacheService, "GetCacheStats", token),
    },
  ];
  const outcomeOf = (transport: Transport, service: DescService, name: string, token: string) =>
    outcome(
      transport,
      service,
      service.methods.find((m) => m.name === name)!,
      token,
    );

  test.each(
    (["lora-registry", "blob-gateway", "machine-cache"] as const).flatMap((s) =>
      (Object.keys(PROTOCOLS) as Protocol[]).map((p) => [s, p] as const),
    ),
  )("%s over %s", async (name, protocol) => {
    const target = targets().find((x) => x.name === name)!;
    const { sub, roles } = target;
    const iat = now();
    const check = async (claims: Record<string, unknown>) =>
      target.call(await sign({ sub, roles, ...claims }), protocol);
    expect(await check({ iat, exp: iat + 600 })).toBe("runs");
    expect(await check({ iat })).toBe("TOKEN_EXPIRY_MISSING");
    expect(await check({ iat: iat + 10 * 365 * 24 * 3600, exp: iat + 10 * 365 * 24 * 3600 + 60 })).toBe(
      "TOKEN_NOT_YET_VALID",
    );
    // JWT_CLOCK_SKEW_SECONDS=30 on every service.
    expect(await check({ iat: iat + 10, exp: iat + 600 })).toBe("runs");
    expect(await check({ iat: iat + 45, exp: iat + 600 })).toBe("TOKEN_NOT_YET_VALID");
    expect(await check({ iat, nbf: iat + 45, exp: iat + 600 })).toBe("TOKEN_NOT_YET_VALID");
    // A day for users; JWT_MAX_LIFETIME_MACHINE_SECONDS=2 days; the service default is 30 days.
    const limit = roles.includes("machine") ? 2 * 24 * 3600 : roles.includes("service") ? 30 * 24 * 3600 : 24 * 3600;
    expect(await check({ iat, exp: iat + limit })).toBe("runs");
    expect(await check({ iat, exp: iat + limit + 1 })).toBe("TOKEN_LIFETIME_TOO_LONG");
    expect(await check({ exp: iat + limit + 120 })).toBe("TOKEN_LIFETIME_TOO_LONG");
  });
});

test("a machine token whose subject is a user's id does not act as that user", async () => {
  // The user's own token lists their LoRAs; the same subject with the machine role is refused with the reason.
  const other = randomUUID();
  const client = (token: string) =>
    createClient(LoraService, PROTOCOLS.connect(t.stack.registry.url)).listLoras(
      {},
      { headers: { authorization: `Bearer ${token}` } },
    );
  await expect(client(t.userToken)).resolves.toBeDefined();
  const refused = await client(await mintToken(t.jwtSecret, { subject: other, roles: ["machine"] })).catch(
    (e: unknown) => ConnectError.from(e),
  );
  expect(refused).toBeInstanceOf(ConnectError);
  expect((refused as ConnectError).code).toBe(Code.PermissionDenied);
  expect(errorReason(refused)).toBe("USER_TOKEN_REQUIRED");
  expect((refused as ConnectError).rawMessage).toMatch(
    /needs that user's own token; this token carries the machine role/,
  );
});

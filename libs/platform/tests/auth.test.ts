import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type HandlerContext } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import {
  GetLoraResponseSchema,
  GetQuotaResponseSchema,
  ListLorasResponseSchema,
  LoraResolverService,
  LoraService,
  MachineCacheService,
} from "@emprops/contracts";
import { SignJWT } from "jose";
import {
  authInterceptor,
  callerOf,
  createLogger,
  createTokenVerifier,
  errorMetadata,
  errorReason,
  ManualClock,
  maxTokenLifetimeSeconds,
  mintToken,
  type RpcServer,
  servicePolicy,
  startRpcServer,
  type TokenVerifierOptions,
} from "../src/index.js";

const SECRET = "auth-test-secret-0123456789abcdef";
const USER = "00000000-0000-4000-8000-00000000000a";
const HOUR = 3600;
const DAY = 24 * HOUR;
const logger = createLogger("test", "silent");

/** Who the handler saw: the user it acts for ("-" for none) and the roles. */
function echo(ctx: HandlerContext): void {
  const caller = callerOf(ctx);
  ctx.responseHeader.set("x-user", caller.user ?? "-");
  ctx.responseHeader.set("x-roles", [...caller.roles].sort().join(",") || "-");
}

async function startServer(verifier: TokenVerifierOptions): Promise<RpcServer> {
  const ADMIN = { allow: ["admin"] } as const;
  return startRpcServer({
    name: "auth-test",
    host: "127.0.0.1",
    port: 0,
    logger,
    interceptors: [
      authInterceptor(createTokenVerifier({ secret: SECRET, ...verifier }), [
        servicePolicy(LoraService, {
          getLora: { allow: ["user"] },
          // The one RPC here where an admin token may act as the user in its subject.
          getQuota: { allow: ["user"], actAsUser: ["admin"] },
          listLoras: { allow: ["user", "service"] },
          createLoraUpload: ADMIN,
          getLoraUpload: ADMIN,
          completeLoraUpload: ADMIN,
          abortLoraUpload: ADMIN,
          updateLora: ADMIN,
          deleteLora: ADMIN,
          getLoraDownloadUrl: ADMIN,
          setLoraPreview: ADMIN,
          deleteLoraPreview: ADMIN,
          getLoraPreviewUrls: ADMIN,
        }),
      ]),
    ],
    routes: (router) => {
      router.service(LoraService, {
        getLora: (_req, ctx) => (echo(ctx), create(GetLoraResponseSchema, {})),
        getQuota: (_req, ctx) => (echo(ctx), create(GetQuotaResponseSchema, {})),
        listLoras: (_req, ctx) => (echo(ctx), create(ListLorasResponseSchema, {})),
      });
    },
  });
}

/** A token with exactly these claims (no defaults added), signed with SECRET. */
function rawToken(claims: Record<string, unknown>): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: "HS256" }).sign(new TextEncoder().encode(SECRET));
}

const now = () => Math.floor(Date.now() / 1000);

type Outcome = { code: string; reason: string; message: string; user?: string; roles?: string };

const protocols = {
  connect: (url: string) => createConnectTransport({ baseUrl: url, httpVersion: "1.1" }),
  grpc: (url: string) => createGrpcTransport({ baseUrl: url }),
};

async function call(
  server: RpcServer,
  method: "getLora" | "getQuota" | "listLoras",
  token: string | undefined,
  protocol: keyof typeof protocols = "connect",
): Promise<Outcome> {
  const client = createClient(LoraService, protocols[protocol](server.url));
  const seen: Record<string, string> = {};
  try {
    await client[method](
      {},
      {
        headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
        onHeader: (h) => h.forEach((v, k) => (seen[k] = v)),
      },
    );
    return { code: "OK", reason: "", message: "", user: seen["x-user"], roles: seen["x-roles"] };
  } catch (err) {
    const ce = ConnectError.from(err);
    return { code: Code[ce.code], reason: errorReason(ce), message: ce.rawMessage };
  }
}

describe("token claims", () => {
  let server: RpcServer;
  beforeAll(async () => {
    server = await startServer({});
  });
  afterAll(() => server.close());

  const refused = (reason: string, message: RegExp) => ({
    code: "Unauthenticated",
    reason,
    message: expect.stringMatching(message),
  });

  test.each(Object.keys(protocols) as (keyof typeof protocols)[])(
    "a token without exp is refused over %s",
    async (protocol) => {
      const token = await rawToken({ sub: USER, iat: now() });
      expect(await call(server, "getLora", token, protocol)).toMatchObject(
        refused("TOKEN_EXPIRY_MISSING", /no expiry \(exp claim\)/),
      );
    },
  );

  test("a user token may live a day, not longer; without iat the lifetime counts from now", async () => {
    const t = now();
    expect(await call(server, "getLora", await rawToken({ sub: USER, iat: t, exp: t + DAY }))).toMatchObject({
      code: "OK",
    });
    const long = await call(server, "getLora", await rawToken({ sub: USER, iat: t, exp: t + DAY + 1 }));
    expect(long).toMatchObject(
      refused("TOKEN_LIFETIME_TOO_LONG", /lives 86401 s \(exp - iat\); a user token may live at most 86400 s/),
    );
    // An old token: what counts is exp - iat, not what is left of it.
    const old = await rawToken({ sub: USER, iat: t - 10 * DAY, exp: t + 60 });
    expect(await call(server, "getLora", old)).toMatchObject(refused("TOKEN_LIFETIME_TOO_LONG", /exp - iat/));
    expect(await call(server, "getLora", await rawToken({ sub: USER, exp: t + HOUR }))).toMatchObject({ code: "OK" });
    expect(await call(server, "getLora", await rawToken({ sub: USER, exp: t + 2 * DAY }))).toMatchObject(
      refused("TOKEN_LIFETIME_TOO_LONG", /\(exp - now\)/),
    );
  });

  test("machine and service tokens may live 30 days; an admin token a day; several roles take the strictest", async () => {
    const t = now();
    const token = (roles: string[], lifetime: number) => rawToken({ sub: "svc", roles, iat: t, exp: t + lifetime });
    expect(await call(server, "listLoras", await token(["service"], 30 * DAY))).toMatchObject({ code: "OK" });
    expect(await call(server, "listLoras", await token(["service"], 30 * DAY + 1))).toMatchObject(
      refused("TOKEN_LIFETIME_TOO_LONG", /a token with the service role may live at most 2592000 s/),
    );
    expect(await call(server, "getQuota", await token(["admin"], 2 * DAY))).toMatchObject(
      refused("TOKEN_LIFETIME_TOO_LONG", /the admin role may live at most 86400 s/),
    );
    expect(await call(server, "getQuota", await token(["admin", "machine"], 7 * DAY))).toMatchObject(
      refused("TOKEN_LIFETIME_TOO_LONG", /at most 86400 s/),
    );
    expect(
      maxTokenLifetimeSeconds(["machine", "service"], { user: 1, admin: 2, machine: 30, service: 20, scheduler: 25 }),
    ).toBe(20);
  });

  test("iat and nbf may be ahead of the server's clock by the skew (60 s), not more", async () => {
    const t = now();
    const ok = { code: "OK" };
    expect(await call(server, "getLora", await rawToken({ sub: USER, iat: t + 30, exp: t + HOUR }))).toMatchObject(ok);
    const tenYears = t + 10 * 365 * DAY;
    expect(
      await call(server, "getLora", await rawToken({ sub: USER, iat: tenYears, exp: tenYears + HOUR })),
    ).toMatchObject(refused("TOKEN_NOT_YET_VALID", /issued \d+ s in the future \(iat claim\); at most 60 s/));
    expect(await call(server, "getLora", await rawToken({ sub: USER, iat: t + 120, exp: t + HOUR }))).toMatchObject(
      refused("TOKEN_NOT_YET_VALID", /iat claim/),
    );
    expect(
      await call(server, "getLora", await rawToken({ sub: USER, iat: t, nbf: t + 30, exp: t + HOUR })),
    ).toMatchObject(ok);
    expect(
      await call(server, "getLora", await rawToken({ sub: USER, iat: t, nbf: t + 120, exp: t + HOUR })),
    ).toMatchObject(refused("TOKEN_NOT_YET_VALID", /not valid yet \(nbf claim/));
  });

  test("expired, unsigned-by-us, subject-less and malformed-roles tokens are refused with reasons", async () => {
    const t = now();
    expect(await call(server, "getLora", await rawToken({ sub: USER, iat: t - 120, exp: t - 90 }))).toMatchObject(
      refused("TOKEN_EXPIRED", /expired/),
    );
    // The clock skew is for iat and nbf only: expiry has no grace.
    expect(await call(server, "getLora", await rawToken({ sub: USER, iat: t - 120, exp: t - 5 }))).toMatchObject(
      refused("TOKEN_EXPIRED", /expired/),
    );
    expect(await call(server, "getLora", await rawToken({ iat: t, exp: t + 60 }))).toMatchObject(
      refused("TOKEN_INVALID", /no subject/),
    );
    expect(await call(server, "getLora", await rawToken({ sub: USER, exp: "tomorrow" }))).toMatchObject(
      refused("TOKEN_INVALID", /exp claim/),
    );
    // A string is not a list: such a token must not pass as a plain user's.
    const roleString = await rawToken({ sub: USER, roles: "machine", iat: t, exp: t + 60 });
    expect(await call(server, "getLora", roleString)).toMatchObject(refused("TOKEN_INVALID", /roles claim/));
    const forged = await mintToken("another-secret-0123456789abcdef", { subject: USER });
    expect(await call(server, "getLora", forged)).toMatchObject(refused("TOKEN_INVALID", /not valid/));
    expect(await call(server, "getLora", undefined)).toMatchObject({
      code: "Unauthenticated",
      reason: "TOKEN_MISSING",
    });
  });

  test("mintToken sets iat and exp from one clock reading, so a token minted at the limit passes", async () => {
    for (let i = 0; i < 20; i++) {
      const token = await mintToken(SECRET, { subject: USER, ttlSeconds: DAY });
      const claims = JSON.parse(Buffer.from(token.split(".")[1] ?? "", "base64url").toString()) as {
        iat: number;
        exp: number;
      };
      expect(claims.exp - claims.iat).toBe(DAY);
    }
    expect(await call(server, "getLora", await mintToken(SECRET, { subject: USER, ttlSeconds: DAY }))).toMatchObject({
      code: "OK",
    });
  });
});

describe("a token verified before", () => {
  const reasonOf = (err: unknown) => errorReason(ConnectError.from(err));

  test("is refused once it expires, though it passed a moment earlier", async () => {
    const clock = new ManualClock(new Date());
    const verify = createTokenVerifier({ secret: SECRET, clock });
    const t = Math.floor(clock.now().getTime() / 1000);
    const token = await rawToken({ sub: USER, roles: ["machine"], iat: t, exp: t + 30 });
    for (let i = 0; i < 3; i++) {
      expect(await verify(token)).toEqual({ subject: USER, roles: new Set(["machine"]) });
    }
    clock.advance(29_000);
    expect((await verify(token)).subject).toBe(USER);
    clock.advance(1_000);
    expect(reasonOf(await verify(token).catch((err: unknown) => err))).toBe("TOKEN_EXPIRED");
  });

  test("is checked again when the clock is set back before it was verified", async () => {
    const clock = new ManualClock(new Date());
    const verify = createTokenVerifier({ secret: SECRET, clock, clockSkewSeconds: 0 });
    const t = Math.floor(clock.now().getTime() / 1000);
    const token = await rawToken({ sub: USER, iat: t, nbf: t, exp: t + 600 });
    expect((await verify(token)).subject).toBe(USER);
    clock.advance(-10_000);
    expect(reasonOf(await verify(token).catch((err: unknown) => err))).toBe("TOKEN_NOT_YET_VALID");
  });

  test("a forged token never passes for one that was verified", async () => {
    const verify = createTokenVerifier({ secret: SECRET });
    const good = await mintToken(SECRET, { subject: USER, roles: ["machine"] });
    expect((await verify(good)).roles).toEqual(new Set(["machine"]));
    const [header, , signature] = good.split(".");
    const admin = Buffer.from(JSON.stringify({ sub: USER, roles: ["admin"], iat: now(), exp: now() + 60 })).toString(
      "base64url",
    );
    expect(reasonOf(await verify(`${header}.${admin}.${signature}`).catch((err: unknown) => err))).toBe(
      "TOKEN_INVALID",
    );
  });
});

describe("configured limits", () => {
  let server: RpcServer;
  beforeAll(async () => {
    server = await startServer({
      maxLifetimeSeconds: { user: 600, admin: 300, machine: 7 * DAY, service: 7 * DAY, scheduler: 7 * DAY },
      clockSkewSeconds: 0,
    });
  });
  afterAll(() => server.close());

  test("lifetimes and skew follow the configuration", async () => {
    const t = now();
    expect(await call(server, "getLora", await rawToken({ sub: USER, iat: t, exp: t + 600 }))).toMatchObject({
      code: "OK",
    });
    const hour = await call(server, "getLora", await mintToken(SECRET, { subject: USER }));
    expect(hour).toMatchObject({ code: "Unauthenticated", reason: "TOKEN_LIFETIME_TOO_LONG" });
    expect(hour.message).toMatch(/at most 600 s/);
    const ahead = await call(server, "getLora", await rawToken({ sub: USER, iat: t + 5, exp: t + 60 }));
    expect(ahead).toMatchObject({ code: "Unauthenticated", reason: "TOKEN_NOT_YET_VALID" });
    expect(ahead.message).toMatch(/at most 0 s of clock skew/);
  });
});

describe("acting as a user", () => {
  let server: RpcServer;
  beforeAll(async () => {
    server = await startServer({});
  });
  afterAll(() => server.close());

  const token = (roles: ("admin" | "machine" | "service")[]) => mintToken(SECRET, { subject: USER, roles });

  test.each(Object.keys(protocols) as (keyof typeof protocols)[])(
    "only a token without roles acts as its subject, unless the rule names the role (%s)",
    async (protocol) => {
      expect(await call(server, "getLora", await token([]), protocol)).toMatchObject({ code: "OK", user: USER });
      for (const roles of [["machine"], ["service"], ["admin"], ["admin", "machine"]] as const) {
        const refusedOutcome = await call(server, "getLora", await token([...roles]), protocol);
        expect(refusedOutcome).toMatchObject({ code: "PermissionDenied", reason: "USER_TOKEN_REQUIRED" });
        expect(refusedOutcome.message).toMatch(/acts for a user and needs that user's own token/);
      }
      // getQuota names admin: an admin token acts as the user in its subject; a machine token still does not.
      expect(await call(server, "getQuota", await token(["admin"]), protocol)).toMatchObject({
        code: "OK",
        user: USER,
        roles: "admin",
      });
      expect(await call(server, "getQuota", await token(["machine"]), protocol)).toMatchObject({
        code: "PermissionDenied",
        reason: "USER_TOKEN_REQUIRED",
      });
      // listLoras admits users and the service role: a service token is admitted as itself, not as a user.
      expect(await call(server, "listLoras", await token(["service"]), protocol)).toMatchObject({
        code: "OK",
        user: "-",
        roles: "service",
      });
      const machine = await call(server, "listLoras", await token(["machine"]), protocol);
      expect(machine).toMatchObject({ code: "PermissionDenied", reason: "ROLE_REQUIRED" });
      expect(machine.message).toMatch(/needs a user's token or the role service/);
    },
  );

  test("a rule is required for every RPC of a service", () => {
    expect(() =>
      servicePolicy(MachineCacheService, {
        ensureLoras: "public",
        ensureLorasWithProgress: "public",
      } as unknown as Parameters<typeof servicePolicy<typeof MachineCacheService>>[1]),
    ).toThrow(/no access rule for emprops.cache.v1.MachineCacheService\/GetCacheStats/);
    expect(() =>
      servicePolicy(LoraResolverService, {
        resolveLoras: { allow: ["admin"], actAsUser: ["admin"] },
        listPopularLoras: "public",
      }),
    ).toThrow(/actAsUser needs "user"/);
  });

  test("a refusal names the roles the RPC needs in its metadata", async () => {
    const client = createClient(LoraService, protocols.connect(server.url));
    const err = await client
      .listLoras({}, { headers: { authorization: `Bearer ${await token(["machine"])}` } })
      .catch((e: unknown) => ConnectError.from(e));
    expect(errorMetadata(err)).toMatchObject({ required_roles: "service" });
  });
});

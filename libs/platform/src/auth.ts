import type { DescService } from "@bufbuild/protobuf";
import { Code, createContextKey, type HandlerContext, type Interceptor } from "@connectrpc/connect";
import { ErrorReason } from "@emprops/contracts";
import {
  createRemoteJWKSet,
  errors as joseErrors,
  jwtVerify,
  SignJWT,
  type JWTPayload,
  type JWTVerifyGetKey,
} from "jose";
import { type Clock, systemClock } from "./clock.js";
import { rpcError } from "./errors.js";

/**
 * Roles a token may carry in its "roles" claim; a plain user has none. The
 * job broker's token carries "scheduler": it may ask the registry where to
 * place jobs, and nothing else.
 */
export type Role = "admin" | "machine" | "service" | "scheduler";

/** Who an RPC may admit: "user" is a token that carries no role, acting as its subject. */
export type Principal = "user" | Role;

export const ROLES: readonly Role[] = ["admin", "machine", "service", "scheduler"];

/** The verified caller of an RPC. */
export interface Caller {
  /** JWT sub: the user's UUID, or a machine/service id. */
  subject: string;
  roles: ReadonlySet<Role>;
  /**
   * The user this call acts for (the subject), set only when the RPC admits
   * users and the token is a user's: it carries no role, or only a role the
   * RPC's rule lets act as a user.
   */
  user?: string;
}

export const callerKey = createContextKey<Caller | undefined>(undefined, { description: "verified caller" });

/** Longest lifetime (exp - iat) a token may have, by who it is for. */
export type TokenLifetimeLimits = Readonly<Record<Principal, number>>;

const HOUR = 3600;
const DAY = 24 * HOUR;

/** Human tokens live at most a day; machine, service and scheduler tokens may be minted for 30 days. */
export const DEFAULT_TOKEN_LIFETIME_LIMITS: TokenLifetimeLimits = {
  user: DAY,
  admin: DAY,
  machine: 30 * DAY,
  service: 30 * DAY,
  scheduler: 30 * DAY,
};

/** How far ahead of this server's clock a token's iat or nbf may be. */
export const DEFAULT_CLOCK_SKEW_SECONDS = 60;

/**
 * The lifetime limit of a token with these roles: the strictest of its
 * roles' limits, the user limit when it has none (a long-lived token never
 * gains a role's power by also carrying a role with a longer limit).
 */
export function maxTokenLifetimeSeconds(roles: Iterable<Role>, limits: TokenLifetimeLimits): number {
  const own = [...roles].map((r) => limits[r]);
  return own.length === 0 ? limits.user : Math.min(...own);
}

export interface TokenVerifierOptions {
  /** HS256 shared secret (development). */
  secret?: string;
  /** JWKS URL (production). */
  jwksUrl?: string;
  issuer?: string;
  audience?: string;
  /** Default DEFAULT_TOKEN_LIFETIME_LIMITS. */
  maxLifetimeSeconds?: TokenLifetimeLimits;
  /** Default DEFAULT_CLOCK_SKEW_SECONDS. */
  clockSkewSeconds?: number;
  clock?: Clock;
}

export type TokenVerifier = (token: string) => Promise<Caller>;

const unauthenticated = (reason: ErrorReason, message: string, metadata: Record<string, string | number> = {}) =>
  rpcError(Code.Unauthenticated, reason, message, metadata);

/**
 * Verifies signature, issuer and audience (jose), then what a token must
 * have to be trusted here: an `exp`, a lifetime within its roles' limit,
 * no `iat` or `nbf` ahead of this server's clock by more than the skew, and
 * a `roles` claim that is a list when present.
 */
export function createTokenVerifier(opts: TokenVerifierOptions): TokenVerifier {
  const key: Uint8Array | JWTVerifyGetKey = opts.jwksUrl
    ? createRemoteJWKSet(new URL(opts.jwksUrl))
    : new TextEncoder().encode(requireSecret(opts.secret));
  const algorithms = opts.jwksUrl ? ["RS256", "ES256", "EdDSA"] : ["HS256"];
  const limits = opts.maxLifetimeSeconds ?? DEFAULT_TOKEN_LIFETIME_LIMITS;
  const skew = opts.clockSkewSeconds ?? DEFAULT_CLOCK_SKEW_SECONDS;
  const clock = opts.clock ?? systemClock;
  const verified = new VerifiedTokens();
  return async (token) => {
    const currentDate = clock.now();
    const known = verified.get(token, currentDate.getTime());
    if (known) return known;
    const options = { algorithms, issuer: opts.issuer, audience: opts.audience, clockTolerance: skew, currentDate };
    let payload: JWTPayload;
    try {
      ({ payload } =
        typeof key === "function" ? await jwtVerify(token, key, options) : await jwtVerify(token, key, options));
    } catch (err) {
      throw refusal(err, skew);
    }
    const now = Math.floor(currentDate.getTime() / 1000);
    if (typeof payload.sub !== "string" || payload.sub === "") {
      throw unauthenticated(ErrorReason.TOKEN_INVALID, "the bearer token has no subject (sub claim)");
    }
    if (payload.exp === undefined) {
      throw unauthenticated(
        ErrorReason.TOKEN_EXPIRY_MISSING,
        "the bearer token has no expiry (exp claim): mint one with an exp",
      );
    }
    // The skew lets iat and nbf run ahead (jose checks nbf); expiry has no grace.
    if (payload.exp <= now) throw expired();
    if (payload.iat !== undefined && payload.iat > now + skew) {
      throw unauthenticated(
        ErrorReason.TOKEN_NOT_YET_VALID,
        `the bearer token was issued ${payload.iat - now} s in the future (iat claim); at most ${skew} s of clock skew is allowed: check the clock of whoever minted it`,
        { claim: "iat", clock_skew_seconds: skew },
      );
    }
    const roles = rolesOf(payload.roles);
    const max = maxTokenLifetimeSeconds(roles, limits);
    const lifetime = payload.exp - (payload.iat ?? now);
    if (lifetime > max) {
      const who = roles.size === 0 ? "a user token" : `a token with the ${[...roles].join(" and ")} role`;
      throw unauthenticated(
        ErrorReason.TOKEN_LIFETIME_TOO_LONG,
        `the bearer token lives ${lifetime} s (${payload.iat === undefined ? "exp - now" : "exp - iat"}); ${who} may live at most ${max} s: mint a shorter one`,
        { lifetime_seconds: lifetime, max_lifetime_seconds: max },
      );
    }
    const caller = { subject: payload.sub, roles };
    verified.add(token, caller, payload.exp, currentDate.getTime());
    return caller;
  };
}

/** A verified token is trusted again without its signature check for at most this long (a JWKS key's removal). */
const REVERIFY_AFTER_MS = 60_000;
const MAX_VERIFIED_TOKENS = 1024;

/**
 * Tokens that passed every check, kept until their expiry (at most
 * REVERIFY_AFTER_MS): a machine or service sends the same token on every
 * call, and checking its HMAC or signature (a key import and a thread-pool
 * round trip in WebCrypto) cost a cached EnsureLoras more than its SQLite
 * work. What passed once keeps passing until exp (iat and nbf only recede,
 * issuer, audience and lifetime do not change), so only exp is checked again.
 */
class VerifiedTokens {
  private readonly tokens = new Map<string, { caller: Caller; fromMs: number; untilMs: number }>();

  get(token: string, nowMs: number): Caller | undefined {
    const entry = this.tokens.get(token);
    if (!entry) return undefined;
    if (nowMs >= entry.fromMs && nowMs < entry.untilMs) return { ...entry.caller };
    // Expired, due for a fresh check or a clock set back: the full verification decides.
    this.tokens.delete(token);
    return undefined;
  }

  add(token: string, caller: Caller, exp: number, nowMs: number): void {
    // Oldest first: Map keeps insertion order.
    if (this.tokens.size >= MAX_VERIFIED_TOKENS) this.tokens.delete(this.tokens.keys().next().value as string);
    this.tokens.set(token, {
      caller: { ...caller },
      fromMs: nowMs,
      untilMs: Math.min(exp * 1000, nowMs + REVERIFY_AFTER_MS),
    });
  }
}

const expired = () =>
  unauthenticated(ErrorReason.TOKEN_EXPIRED, "the bearer token has expired: sign in again or mint a new one");

/** What jose refused, as the reason and message a caller can act on. */
function refusal(err: unknown, skew: number) {
  if (err instanceof joseErrors.JWTExpired) return expired();
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    if (err.claim === "nbf" && err.reason === "check_failed") {
      return unauthenticated(
        ErrorReason.TOKEN_NOT_YET_VALID,
        `the bearer token is not valid yet (nbf claim more than ${skew} s ahead of this server's clock)`,
        { claim: "nbf", clock_skew_seconds: skew },
      );
    }
    return unauthenticated(
      ErrorReason.TOKEN_INVALID,
      `the bearer token's ${err.claim} claim is wrong: ${err.message}`,
      {
        claim: err.claim,
      },
    );
  }
  return unauthenticated(ErrorReason.TOKEN_INVALID, "the bearer token is not valid (malformed or wrongly signed)");
}

/** The roles claim: absent, or a list; unknown role names are ignored, a non-list is refused. */
function rolesOf(claim: unknown): Set<Role> {
  if (claim === undefined) return new Set();
  if (!Array.isArray(claim) || !claim.every((r) => typeof r === "string")) {
    throw unauthenticated(ErrorReason.TOKEN_INVALID, "the bearer token's roles claim must be a list of role names");
  }
  return new Set(claim.filter((r): r is Role => (ROLES as readonly string[]).includes(r)));
}

function requireSecret(secret: string | undefined): string {
  if (!secret || secret.length < 16) throw new Error("JWT secret must be at least 16 characters");
  return secret;
}

/** Mints an HS256 token with iat and exp: development, tests and service-to-service calls. */
export async function mintToken(
  secret: string,
  claims: { subject: string; roles?: Role[]; ttlSeconds?: number; issuer?: string; audience?: string },
): Promise<string> {
  // One reading of the clock, so exp - iat is exactly the ttl.
  const iat = Math.floor(Date.now() / 1000);
  let jwt = new SignJWT({ roles: claims.roles ?? [] })
    .setProtectedHeader({ alg: "HS256" })
    .setSubject(claims.subject)
    .setIssuedAt(iat)
    .setExpirationTime(iat + (claims.ttlSeconds ?? HOUR));
  if (claims.issuer) jwt = jwt.setIssuer(claims.issuer);
  if (claims.audience) jwt = jwt.setAudience(claims.audience);
  return jwt.sign(new TextEncoder().encode(requireSecret(secret)));
}

/** Who may call one RPC. */
export interface RpcRule {
  /** The principals it admits; "user" is a token without any role. */
  allow: readonly Principal[];
  /**
   * Roles whose tokens may act as the user in their subject here. None
   * unless named: a machine, service or admin token never acts as a user
   * by accident.
   */
  actAsUser?: readonly Role[];
}

/** "public": no token needed. */
export type RpcAccess = "public" | RpcRule;

/** The rules of one service, by method name. */
export interface ServicePolicy {
  typeName: string;
  rules: ReadonlyMap<string, RpcAccess>;
}

/**
 * A service's rules, one per RPC: the compiler wants every method of the
 * service named (by its local name, e.g. createLoraUpload), so a new RPC
 * cannot ship without a rule.
 */
export function servicePolicy<S extends DescService>(
  service: S,
  rules: { readonly [K in keyof S["method"]]: RpcAccess },
): ServicePolicy {
  const byLocal = rules as Readonly<Record<string, RpcAccess | undefined>>;
  const out = new Map<string, RpcAccess>();
  for (const method of service.methods) {
    const rule = byLocal[method.localName];
    if (rule === undefined) throw new Error(`no access rule for ${service.typeName}/${method.name}`);
    if (rule !== "public" && rule.actAsUser?.length && !rule.allow.includes("user")) {
      throw new Error(`${service.typeName}/${method.name}: actAsUser needs "user" in allow`);
    }
    out.set(method.name, rule);
  }
  const unknown = Object.keys(byLocal).filter((k) => !(k in service.method));
  if (unknown.length > 0) throw new Error(`${service.typeName} has no method ${unknown.join(", ")}`);
  return { typeName: service.typeName, rules: out };
}

const ALWAYS_PUBLIC = [
  "grpc.health.v1.Health",
  "grpc.reflection.v1.ServerReflection",
  "grpc.reflection.v1alpha.ServerReflection",
];

/**
 * Verifies the bearer token, applies the RPC's rule and stores the caller in
 * the context values. An RPC without a rule is refused.
 */
export function authInterceptor(verify: TokenVerifier, policies: readonly ServicePolicy[]): Interceptor {
  const byService = new Map(policies.map((p) => [p.typeName, p.rules]));
  return (next) => async (req) => {
    const service = req.service.typeName;
    const rpc = `${service}/${req.method.name}`;
    const rule = ALWAYS_PUBLIC.includes(service) ? "public" : byService.get(service)?.get(req.method.name);
    if (rule === undefined) {
      throw rpcError(Code.PermissionDenied, ErrorReason.ROLE_REQUIRED, `no access policy for ${rpc}`);
    }
    const header = req.header.get("authorization");
    if (rule === "public" && !header) return next(req);
    if (!header) {
      throw unauthenticated(ErrorReason.TOKEN_MISSING, "an authorization: Bearer <token> header is required");
    }
    const match = /^Bearer\s+(\S+)$/i.exec(header);
    if (!match?.[1]) {
      throw unauthenticated(ErrorReason.TOKEN_INVALID, "the authorization header must be 'Bearer <token>'");
    }
    const verified = await verify(match[1]);
    req.contextValues.set(callerKey, rule === "public" ? verified : admit(verified, rule, rpc));
    return next(req);
  };
}

/** The caller as this RPC's rule admits it, or the refusal saying which token it needs. */
function admit(caller: Caller, rule: RpcRule, rpc: string): Caller {
  const roles = [...caller.roles];
  const asUser =
    rule.allow.includes("user") && (roles.length === 0 || roles.some((r) => rule.actAsUser?.includes(r) ?? false));
  if (asUser) return { ...caller, user: caller.subject };
  if (roles.some((r) => rule.allow.includes(r))) return caller;
  const needed = rule.allow.filter((p): p is Role => p !== "user");
  if (needed.length === 0) {
    throw rpcError(
      Code.PermissionDenied,
      ErrorReason.USER_TOKEN_REQUIRED,
      `${rpc} acts for a user and needs that user's own token; this token carries the ${roles.join(" and ")} role`,
      { token_roles: roles.join(",") },
    );
  }
  const what = rule.allow.includes("user")
    ? `a user's token or the role ${needed.join(" or ")}`
    : `the role ${needed.join(" or ")}`;
  throw rpcError(Code.PermissionDenied, ErrorReason.ROLE_REQUIRED, `${rpc} needs ${what}`, {
    required_roles: needed.join(","),
  });
}

/** The verified caller; handlers behind authInterceptor always have one. */
export function callerOf(ctx: HandlerContext): Caller {
  const caller = ctx.values.get(callerKey);
  if (!caller) throw unauthenticated(ErrorReason.TOKEN_MISSING, "authentication required");
  return caller;
}

/** Interceptor for clients: sends a bearer token (static or refreshed). */
export function bearerInterceptor(token: string | (() => Promise<string> | string)): Interceptor {
  return (next) => async (req) => {
    req.header.set("authorization", `Bearer ${typeof token === "string" ? token : await token()}`);
    return next(req);
  };
}

import { Code, createContextKey, type HandlerContext, type Interceptor } from "@connectrpc/connect";
import { ErrorReason } from "@emprops/contracts";
import { createRemoteJWKSet, errors as joseErrors, jwtVerify, SignJWT, type JWTVerifyGetKey } from "jose";
import { rpcError } from "./errors.js";

/** Roles a token may carry in its "roles" claim; a plain user has none. */
export type Role = "admin" | "machine" | "service";

/** The verified caller of an RPC. */
export interface Caller {
  /** JWT sub: the user's UUID, or a machine/service id. */
  subject: string;
  roles: ReadonlySet<Role>;
}

export const callerKey = createContextKey<Caller | undefined>(undefined, { description: "verified caller" });

export interface TokenVerifierOptions {
  /** HS256 shared secret (development). */
  secret?: string;
  /** JWKS URL (production). */
  jwksUrl?: string;
  issuer?: string;
  audience?: string;
}

export type TokenVerifier = (token: string) => Promise<Caller>;

const KNOWN_ROLES = new Set<Role>(["admin", "machine", "service"]);

export function createTokenVerifier(opts: TokenVerifierOptions): TokenVerifier {
  const key: Uint8Array | JWTVerifyGetKey = opts.jwksUrl
    ? createRemoteJWKSet(new URL(opts.jwksUrl))
    : new TextEncoder().encode(requireSecret(opts.secret));
  const algorithms = opts.jwksUrl ? ["RS256", "ES256", "EdDSA"] : ["HS256"];
  return async (token) => {
    const verify = (k: Uint8Array | JWTVerifyGetKey) =>
      typeof k === "function"
        ? jwtVerify(token, k, { algorithms, issuer: opts.issuer, audience: opts.audience })
        : jwtVerify(token, k, { algorithms, issuer: opts.issuer, audience: opts.audience });
    let payload;
    try {
      ({ payload } = await verify(key));
    } catch (err) {
      if (err instanceof joseErrors.JWTExpired) {
        throw rpcError(Code.Unauthenticated, ErrorReason.TOKEN_EXPIRED, "the bearer token has expired");
      }
      throw rpcError(Code.Unauthenticated, ErrorReason.TOKEN_INVALID, "the bearer token is not valid");
    }
    if (typeof payload.sub !== "string" || payload.sub === "") {
      throw rpcError(Code.Unauthenticated, ErrorReason.TOKEN_INVALID, "the bearer token has no subject");
    }
    const claimed = Array.isArray(payload.roles) ? payload.roles : [];
    const roles = new Set(claimed.filter((r): r is Role => KNOWN_ROLES.has(r as Role)));
    return { subject: payload.sub, roles };
  };
}

function requireSecret(secret: string | undefined): string {
  if (!secret || secret.length < 16) throw new Error("JWT secret must be at least 16 characters");
  return secret;
}

/** Mints an HS256 token: development, tests and service-to-service calls. */
export async function mintToken(
  secret: string,
  claims: { subject: string; roles?: Role[]; ttlSeconds?: number; issuer?: string; audience?: string },
): Promise<string> {
  let jwt = new SignJWT({ roles: claims.roles ?? [] })
    .setProtectedHeader({ alg: "HS256" })
    .setSubject(claims.subject)
    .setIssuedAt()
    .setExpirationTime(`${claims.ttlSeconds ?? 3600}s`);
  if (claims.issuer) jwt = jwt.setIssuer(claims.issuer);
  if (claims.audience) jwt = jwt.setAudience(claims.audience);
  return jwt.sign(new TextEncoder().encode(requireSecret(secret)));
}

/**
 * Which roles each service needs: "public" (no token), "any" (any valid
 * token) or a list of roles of which the caller needs one.
 */
export type AccessPolicy = Record<string, "public" | "any" | Role[]>;

const ALWAYS_PUBLIC = [
  "grpc.health.v1.Health",
  "grpc.reflection.v1.ServerReflection",
  "grpc.reflection.v1alpha.ServerReflection",
];

/** Verifies the bearer token and stores the caller in the context values. */
export function authInterceptor(verify: TokenVerifier, policy: AccessPolicy): Interceptor {
  return (next) => async (req) => {
    const service = req.service.typeName;
    const rule = ALWAYS_PUBLIC.includes(service) ? "public" : policy[service];
    if (rule === undefined) {
      throw rpcError(Code.PermissionDenied, ErrorReason.ROLE_REQUIRED, `no access policy for ${service}`);
    }
    const header = req.header.get("authorization");
    if (rule === "public" && !header) return next(req);
    if (!header) {
      throw rpcError(
        Code.Unauthenticated,
        ErrorReason.TOKEN_MISSING,
        "an authorization: Bearer <token> header is required",
      );
    }
    const match = /^Bearer\s+(\S+)$/i.exec(header);
    if (!match?.[1]) {
      throw rpcError(
        Code.Unauthenticated,
        ErrorReason.TOKEN_INVALID,
        "the authorization header must be 'Bearer <token>'",
      );
    }
    const caller = await verify(match[1]);
    if (Array.isArray(rule) && !rule.some((r) => caller.roles.has(r))) {
      throw rpcError(
        Code.PermissionDenied,
        ErrorReason.ROLE_REQUIRED,
        `${service} needs the role ${rule.join(" or ")}`,
        { required_roles: rule.join(",") },
      );
    }
    req.contextValues.set(callerKey, caller);
    return next(req);
  };
}

/** The verified caller; handlers behind authInterceptor always have one. */
export function callerOf(ctx: HandlerContext): Caller {
  const caller = ctx.values.get(callerKey);
  if (!caller) throw rpcError(Code.Unauthenticated, ErrorReason.TOKEN_MISSING, "authentication required");
  return caller;
}

/** Interceptor for clients: sends a bearer token (static or refreshed). */
export function bearerInterceptor(token: string | (() => Promise<string> | string)): Interceptor {
  return (next) => async (req) => {
    req.header.set("authorization", `Bearer ${typeof token === "string" ? token : await token()}`);
    return next(req);
  };
}

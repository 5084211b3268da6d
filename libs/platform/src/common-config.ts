import { z } from "zod";
import { DEFAULT_CLOCK_SKEW_SECONDS, DEFAULT_TOKEN_LIFETIME_LIMITS, type TokenLifetimeLimits } from "./auth.js";
import { ConfigError, env } from "./config.js";

const lifetime = (fallback: number) =>
  z.coerce
    .number()
    .int()
    .min(60)
    .max(365 * 24 * 3600)
    .default(fallback);

/** Token lifetime limits and clock skew: the same for every service, and for the tools that mint tokens. */
export const tokenEnvShape = {
  JWT_MAX_LIFETIME_USER_SECONDS: lifetime(DEFAULT_TOKEN_LIFETIME_LIMITS.user),
  JWT_MAX_LIFETIME_ADMIN_SECONDS: lifetime(DEFAULT_TOKEN_LIFETIME_LIMITS.admin),
  JWT_MAX_LIFETIME_MACHINE_SECONDS: lifetime(DEFAULT_TOKEN_LIFETIME_LIMITS.machine),
  JWT_MAX_LIFETIME_SERVICE_SECONDS: lifetime(DEFAULT_TOKEN_LIFETIME_LIMITS.service),
  JWT_MAX_LIFETIME_SCHEDULER_SECONDS: lifetime(DEFAULT_TOKEN_LIFETIME_LIMITS.scheduler),
  JWT_CLOCK_SKEW_SECONDS: z.coerce.number().int().min(0).max(600).default(DEFAULT_CLOCK_SKEW_SECONDS),
};

type TokenEnv = { [K in keyof typeof tokenEnvShape]: number };

/** The lifetime limits by principal, from the validated variables. */
export function tokenLifetimeLimits(e: TokenEnv): TokenLifetimeLimits {
  return {
    user: e.JWT_MAX_LIFETIME_USER_SECONDS,
    admin: e.JWT_MAX_LIFETIME_ADMIN_SECONDS,
    machine: e.JWT_MAX_LIFETIME_MACHINE_SECONDS,
    service: e.JWT_MAX_LIFETIME_SERVICE_SECONDS,
    scheduler: e.JWT_MAX_LIFETIME_SCHEDULER_SECONDS,
  };
}

/** Variables every service reads, with the same meaning everywhere. */
export const commonEnvShape = {
  LOG_LEVEL: env.logLevel(),
  /** HS256 secret (development) — or JWT_JWKS_URL in production. */
  JWT_SECRET: z.string().min(16, "must be at least 16 characters").optional(),
  JWT_JWKS_URL: env.url(["https"]).optional(),
  JWT_ISSUER: z.string().optional(),
  JWT_AUDIENCE: z.string().optional(),
  ...tokenEnvShape,
  /** nats://host:port, or "memory" for the in-process bus (development only). */
  NATS_URL: z
    .string()
    .default("nats://127.0.0.1:4222")
    .refine((v) => v === "memory" || /^(nats|tls|ws|wss):\/\/[^\s]+$/.test(v), "must be nats://host:port or memory"),
  NATS_NAMESPACE: env.token(),
};

export interface AuthConfig {
  secret?: string;
  jwksUrl?: string;
  issuer?: string;
  audience?: string;
  maxLifetimeSeconds: TokenLifetimeLimits;
  clockSkewSeconds: number;
}

/**
 * Auth settings from the common variables. One of JWT_SECRET (HS256,
 * development) or JWT_JWKS_URL (production) is required. `callTokens` are
 * the variables (name → value) holding the tokens this service sends to
 * other services: left empty, a token is minted from JWT_SECRET, so with
 * JWKS and no secret each must be set. A ConfigError names every variable
 * at fault, at start rather than at the first call.
 */
export function authConfig(
  e: {
    JWT_SECRET?: string;
    JWT_JWKS_URL?: string;
    JWT_ISSUER?: string;
    JWT_AUDIENCE?: string;
  } & TokenEnv,
  callTokens: Record<string, string> = {},
): AuthConfig {
  const problems: string[] = [];
  if (!e.JWT_SECRET && !e.JWT_JWKS_URL) {
    problems.push("JWT_SECRET: required, or JWT_JWKS_URL instead (production); neither is set");
  } else if (!e.JWT_SECRET) {
    for (const [name, value] of Object.entries(callTokens)) {
      if (!value) {
        problems.push(
          `${name}: required with JWT_JWKS_URL and no JWT_SECRET (no token can be minted without a secret)`,
        );
      }
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return {
    secret: e.JWT_SECRET,
    jwksUrl: e.JWT_JWKS_URL,
    issuer: e.JWT_ISSUER,
    audience: e.JWT_AUDIENCE,
    maxLifetimeSeconds: tokenLifetimeLimits(e),
    clockSkewSeconds: e.JWT_CLOCK_SKEW_SECONDS,
  };
}

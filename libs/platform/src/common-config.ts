import { z } from "zod";
import { env } from "./config.js";

/** Variables every service reads, with the same meaning everywhere. */
export const commonEnvShape = {
  LOG_LEVEL: env.logLevel(),
  /** HS256 secret (development) — or JWT_JWKS_URL in production. */
  JWT_SECRET: z.string().min(16, "must be at least 16 characters").optional(),
  JWT_JWKS_URL: env.url(["https"]).optional(),
  JWT_ISSUER: z.string().optional(),
  JWT_AUDIENCE: z.string().optional(),
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
}

/** Auth settings from the common variables; one of secret or JWKS is required. */
export function authConfig(e: {
  JWT_SECRET?: string;
  JWT_JWKS_URL?: string;
  JWT_ISSUER?: string;
  JWT_AUDIENCE?: string;
}): AuthConfig {
  return { secret: e.JWT_SECRET, jwksUrl: e.JWT_JWKS_URL, issuer: e.JWT_ISSUER, audience: e.JWT_AUDIENCE };
}

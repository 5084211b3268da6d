import { createHmac } from "node:crypto";
import { ErrorReason } from "@emprops/contracts";
import { errors as joseErrors, importPKCS8, importSPKI, jwtVerify, SignJWT, type CryptoKey } from "jose";
import { type Clock, systemClock } from "./clock.js";

/**
 * Peer tokens: what lets one machine of a pool read one file from another.
 * The registry signs one per (file, requesting machine, serving machine)
 * when it answers ResolveLoras; the serving machine checks it before a byte
 * leaves its disk. With PEER_TOKEN_PRIVATE_KEY / PEER_TOKEN_PUBLIC_KEY
 * (Ed25519 PEM) only the registry can sign and a machine can only verify;
 * without them (development) both sides use an HS256 key derived from
 * JWT_SECRET, never the secret itself, so a peer token is never a bearer
 * token of the RPCs and an RPC token never opens a peer.
 */
export const PEER_TOKEN_ISSUER = "lora-registry";

/** The longest lifetime a serving machine accepts, whatever the registry signed. */
export const PEER_TOKEN_MAX_LIFETIME_SECONDS = 3600;

export interface PeerTokenKeys {
  /** Ed25519 private key, PKCS#8 PEM (registry, production). */
  privateKeyPem?: string;
  /** Ed25519 public key, SPKI PEM (machines, production). */
  publicKeyPem?: string;
  /** JWT_SECRET (development): HS256 with a key derived from it. */
  secret?: string;
}

export interface PeerGrant {
  /** Lower-case hex sha256 of the file. */
  sha256: string;
  /** The machine that will fetch. */
  requester: string;
  /** The machine that serves. */
  server: string;
}

/** Why a serving machine refuses a token: 401 (no or bad token) or 403 (a good token for something else). */
export class PeerTokenError extends Error {
  constructor(
    readonly status: 401 | 403,
    readonly reason: ErrorReason,
    message: string,
  ) {
    super(message);
    this.name = "PeerTokenError";
  }
}

const audienceOf = (server: string) => `peer:${server}`;

function derivedSecret(secret: string): Uint8Array {
  return createHmac("sha256", secret).update("emprops peer token v1").digest();
}

/** Whether these keys can sign (registry) or verify (machine) peer tokens at all. */
export function peerTokensConfigured(keys: PeerTokenKeys, use: "sign" | "verify"): boolean {
  return !!(use === "sign" ? keys.privateKeyPem : keys.publicKeyPem) || !!keys.secret;
}

/** Signs peer tokens living `ttlSeconds`. */
export function createPeerTokenSigner(keys: PeerTokenKeys, opts: { ttlSeconds: number; clock?: Clock }) {
  const clock = opts.clock ?? systemClock;
  const alg = keys.privateKeyPem ? "EdDSA" : "HS256";
  let key: Promise<CryptoKey | Uint8Array> | undefined;
  const signingKey = () =>
    (key ??= keys.privateKeyPem
      ? importPKCS8(keys.privateKeyPem, "EdDSA")
      : Promise.resolve(derivedSecret(requireSecret(keys.secret))));
  return async (grant: PeerGrant): Promise<{ token: string; expiresAt: Date }> => {
    const iat = Math.floor(clock.now().getTime() / 1000);
    const exp = iat + opts.ttlSeconds;
    const token = await new SignJWT({ sha256: grant.sha256.toLowerCase() })
      .setProtectedHeader({ alg, typ: "peer+jwt" })
      .setIssuer(PEER_TOKEN_ISSUER)
      .setSubject(grant.requester)
      .setAudience(audienceOf(grant.server))
      .setIssuedAt(iat)
      .setExpirationTime(exp)
      .sign(await signingKey());
    return { token, expiresAt: new Date(exp * 1000) };
  };
}

/**
 * Checks a peer token for `sha256` served by `server`: signature, issuer,
 * expiry (no grace), a lifetime of at most an hour, then that it names this
 * file and this machine. Resolves to the requesting machine.
 */
export function createPeerTokenVerifier(keys: PeerTokenKeys, opts: { clock?: Clock; clockSkewSeconds?: number } = {}) {
  const clock = opts.clock ?? systemClock;
  const skew = opts.clockSkewSeconds ?? 60;
  const algorithms = keys.publicKeyPem ? ["EdDSA"] : ["HS256"];
  let key: Promise<CryptoKey | Uint8Array> | undefined;
  const verifyingKey = () =>
    (key ??= keys.publicKeyPem
      ? importSPKI(keys.publicKeyPem, "EdDSA")
      : Promise.resolve(derivedSecret(requireSecret(keys.secret))));
  return async (token: string, want: { sha256: string; server: string }): Promise<{ requester: string }> => {
    if (!token)
      throw new PeerTokenError(
        401,
        ErrorReason.TOKEN_MISSING,
        "no peer token: send authorization: Bearer {token from ResolveLoras}",
      );
    const currentDate = clock.now();
    let payload;
    try {
      ({ payload } = await jwtVerify(token, await verifyingKey(), {
        algorithms,
        issuer: PEER_TOKEN_ISSUER,
        typ: "peer+jwt",
        requiredClaims: ["exp", "iat", "sub", "aud"],
        clockTolerance: skew,
        currentDate,
      }));
    } catch (err) {
      if (err instanceof joseErrors.JWTExpired) {
        throw new PeerTokenError(401, ErrorReason.TOKEN_EXPIRED, "the peer token has expired: resolve the LoRA again");
      }
      throw new PeerTokenError(
        401,
        ErrorReason.TOKEN_INVALID,
        "the peer token is not valid (malformed, wrongly signed or not a peer token)",
      );
    }
    const now = Math.floor(currentDate.getTime() / 1000);
    if ((payload.exp as number) <= now) {
      throw new PeerTokenError(401, ErrorReason.TOKEN_EXPIRED, "the peer token has expired: resolve the LoRA again");
    }
    if ((payload.exp as number) - (payload.iat as number) > PEER_TOKEN_MAX_LIFETIME_SECONDS) {
      throw new PeerTokenError(
        401,
        ErrorReason.TOKEN_LIFETIME_TOO_LONG,
        `the peer token lives longer than ${PEER_TOKEN_MAX_LIFETIME_SECONDS} s`,
      );
    }
    const audiences = Array.isArray(payload.aud) ? payload.aud : [payload.aud];
    if (!audiences.includes(audienceOf(want.server))) {
      throw new PeerTokenError(
        403,
        ErrorReason.PEER_TOKEN_MISMATCH,
        `the peer token is for another machine, not ${want.server}`,
      );
    }
    if (payload.sha256 !== want.sha256.toLowerCase()) {
      throw new PeerTokenError(
        403,
        ErrorReason.PEER_TOKEN_MISMATCH,
        `the peer token is for another file, not sha256 ${want.sha256}`,
      );
    }
    return { requester: payload.sub as string };
  };
}

export type PeerTokenSigner = ReturnType<typeof createPeerTokenSigner>;
export type PeerTokenVerifier = ReturnType<typeof createPeerTokenVerifier>;

function requireSecret(secret: string | undefined): string {
  if (!secret) throw new Error("peer tokens need PEER_TOKEN_PRIVATE_KEY / PEER_TOKEN_PUBLIC_KEY or JWT_SECRET");
  return secret;
}

import { generateKeyPairSync } from "node:crypto";
import { ErrorReason } from "@emprops/contracts";
import {
  createPeerTokenSigner,
  createPeerTokenVerifier,
  createTokenVerifier,
  ManualClock,
  mintToken,
  PeerTokenError,
} from "../src/index.js";

const SECRET = "peer-token-test-secret-0123456789";
const SHA = "ab".repeat(32);
const OTHER_SHA = "cd".repeat(32);
const ed25519 = () =>
  generateKeyPairSync("ed25519", {
    publicKeyEncoding: { type: "spki", format: "pem" },
    privateKeyEncoding: { type: "pkcs8", format: "pem" },
  });

async function refusal(p: Promise<unknown>): Promise<[number, ErrorReason]> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(err instanceof PeerTokenError)) throw new Error(`expected a PeerTokenError, got ${String(err)}`);
  return [err.status, err.reason];
}

describe.each([
  [
    "Ed25519 keys",
    () => {
      const keys = ed25519();
      return { sign: { privateKeyPem: keys.privateKey }, verify: { publicKeyPem: keys.publicKey } };
    },
  ],
  ["a key derived from JWT_SECRET", () => ({ sign: { secret: SECRET }, verify: { secret: SECRET } })],
])("peer tokens with %s", (_name, keysOf) => {
  const keys = keysOf();
  const clock = new ManualClock(new Date("2026-12-03T12:00:00Z"));
  const sign = createPeerTokenSigner(keys.sign, { ttlSeconds: 300, clock });
  const verify = createPeerTokenVerifier(keys.verify, { clock, clockSkewSeconds: 0 });

  test("open the file for the serving machine they name, and say who asks", async () => {
    const { token, expiresAt } = await sign({ sha256: SHA.toUpperCase(), requester: "node-2", server: "node-1" });
    expect(expiresAt).toEqual(new Date("2026-12-03T12:05:00Z"));
    await expect(verify(token, { sha256: SHA, server: "node-1" })).resolves.toEqual({ requester: "node-2" });
  });

  test("open no other file, no other machine, and nothing once expired", async () => {
    const { token } = await sign({ sha256: SHA, requester: "node-2", server: "node-1" });
    expect(await refusal(verify(token, { sha256: OTHER_SHA, server: "node-1" }))).toEqual([
      403,
      ErrorReason.PEER_TOKEN_MISMATCH,
    ]);
    expect(await refusal(verify(token, { sha256: SHA, server: "node-3" }))).toEqual([
      403,
      ErrorReason.PEER_TOKEN_MISMATCH,
    ]);
    expect(await refusal(verify("", { sha256: SHA, server: "node-1" }))).toEqual([401, ErrorReason.TOKEN_MISSING]);
    expect(await refusal(verify(token.slice(0, -4) + "AAAA", { sha256: SHA, server: "node-1" }))).toEqual([
      401,
      ErrorReason.TOKEN_INVALID,
    ]);
    const later = createPeerTokenVerifier(keys.verify, {
      clock: new ManualClock(new Date("2026-12-03T12:05:00Z")),
      clockSkewSeconds: 0,
    });
    expect(await refusal(later(token, { sha256: SHA, server: "node-1" }))).toEqual([401, ErrorReason.TOKEN_EXPIRED]);
  });

  test("are not RPC tokens, and RPC tokens are not peer tokens", async () => {
    const { token } = await sign({ sha256: SHA, requester: "node-2", server: "node-1" });
    const rpc = createTokenVerifier({ secret: SECRET, clock });
    await expect(rpc(token)).rejects.toThrow(/not valid/);
    const machineToken = await mintToken(SECRET, { subject: "node-2", roles: ["machine"] });
    expect(await refusal(verify(machineToken, { sha256: SHA, server: "node-1" }))).toEqual([
      401,
      ErrorReason.TOKEN_INVALID,
    ]);
  });
});

test("a peer token living over an hour is refused, whoever signed it", async () => {
  const keys = ed25519();
  const sign = createPeerTokenSigner({ privateKeyPem: keys.privateKey }, { ttlSeconds: 7200 });
  const { token } = await sign({ sha256: SHA, requester: "node-2", server: "node-1" });
  const verify = createPeerTokenVerifier({ publicKeyPem: keys.publicKey });
  expect(await refusal(verify(token, { sha256: SHA, server: "node-1" }))).toEqual([
    401,
    ErrorReason.TOKEN_LIFETIME_TOO_LONG,
  ]);
});

test("a token signed with another key is refused", async () => {
  const sign = createPeerTokenSigner({ privateKeyPem: ed25519().privateKey }, { ttlSeconds: 60 });
  const { token } = await sign({ sha256: SHA, requester: "node-2", server: "node-1" });
  const verify = createPeerTokenVerifier({ publicKeyPem: ed25519().publicKey });
  expect(await refusal(verify(token, { sha256: SHA, server: "node-1" }))).toEqual([401, ErrorReason.TOKEN_INVALID]);
});

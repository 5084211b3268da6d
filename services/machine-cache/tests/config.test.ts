import { ConfigError } from "@emprops/platform";
import { loadConfig } from "../src/config.js";

const JWKS = "https://auth.example.com/.well-known/jwks.json";

function problems(env: NodeJS.ProcessEnv): string[] {
  try {
    loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error("the configuration was accepted");
}

describe("auth configuration", () => {
  it("needs JWT_SECRET or JWT_JWKS_URL", () => {
    expect(problems({})).toEqual([expect.stringMatching(/^JWT_SECRET: required, or JWT_JWKS_URL instead/)]);
  });

  it("with JWKS and no secret needs MACHINE_TOKEN for the registry calls, at start", () => {
    expect(problems({ JWT_JWKS_URL: JWKS })).toEqual([
      expect.stringMatching(/^MACHINE_TOKEN: required with JWT_JWKS_URL/),
    ]);
    const cfg = loadConfig({ JWT_JWKS_URL: JWKS, MACHINE_TOKEN: "a-token-issued-for-this-machine" });
    expect(cfg).toMatchObject({ machineToken: "a-token-issued-for-this-machine", auth: { jwksUrl: JWKS } });
  });
});

describe("peer configuration", () => {
  const base = { JWT_SECRET: "config-test-secret-0123456789" };

  it("listens on every interface at the advertised port unless told otherwise", () => {
    expect(loadConfig({ ...base, MACHINE_PEER_ADDRESS: "10.0.0.7:50054" }).peer).toMatchObject({
      listenHost: "0.0.0.0",
      listenPort: 50054,
      maxUploads: 8,
      uploadBytesPerSecond: 400 * 1024 * 1024,
      fetchEnabled: true,
    });
    expect(
      loadConfig({ ...base, MACHINE_PEER_ADDRESS: "peer.example:80", PEER_LISTEN_ADDRESS: "[::1]:9000" }).peer,
    ).toMatchObject({ listenHost: "::1", listenPort: 9000 });
  });

  it("takes a PEM public key, one line with \\n escapes too, and refuses anything else", () => {
    const pem = "-----BEGIN PUBLIC KEY-----\\nMCowBQYDK2VwAyEA\\n-----END PUBLIC KEY-----";
    expect(loadConfig({ ...base, PEER_TOKEN_PUBLIC_KEY: pem }).peer.tokenPublicKeyPem).toBe(
      "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n",
    );
    expect(problems({ ...base, PEER_TOKEN_PUBLIC_KEY: "not a key" })).toEqual([
      expect.stringMatching(/^PEER_TOKEN_PUBLIC_KEY: must be a PEM block/),
    ]);
    expect(problems({ ...base, PEER_LISTEN_ADDRESS: "nowhere" })).toEqual([
      expect.stringMatching(/^PEER_LISTEN_ADDRESS: must be host:port/),
    ]);
  });
});

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

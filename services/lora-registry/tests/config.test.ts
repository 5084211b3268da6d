import { ConfigError } from "@emprops/platform";
import { loadConfig } from "../src/config.js";

const base = { DATABASE_URL: "postgres://postgres@127.0.0.1:5432/x", JWT_SECRET: "a-secret-of-sixteen+" };

describe("configuration", () => {
  it("has the documented defaults", () => {
    const cfg = loadConfig(base);
    expect(cfg.quota).toEqual({
      defaultMaxBytes: 10 * 1024 ** 3,
      defaultMaxCount: 100,
      maxLoraBytes: 2 * 1024 ** 3,
      warningPercent: 80,
    });
    expect(cfg.upload).toEqual({ sessionTtlSeconds: 6 * 3600, urlTtlSeconds: 4 * 3600, reaperCron: "*/30 * * * * *" });
    expect(cfg.storageSweep).toEqual({ cron: "0 17 * * * *", orphanGraceMs: 24 * 3_600_000 });
    expect(cfg.port).toBe(50051);
  });

  it("names every bad variable at once", () => {
    let error: unknown;
    try {
      loadConfig({
        ...base,
        DEFAULT_QUOTA_BYTES: "-1",
        DEFAULT_QUOTA_COUNT: "lots",
        QUOTA_WARNING_PERCENT: "120",
        UPLOAD_SESSION_TTL_SECONDS: "5",
        UPLOAD_REAPER_CRON: "every minute",
        MAX_LORA_BYTES: "0",
        STORAGE_SWEEP_CRON: "hourly",
        STORAGE_ORPHAN_GRACE_HOURS: "0.5",
      });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const named = (error as ConfigError).problems.map((p) => p.split(":")[0]).sort();
    expect(named).toEqual([
      "DEFAULT_QUOTA_BYTES",
      "DEFAULT_QUOTA_COUNT",
      "MAX_LORA_BYTES",
      "QUOTA_WARNING_PERCENT",
      "STORAGE_ORPHAN_GRACE_HOURS",
      "STORAGE_SWEEP_CRON",
      "UPLOAD_REAPER_CRON",
      "UPLOAD_SESSION_TTL_SECONDS",
    ]);
  });

  it("takes the quota warning threshold in whole percent", () => {
    expect(loadConfig({ ...base, QUOTA_WARNING_PERCENT: "85" }).quota.warningPercent).toBe(85);
    expect(() => loadConfig({ ...base, QUOTA_WARNING_PERCENT: "79.5" })).toThrow(/QUOTA_WARNING_PERCENT/);
  });

  it("needs JWT_SECRET or JWT_JWKS_URL", () => {
    expect(problemsOf({ DATABASE_URL: base.DATABASE_URL })).toEqual([
      expect.stringMatching(/^JWT_SECRET: required, or JWT_JWKS_URL instead/),
    ]);
  });

  it("with JWKS and no secret needs REGISTRY_SERVICE_TOKEN for the gateway calls, at start", () => {
    const jwks = { DATABASE_URL: base.DATABASE_URL, JWT_JWKS_URL: "https://auth.example.com/.well-known/jwks.json" };
    expect(problemsOf(jwks)).toEqual([expect.stringMatching(/^REGISTRY_SERVICE_TOKEN: required with JWT_JWKS_URL/)]);
    const cfg = loadConfig({ ...jwks, REGISTRY_SERVICE_TOKEN: "a-token-issued-for-the-registry" });
    expect(cfg.auth.jwksUrl).toBe(jwks.JWT_JWKS_URL);
    expect(cfg.serviceToken).toBe("a-token-issued-for-the-registry");
    // With a secret too, the token can still be minted.
    expect(loadConfig({ ...base, JWT_JWKS_URL: jwks.JWT_JWKS_URL }).serviceToken).toBe("");
  });

  it("needs a database", () => {
    expect(() => loadConfig({ JWT_SECRET: base.JWT_SECRET })).toThrow(/DATABASE_URL/);
  });
});

function problemsOf(env: NodeJS.ProcessEnv): string[] {
  try {
    loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error("the configuration was accepted");
}

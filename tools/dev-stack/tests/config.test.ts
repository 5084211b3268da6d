import { spawnSync } from "node:child_process";
import path from "node:path";
import { ConfigError } from "@emprops/platform";
import { loadConfig as gatewayConfig } from "@emprops/blob-gateway";
import { loadConfig as registryConfig } from "@emprops/lora-registry";
import { loadConfig as machineConfig } from "@emprops/machine-cache";

const root = path.resolve(__dirname, "../../..");
const SECRET = "config-test-secret-0123456789";

function problems(load: () => unknown): string[] {
  try {
    load();
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return [];
}

describe("configuration is validated at start-up", () => {
  test("a malformed DATABASE_URL is named", () => {
    const found = problems(() => registryConfig({ JWT_SECRET: SECRET, DATABASE_URL: "not a url" }));
    expect(found).toEqual([expect.stringMatching(/^DATABASE_URL: must be a URL with scheme postgres/)]);
    expect(problems(() => registryConfig({ JWT_SECRET: SECRET, DATABASE_URL: "mysql://x/y" }))).toHaveLength(1);
    expect(problems(() => registryConfig({ JWT_SECRET: SECRET }))[0]).toMatch(/^DATABASE_URL:/);
  });

  test("a negative cache size, a bad port and a bad boolean are each named", () => {
    const found = problems(() =>
      machineConfig({
        JWT_SECRET: SECRET,
        LORA_CACHE_MAX_GB: "-5",
        MACHINE_CACHE_PORT: "70000",
        LORA_EVICTION_ENABLED: "maybe",
      }),
    );
    expect(found).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^LORA_CACHE_MAX_GB: /),
        expect.stringMatching(/^MACHINE_CACHE_PORT: /),
        expect.stringMatching(/^LORA_EVICTION_ENABLED: must be true or false/),
      ]),
    );
  });

  test("secrets are never echoed back in the message", () => {
    const found = problems(() => gatewayConfig({ JWT_SECRET: "short", AZURE_STORAGE_CONNECTION_STRING: "garbage" }));
    expect(found.join("\n")).not.toMatch(/garbage|short"/);
    expect(found).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^JWT_SECRET:/),
        expect.stringMatching(/^AZURE_STORAGE_CONNECTION_STRING:/),
      ]),
    );
  });

  test("token lifetime limits and clock skew are read and checked by every service", () => {
    const base = { JWT_SECRET: SECRET, DATABASE_URL: "postgres://x/y", AZURE_STORAGE_CONNECTION_STRING: undefined };
    const tokenEnv = {
      JWT_MAX_LIFETIME_USER_SECONDS: "3600",
      JWT_MAX_LIFETIME_MACHINE_SECONDS: "604800",
      JWT_CLOCK_SKEW_SECONDS: "5",
    };
    for (const load of [registryConfig, machineConfig]) {
      expect(load({ ...base, ...tokenEnv }).auth).toMatchObject({
        maxLifetimeSeconds: { user: 3600, admin: 86_400, machine: 604_800, service: 2_592_000 },
        clockSkewSeconds: 5,
      });
      expect(load(base).auth).toMatchObject({
        maxLifetimeSeconds: { user: 86_400, admin: 86_400, machine: 2_592_000, service: 2_592_000 },
        clockSkewSeconds: 60,
      });
    }
    const found = problems(() =>
      gatewayConfig({ ...base, JWT_MAX_LIFETIME_ADMIN_SECONDS: "10", JWT_CLOCK_SKEW_SECONDS: "-1" }),
    );
    expect(found).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^JWT_MAX_LIFETIME_ADMIN_SECONDS: .*(got "10")/),
        expect.stringMatching(/^JWT_CLOCK_SKEW_SECONDS: /),
      ]),
    );
  });

  test.each([
    ["lora-registry", { DATABASE_URL: "postgres//missing-colon" }, "DATABASE_URL"],
    ["machine-cache", { LORA_CACHE_MAX_GB: "-1" }, "LORA_CACHE_MAX_GB"],
    ["blob-gateway", { GATEWAY_PORT: "port" }, "GATEWAY_PORT"],
    ["blob-gateway", { JWT_SECRET: "", AZURE_STORAGE_CONNECTION_STRING: "UseDevelopmentStorage=true" }, "JWT_SECRET"],
    [
      "lora-registry",
      { JWT_SECRET: "", JWT_JWKS_URL: "https://auth.example.com/jwks.json", DATABASE_URL: "postgres://127.0.0.1:1/x" },
      "REGISTRY_SERVICE_TOKEN",
    ],
    ["machine-cache", { JWT_SECRET: "", JWT_JWKS_URL: "https://auth.example.com/jwks.json" }, "MACHINE_TOKEN"],
  ])("the built %s exits with code 78 and names %s", (service, bad, variable) => {
    const result = spawnSync(process.execPath, [path.join(root, "services", service, "dist", "main.js")], {
      env: { PATH: process.env.PATH, JWT_SECRET: SECRET, NATS_URL: "memory", ...bad },
      encoding: "utf8",
      timeout: 30_000,
    });
    expect(result.status).toBe(78);
    expect(result.stderr).toContain(`${service}: invalid configuration`);
    expect(result.stderr).toContain(`${variable}:`);
  });
});

import { ConfigError } from "@emprops/platform";
import { loadConfig } from "../src/config.js";

const KEY = "a2V5LWZvci10ZXN0cy1vbmx5LW5vdC1hLXJlYWwta2V5LTAxMjM0NTY3ODk=";
const base = { JWT_SECRET: "config-test-secret-0123456789" };

function problems(env: NodeJS.ProcessEnv): string[] {
  try {
    loadConfig({ ...base, ...env });
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error("the configuration was accepted");
}

describe("storage configuration", () => {
  it("signs with the account key of a connection string", () => {
    const cfg = loadConfig({
      ...base,
      AZURE_STORAGE_CONNECTION_STRING: `DefaultEndpointsProtocol=https;AccountName=emprops;AccountKey=${KEY};EndpointSuffix=core.windows.net`,
    });
    expect(cfg.storage).toEqual({
      auth: "shared-key",
      accountName: "emprops",
      accountKey: KEY,
      accountUrl: "https://emprops.blob.core.windows.net",
    });
    expect(cfg.allowHttpStorage).toBe(false);
  });

  it("accepts the variables machines use today (account + key)", () => {
    const cfg = loadConfig({ ...base, AZURE_STORAGE_ACCOUNT: "emprops", AZURE_STORAGE_KEY: KEY });
    expect(cfg.storage).toMatchObject({ auth: "shared-key", accountUrl: "https://emprops.blob.core.windows.net" });
  });

  it("uses its Azure AD identity (user delegation SAS) when given an account without a key", () => {
    expect(loadConfig({ ...base, AZURE_STORAGE_ACCOUNT: "emprops" }).storage).toEqual({
      auth: "azure-ad",
      accountName: "emprops",
      accountUrl: "https://emprops.blob.core.windows.net",
    });
    expect(loadConfig({ ...base, AZURE_STORAGE_ACCOUNT_URL: "https://other.blob.core.windows.net/" }).storage).toEqual({
      auth: "azure-ad",
      accountName: "other",
      accountUrl: "https://other.blob.core.windows.net",
    });
  });

  it("allows plain http only for an emulator on this machine, unless told otherwise", () => {
    const local = `AccountName=devstoreaccount1;AccountKey=${KEY};BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1`;
    expect(loadConfig({ ...base, AZURE_STORAGE_CONNECTION_STRING: local }).allowHttpStorage).toBe(true);
    expect(
      loadConfig({ ...base, AZURE_STORAGE_CONNECTION_STRING: "UseDevelopmentStorage=true" }).storage,
    ).toMatchObject({ accountUrl: "http://127.0.0.1:10000/devstoreaccount1", accountName: "devstoreaccount1" });
    expect(problems({ AZURE_STORAGE_CONNECTION_STRING: local, GATEWAY_ALLOW_HTTP_STORAGE: "false" })).toEqual([
      expect.stringMatching(/^GATEWAY_ALLOW_HTTP_STORAGE: .*plain http/),
    ]);

    const remote = `AccountName=devstoreaccount1;AccountKey=${KEY};BlobEndpoint=http://azurite:10000/devstoreaccount1`;
    expect(problems({ AZURE_STORAGE_CONNECTION_STRING: remote })).toEqual([
      expect.stringMatching(/^GATEWAY_ALLOW_HTTP_STORAGE: /),
    ]);
    expect(
      loadConfig({ ...base, AZURE_STORAGE_CONNECTION_STRING: remote, GATEWAY_ALLOW_HTTP_STORAGE: "true" })
        .allowHttpStorage,
    ).toBe(true);
    expect(problems({ AZURE_STORAGE_ACCOUNT_URL: "http://emprops.blob.core.windows.net" })).toEqual([
      expect.stringMatching(/^GATEWAY_ALLOW_HTTP_STORAGE: /),
    ]);
  });

  it("names the variable that is wrong", () => {
    expect(problems({})).toEqual([
      expect.stringMatching(/^AZURE_STORAGE_CONNECTION_STRING: storage is not configured/),
    ]);
    expect(problems({ AZURE_STORAGE_CONNECTION_STRING: "AccountName=x;SharedAccessSignature=sv=1" })).toEqual([
      expect.stringMatching(/^AZURE_STORAGE_CONNECTION_STRING: has no AccountKey/),
    ]);
    const ok = { AZURE_STORAGE_ACCOUNT: "emprops", AZURE_STORAGE_KEY: KEY };
    expect(problems({ ...ok, UPLOAD_URL_TTL_SECONDS: "90000" })).toEqual([
      expect.stringMatching(/^UPLOAD_URL_TTL_SECONDS: must not exceed/),
    ]);
    expect(problems({ ...ok, UPLOAD_BLOCK_SIZE_BYTES: "1000" })).toEqual([
      expect.stringMatching(/^UPLOAD_BLOCK_SIZE_BYTES: must be at least 1 MiB/),
    ]);
    expect(problems({ ...ok, USER_LORA_CONTAINER: "Bad_Name" })).toEqual([
      expect.stringMatching(/^USER_LORA_CONTAINER: /),
    ]);
  });

  it("has the documented defaults", () => {
    const cfg = loadConfig({ ...base, AZURE_STORAGE_ACCOUNT: "emprops", AZURE_STORAGE_KEY: KEY });
    expect(cfg).toMatchObject({
      port: 50052,
      userContainer: "user-loras",
      sharedContainer: "emprops-share",
      uploadUrlTtlSeconds: 6 * 3600,
      uploadUrlMaxTtlSeconds: 24 * 3600,
      downloadUrlTtlSeconds: 900,
      downloadUrlMaxTtlSeconds: 3600,
      blockSizeBytes: 8 * 1024 * 1024,
      maxLoraSizeBytes: 2 * 1024 ** 3,
      uploadBlocksInFlight: 4,
      verifyRead: { connections: 4, rangeBytes: 16 * 1024 * 1024 },
    });
  });
});

describe("auth configuration", () => {
  it("needs JWT_SECRET or JWT_JWKS_URL; JWKS alone is enough (the gateway calls no one)", () => {
    const storage = { AZURE_STORAGE_CONNECTION_STRING: "UseDevelopmentStorage=true" };
    expect(problems({ ...storage, JWT_SECRET: "" })).toEqual([
      expect.stringMatching(/^JWT_SECRET: required, or JWT_JWKS_URL instead/),
    ]);
    const jwks = "https://auth.example.com/.well-known/jwks.json";
    expect(loadConfig({ ...storage, JWT_JWKS_URL: jwks }).auth.jwksUrl).toBe(jwks);
  });
});

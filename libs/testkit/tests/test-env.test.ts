import { testEnv } from "@emprops/testkit";

describe("testEnv", () => {
  it("returns what the global setup provided", () => {
    const env = testEnv();
    expect(env.databaseUrl).toMatch(/^postgres(ql)?:\/\//);
    expect(env.natsUrl).toMatch(/^nats:\/\//);
    expect(env.azureConnectionString).toMatch(/BlobEndpoint=|UseDevelopmentStorage/);
  });

  it("says how to fix a run without the global setup", () => {
    const saved = process.env.TEST_NATS_URL;
    delete process.env.TEST_NATS_URL;
    try {
      expect(() => testEnv()).toThrow(/TEST_NATS_URL is not set: tests must run through the root jest.config.js/);
    } finally {
      process.env.TEST_NATS_URL = saved;
    }
  });
});

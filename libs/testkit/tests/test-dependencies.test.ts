import { BlobServiceClient } from "@azure/storage-blob";
import { provideTestDependencies } from "@emprops/testkit";

describe("provideTestDependencies", () => {
  it("takes every dependency from the environment when set, starting nothing", async () => {
    const dependencies = await provideTestDependencies({
      DATABASE_URL: "postgres://postgres@db.example:5432/postgres",
      NATS_URL: "nats://nats.example:4222",
      AZURE_STORAGE_CONNECTION_STRING: "UseDevelopmentStorage=true",
    });
    expect(dependencies.env).toEqual({
      TEST_DATABASE_URL: "postgres://postgres@db.example:5432/postgres",
      TEST_NATS_URL: "nats://nats.example:4222",
      TEST_AZURE_STORAGE_CONNECTION_STRING: "UseDevelopmentStorage=true",
    });
    expect(dependencies.summary).toMatch(
      /^testkit: postgres: \$DATABASE_URL \| nats: \$NATS_URL \| azurite: \$AZURE_STORAGE_CONNECTION_STRING \(\d+\.\d s\)$/,
    );
    await dependencies.stop();
  });

  it("starts only what is missing, and stops only that", async () => {
    const dependencies = await provideTestDependencies({
      DATABASE_URL: "postgres://postgres@db.example:5432/postgres",
      NATS_URL: "nats://nats.example:4222",
    });
    expect(dependencies.summary).toMatch(
      /^testkit: postgres: \$DATABASE_URL \| nats: \$NATS_URL \| azurite: started azurite on 127\.0\.0\.1:\d+ /,
    );
    expect(dependencies.env.TEST_DATABASE_URL).toBe("postgres://postgres@db.example:5432/postgres");
    const service = BlobServiceClient.fromConnectionString(dependencies.env.TEST_AZURE_STORAGE_CONNECTION_STRING, {
      retryOptions: { maxTries: 1 },
    });
    await service.getContainerClient("started-here").create();

    await dependencies.stop();

    await expect(service.getContainerClient("started-here").exists()).rejects.toMatchObject({
      code: "ECONNREFUSED",
    });
  });
});

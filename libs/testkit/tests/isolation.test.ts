import { BlobServiceClient } from "@azure/storage-blob";
import {
  createTestContainers,
  createTestDatabase,
  testEnv,
  testNamespace,
  type TestContainers,
  type TestDatabase,
} from "@emprops/testkit";
import { AckPolicy, JetStreamApiCodes, JetStreamApiError, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { Client } from "pg";
import { sql } from "./support/sql.js";

async function databaseExists(name: string): Promise<boolean> {
  const rows = await sql(testEnv().databaseUrl, `SELECT 1 FROM pg_database WHERE datname = '${name}'`);
  return rows.length === 1;
}

describe("createTestDatabase", () => {
  let a: TestDatabase;
  let b: TestDatabase;

  beforeAll(async () => {
    [a, b] = await Promise.all([createTestDatabase("Isolation A!"), createTestDatabase("isolation-b")]);
  });
  afterAll(async () => {
    await Promise.all([a?.cleanup(), b?.cleanup()]);
  });

  it("names databases t_<label>_<random>, lower case", () => {
    expect(a.name).toMatch(/^t_isolation_a_[0-9a-f]{8}$/);
    expect(b.name).toMatch(/^t_isolation_b_[0-9a-f]{8}$/);
    expect(new URL(a.url).pathname).toBe(`/${a.name}`);
  });

  it("gives a usable database", async () => {
    await sql(a.url, "CREATE TABLE thing (id int PRIMARY KEY, name text NOT NULL)");
    await sql(a.url, "INSERT INTO thing VALUES (1, 'one')");
    expect(await sql(a.url, "SELECT name, current_database() AS db FROM thing")).toEqual([{ name: "one", db: a.name }]);
  });

  it("keeps two test databases apart", async () => {
    await sql(a.url, "CREATE TABLE only_in_a (id int)");
    const inB = await sql(b.url, "SELECT to_regclass('only_in_a') AS found");
    expect(inB).toEqual([{ found: null }]);
  });

  it("drops the database on cleanup, even with a client still connected", async () => {
    const db = await createTestDatabase("dropped");
    const lingering = new Client({ connectionString: db.url });
    lingering.on("error", () => {}); // the forced drop terminates this session
    await lingering.connect();
    expect(await databaseExists(db.name)).toBe(true);

    await db.cleanup();

    expect(await databaseExists(db.name)).toBe(false);
    await lingering.end().catch(() => {});
    await db.cleanup(); // idempotent
  });
});

describe("createTestContainers", () => {
  let containers: TestContainers;

  beforeAll(async () => {
    containers = await createTestContainers("Blob Pair");
  });
  afterAll(async () => {
    await containers?.cleanup();
  });

  it("creates a user and a shared container that can be written and read", async () => {
    expect(containers.userContainer).toMatch(/^t-blob-pair-[0-9a-f]{8}-user$/);
    expect(containers.sharedContainer).toMatch(/^t-blob-pair-[0-9a-f]{8}-shared$/);
    const service = BlobServiceClient.fromConnectionString(containers.connectionString);
    for (const name of [containers.userContainer, containers.sharedContainer]) {
      const blob = service.getContainerClient(name).getBlockBlobClient("users/u1/loras/a.safetensors");
      await blob.upload(`hello ${name}`, Buffer.byteLength(`hello ${name}`));
      expect((await blob.downloadToBuffer()).toString()).toBe(`hello ${name}`);
    }
  });

  it("deletes both containers on cleanup", async () => {
    const pair = await createTestContainers("gone");
    const service = BlobServiceClient.fromConnectionString(pair.connectionString);
    await service.getContainerClient(pair.userContainer).uploadBlockBlob("x", "x", 1);
    await pair.cleanup();
    expect(await service.getContainerClient(pair.userContainer).exists()).toBe(false);
    expect(await service.getContainerClient(pair.sharedContainer).exists()).toBe(false);
  });
});

describe("testNamespace", () => {
  it("gives distinct NATS-safe namespaces with their event names", () => {
    const one = testNamespace("Lora Registry/Deletes");
    const two = testNamespace("Lora Registry/Deletes");
    expect(one.namespace).toMatch(/^t_lora_registry_deletes_[0-9a-f]{8}$/);
    expect(one.namespace).not.toBe(two.namespace);
    expect(one.names.stream).toBe(`${one.namespace}_LORA_EVENTS`);
    expect(one.names.loraDeleted("user-1")).toBe(`${one.namespace}.lora.deleted.user-1`);
    expect(one.natsUrl).toBe(testEnv().natsUrl);
  });

  it("deletes the namespace's stream and its consumers on cleanup", async () => {
    const ns = testNamespace("stream");
    const nc = await connect({ servers: ns.natsUrl });
    try {
      const jsm = await jetstreamManager(nc);
      await jsm.streams.add({ name: ns.names.stream, subjects: ns.names.streamSubjects });
      await jsm.consumers.add(ns.names.stream, {
        durable_name: ns.names.durables.blobGatewayDeletions,
        ack_policy: AckPolicy.Explicit,
        filter_subject: ns.names.loraDeletedAll,
      });
      const js = jsm.jetstream();
      await js.publish(ns.names.loraDeleted("u1"), "{}", { msgID: "event-1" });
      expect((await jsm.streams.info(ns.names.stream)).state.messages).toBe(1);

      await ns.cleanup();

      await expect(jsm.streams.info(ns.names.stream)).rejects.toMatchObject({ code: JetStreamApiCodes.StreamNotFound });
      await expect(jsm.consumers.info(ns.names.stream, ns.names.durables.blobGatewayDeletions)).rejects.toBeInstanceOf(
        JetStreamApiError,
      );
      await ns.cleanup(); // nothing left to delete: still fine
    } finally {
      await nc.close();
    }
  });

  it("also deletes other streams a test made under the namespace's subjects", async () => {
    const ns = testNamespace("extra");
    const nc = await connect({ servers: ns.natsUrl });
    try {
      const jsm = await jetstreamManager(nc);
      await jsm.streams.add({ name: `${ns.namespace}_EXTRA`, subjects: [`${ns.namespace}.extra.>`] });
      await ns.cleanup();
      await expect(jsm.streams.info(`${ns.namespace}_EXTRA`)).rejects.toMatchObject({
        code: JetStreamApiCodes.StreamNotFound,
      });
    } finally {
      await nc.close();
    }
  });

  it("leaves other namespaces' streams alone", async () => {
    const mine = testNamespace("mine");
    const theirs = testNamespace("theirs");
    const nc = await connect({ servers: mine.natsUrl });
    try {
      const jsm = await jetstreamManager(nc);
      await jsm.streams.add({ name: mine.names.stream, subjects: mine.names.streamSubjects });
      await jsm.streams.add({ name: theirs.names.stream, subjects: theirs.names.streamSubjects });
      await mine.cleanup();
      expect((await jsm.streams.info(theirs.names.stream)).config.name).toBe(theirs.names.stream);
    } finally {
      await theirs.cleanup();
      await nc.close();
    }
  });
});

import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { LoraDeletedSchema } from "@emprops/contracts";
import { jetstream, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { newBlob, pathOf } from "./support/ids.js";
import { rpcFailure } from "@emprops/testkit";
import { type GatewayUnderTest, startGatewayForTest } from "./support/start-gateway.js";

let t: GatewayUnderTest;
let nc: NatsConnection;
let jsm: JetStreamManager;

beforeAll(async () => {
  t = await startGatewayForTest("blob-deletions");
  nc = await connect({ servers: t.namespace.natsUrl });
  jsm = await jetstreamManager(nc);
});

afterAll(async () => {
  await nc?.close();
  await t?.stop();
});

type Blob = { userId: string; loraId: string; extension: string };

async function putBlob(blob: Blob, body = "lora bytes"): Promise<void> {
  await t.userContainer.getBlockBlobClient(pathOf(blob)).uploadData(Buffer.from(body));
}

const exists = (blob: Blob) => t.userContainer.getBlockBlobClient(pathOf(blob)).exists();

/** Publishes a LoraDeleted event as the registry's outbox relay does. */
async function publishDeleted(blob: Blob, eventId = randomUUID(), msgId = eventId): Promise<void> {
  const event = create(LoraDeletedSchema, {
    eventId,
    loraId: blob.loraId,
    userId: blob.userId,
    blobPath: pathOf(blob),
    extension: blob.extension,
    deleteTime: timestampNow(),
    reason: "user",
  });
  await publishRaw(t.namespace.names.loraDeleted(blob.userId), toBinary(LoraDeletedSchema, event), msgId);
}

async function publishRaw(subject: string, data: Uint8Array, msgId: string): Promise<void> {
  const js = jetstream(nc);
  await js.publish(subject, data, { msgID: msgId });
}

/** Waits until the gateway's durable consumer has acknowledged everything in the stream. */
async function consumerSettled(): Promise<{ redelivered: number; delivered: number }> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const stream = await jsm.streams.info(t.namespace.names.stream);
    const info = await jsm.consumers
      .info(t.namespace.names.stream, t.namespace.names.durables.blobGatewayDeletions)
      .catch(() => undefined);
    if (
      info &&
      info.num_pending === 0 &&
      info.num_ack_pending === 0 &&
      info.ack_floor.stream_seq >= stream.state.last_seq
    ) {
      return { redelivered: info.num_redelivered, delivered: info.delivered.consumer_seq };
    }
    if (Date.now() > deadline) throw new Error(`consumer did not settle: ${JSON.stringify(info)}`);
    await sleep(50);
  }
}

describe("DeleteBlob", () => {
  it("deletes a blob once; deleting it again succeeds with deleted = false", async () => {
    const blob = newBlob();
    const sibling = { ...blob, loraId: String(Number(blob.loraId) + 100000) };
    await putBlob(blob);
    await putBlob(sibling);
    expect(await t.client.deleteBlob({ blob })).toMatchObject({ deleted: true });
    expect(await exists(blob)).toBe(false);
    expect(await t.client.deleteBlob({ blob })).toMatchObject({ deleted: false });
    expect(await exists(sibling)).toBe(true);
  });

  it("refuses bad ids and deletes nothing", async () => {
    const blob = newBlob();
    await putBlob(blob);
    for (const bad of [
      { ...blob, userId: `${blob.userId}/..` },
      { ...blob, loraId: `${blob.loraId}.safetensors` },
      { ...blob, extension: "safetensors/../../x" },
    ]) {
      const failure = await rpcFailure(t.client.deleteBlob({ blob: bad }));
      expect(failure.code).toBe("InvalidArgument");
      expect(["INVALID_ID", "INVALID_FILE_FORMAT"]).toContain(failure.reason);
    }
    expect((await rpcFailure(t.client.deleteBlob({}))).reason).toBe("INVALID_REQUEST");
    expect(await exists(blob)).toBe(true);
  });
});

describe("LoraDeleted consumer", () => {
  it("deletes the blob of a deleted LoRA and acknowledges the event", async () => {
    const blob = newBlob("pt");
    const kept = newBlob("safetensors", blob.userId);
    await putBlob(blob);
    await putBlob(kept);
    await publishDeleted(blob);
    const settled = await consumerSettled();
    expect(await exists(blob)).toBe(false);
    expect(await exists(kept)).toBe(true);
    expect(settled.redelivered).toBe(0);
  });

  it("deletes the LoRA's preview image with it, and no other LoRA's", async () => {
    const blob = newBlob();
    const kept = newBlob("safetensors", blob.userId);
    const previewOf = (b: Blob) =>
      t.userContainer.getBlockBlobClient(`users/${b.userId}/loras/${b.loraId}.preview.webp`);
    await putBlob(blob);
    await previewOf(blob).uploadData(Buffer.from("webp"));
    await previewOf(kept).uploadData(Buffer.from("webp"));
    await publishDeleted(blob);
    await consumerSettled();
    expect(await exists(blob)).toBe(false);
    expect(await previewOf(blob).exists()).toBe(false);
    expect(await previewOf(kept).exists()).toBe(true);
  });

  it("treats a redelivered event and an event for a missing blob as done", async () => {
    const blob = newBlob();
    await putBlob(blob);
    const eventId = randomUUID();
    await publishDeleted(blob, eventId);
    await consumerSettled();
    expect(await exists(blob)).toBe(false);

    // The same event again (past the duplicate window it gets a new message id),
    // and an event whose blob never existed: both acknowledged, nothing redelivered.
    await publishDeleted(blob, eventId, `${eventId}-again`);
    await publishDeleted(newBlob());
    const settled = await consumerSettled();
    expect(settled.redelivered).toBe(0);
    expect(await exists(blob)).toBe(false);
  });

  it("drops an event it can never apply, without touching any blob", async () => {
    const blob = newBlob();
    await putBlob(blob);
    await publishRaw(t.namespace.names.loraDeleted(blob.userId), Buffer.from([0xff, 0xff, 0xff]), randomUUID());
    const hostile = create(LoraDeletedSchema, {
      eventId: randomUUID(),
      userId: blob.userId,
      loraId: "../../other",
      extension: blob.extension,
      blobPath: pathOf(blob),
    });
    await publishRaw(t.namespace.names.loraDeleted(blob.userId), toBinary(LoraDeletedSchema, hostile), randomUUID());
    const settled = await consumerSettled();
    expect(settled.redelivered).toBe(0);
    expect(await exists(blob)).toBe(true);
  });

  it("keeps retrying while storage refuses, and deletes once it can", async () => {
    // A blob under a lease cannot be deleted; the event must wait, not be lost.
    const blob = newBlob();
    await putBlob(blob);
    const lease = t.userContainer.getBlockBlobClient(pathOf(blob)).getBlobLeaseClient();
    await lease.acquireLease(-1);
    await publishDeleted(blob);
    const deadline = Date.now() + 20_000;
    for (;;) {
      const info = await jsm.consumers.info(t.namespace.names.stream, t.namespace.names.durables.blobGatewayDeletions);
      if (info.num_redelivered > 0) break;
      if (Date.now() > deadline) throw new Error("the failed deletion was never redelivered");
      await sleep(50);
    }
    expect(await exists(blob)).toBe(true);
    await lease.releaseLease();
    await consumerSettled();
    expect(await exists(blob)).toBe(false);
  });
});

import { randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fromBinary } from "@bufbuild/protobuf";
import { LoraDeletedSchema, UploadState } from "@emprops/contracts";
import { eventually, readStream, startNatsServer, type StartedNatsServer } from "@emprops/testkit";
import { sql } from "kysely";
import { type RegistryUnderTest, startRegistryForTest } from "./support/registry.js";
import { seedLoras, seedPendingUpload } from "./support/seed.js";

// A NATS server of this file's own: the test stops and restarts it.
let nats: StartedNatsServer;
let storeDir: string;
let port: number;
let t: RegistryUnderTest;

beforeAll(async () => {
  storeDir = await mkdtemp(path.join(tmpdir(), "registry-nats-"));
  nats = await startNatsServer({ persistent: true, dataDir: storeDir });
  port = Number(new URL(nats.url).port);
  t = await startRegistryForTest("delete-events", { natsUrl: nats.url });
  // The stream exists once the registry's bus is connected.
  await eventually(() => expect(t.registry.ctx.bus.connected).toBe(true));
  await eventually(() => readStream(nats.url, t.namespace.names.stream));
});

afterAll(async () => {
  await t?.stop();
  await nats?.stop();
  await rm(storeDir, { recursive: true, force: true });
});

const unsent = async () =>
  (await t.db.selectFrom("lora_outbox").selectAll().where("sent_at", "is", null).execute()).length;

describe("deletion events", () => {
  it("are published after NATS comes back, exactly once per Nats-Msg-Id", async () => {
    const owner = randomUUID();
    const [loraId] = (await seedLoras(t.db, [{ userId: owner, name: "gone.safetensors", sizeBytes: 5000 }])) as [
      string,
    ];
    const me = t.as(owner);
    const before = await me.lora.getQuota({});

    await nats.stop();
    await eventually(() => expect(t.registry.ctx.bus.connected).toBe(false));

    // The delete itself does not need NATS.
    await me.lora.deleteLora({ loraId });
    const after = await me.lora.getQuota({});
    expect(after.quota!.usedBytes).toBe(before.quota!.usedBytes - 5000n);
    expect(after.quota!.usedCount).toBe(before.quota!.usedCount - 1);
    // The relay keeps trying while NATS is down.
    const row = await eventually(async () => {
      const r = await t.db.selectFrom("lora_outbox").selectAll().executeTakeFirstOrThrow();
      expect(r.attempts).toBeGreaterThanOrEqual(2);
      return r;
    });
    expect(row.sent_at).toBeNull();
    expect(row.last_error).toBeTruthy();

    nats = await startNatsServer({ persistent: true, dataDir: storeDir, port });
    await eventually(async () => expect(await unsent()).toBe(0), { timeoutMs: 30_000 });

    const subject = t.namespace.names.loraDeleted(owner);
    const messages = await readStream(nats.url, t.namespace.names.stream, subject);
    expect(messages).toHaveLength(1);
    const event = fromBinary(LoraDeletedSchema, messages[0]!.data);
    expect(messages[0]!.msgId).toBe(row.event_id);
    expect(event).toMatchObject({
      eventId: row.event_id,
      loraId,
      userId: owner,
      extension: "safetensors",
      blobPath: `users/${owner}/loras/${loraId}.safetensors`,
      reason: "user",
    });

    // A relay that published but could not record it publishes again: the stream keeps one copy.
    await sql`UPDATE lora_outbox SET sent_at = NULL`.execute(t.db);
    await eventually(async () => expect(await unsent()).toBe(0));
    expect(await readStream(nats.url, t.namespace.names.stream, subject)).toHaveLength(1);

    // Deleting again is harmless and publishes nothing more.
    await me.lora.deleteLora({ loraId });
    expect(await t.db.selectFrom("lora_outbox").selectAll().execute()).toHaveLength(1);
  });

  it("account deletion hides every LoRA, cancels uploads, releases the quota and emits one event per LoRA", async () => {
    const owner = randomUUID();
    const other = randomUUID();
    const ids = await seedLoras(t.db, [
      { userId: owner, sizeBytes: 100 },
      { userId: owner, sizeBytes: 200 },
      { userId: owner, sizeBytes: 300 },
      { userId: other, sizeBytes: 400 },
    ]);
    // A reservation needs the ledger: SetUserQuota creates it.
    await t.as("root", ["admin"]).admin.setUserQuota({ userId: owner, maxCount: 50 });
    const pending = await seedPendingUpload(t.db, owner, { sizeBytes: 1000 });
    expect((await t.as(owner).lora.getQuota({})).quota).toMatchObject({ usedCount: 3, reservedCount: 1 });

    const res = await t.as("root", ["admin"]).admin.deleteUserLoras({ userId: owner, reason: "account_deletion" });
    expect(res).toMatchObject({ deletedCount: 4, releasedBytes: 1600n });
    const quota = await t.as(owner).lora.getQuota({});
    expect(quota.quota).toMatchObject({ usedBytes: 0n, usedCount: 0, reservedBytes: 0n, reservedCount: 0 });
    expect(quota.loras).toEqual([]);
    expect((await t.as(owner).lora.listLoras({})).totalSize).toBe(0);
    expect((await t.as(other).lora.listLoras({})).totalSize).toBe(1);

    await eventually(async () => expect(await unsent()).toBe(0));
    const messages = await readStream(nats.url, t.namespace.names.stream, t.namespace.names.loraDeleted(owner));
    const events = messages.map((m) => fromBinary(LoraDeletedSchema, m.data));
    expect(events.map((e) => e.loraId).sort()).toEqual([...ids.slice(0, 3), pending.loraId].sort());
    expect(new Set(messages.map((m) => m.msgId)).size).toBe(4);
    expect(events.every((e) => e.reason === "account_deletion")).toBe(true);

    const audit = await t.as("root", ["admin"]).admin.listAuditEvents({ userId: owner, action: "lora.delete" });
    expect(audit.events).toHaveLength(4);
    expect(audit.events.every((e) => e.actorId === "root" && e.actorRole === "admin")).toBe(true);
  });

  it("an upload ended while storage is down still gets its blob deleted, through a deletion event", async () => {
    const owner = randomUUID();
    await t.as("root", ["admin"]).admin.setUserQuota({ userId: owner, maxCount: 5 });
    const { uploadId, loraId } = await seedPendingUpload(t.db, owner, { sizeBytes: 777 });
    expect((await t.as(owner).lora.getQuota({})).quota).toMatchObject({ reservedBytes: 777n, reservedCount: 1 });
    // This registry has no gateway: the direct deletion fails, the abort does not.
    await t.as(owner).lora.abortLoraUpload({ uploadId });
    expect((await t.as(owner).lora.getQuota({})).quota).toMatchObject({ reservedBytes: 0n, reservedCount: 0 });
    expect((await t.as(owner).lora.getLoraUpload({ uploadId })).upload?.state).toBe(UploadState.ABORTED);
    await eventually(async () => expect(await unsent()).toBe(0));
    const messages = await readStream(nats.url, t.namespace.names.stream, t.namespace.names.loraDeleted(owner));
    expect(messages.map((m) => fromBinary(LoraDeletedSchema, m.data))).toEqual([
      expect.objectContaining({ loraId, userId: owner, reason: "upload_aborted", extension: "safetensors" }),
    ]);
  });
});

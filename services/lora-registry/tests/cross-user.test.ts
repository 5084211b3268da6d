import { randomUUID } from "node:crypto";
import { ErrorReason, LoraSource } from "@emprops/contracts";
import { type RpcFailure, rpcFailure } from "@emprops/testkit";
import { type RegistryUnderTest, startRegistryForTest } from "./support/registry.js";
import { seedLoras, seedPendingUpload, snapshot } from "./support/seed.js";

let t: RegistryUnderTest;
const owner = randomUUID();
const intruder = randomUUID();
let loraId: string;
let uploadId: string;
const NEVER = "987654321";
const NEVER_UPLOAD = randomUUID();

beforeAll(async () => {
  t = await startRegistryForTest("cross-user");
  [loraId] = (await seedLoras(t.db, [{ userId: owner, name: "owned.safetensors", tags: ["style"] }])) as [string];
  ({ uploadId } = await seedPendingUpload(t.db, owner));
});

afterAll(async () => {
  await t?.stop();
});

/** The failure with the id taken out of the message, so two ids can be compared. */
function shape(f: RpcFailure, id: string) {
  return {
    ...f,
    message: f.message.replace(id, "<id>"),
    metadata: { ...f.metadata, lora_id: "<id>", upload_id: "<id>" },
  };
}

describe("another user's LoRA is indistinguishable from a missing one", () => {
  const calls: [string, (id: string) => Promise<unknown>][] = [
    ["GetLora", (id) => t.as(intruder).lora.getLora({ loraId: id })],
    [
      "UpdateLora",
      (id) => t.as(intruder).lora.updateLora({ loraId: id, name: "mine.safetensors", updateMask: { paths: ["name"] } }),
    ],
    ["DeleteLora", (id) => t.as(intruder).lora.deleteLora({ loraId: id })],
  ];
  it.each(calls)("%s", async (_name, call) => {
    const before = await snapshot(t.db);
    const theirs = await rpcFailure(call(loraId));
    const missing = await rpcFailure(call(NEVER));
    expect(theirs).toMatchObject({ code: "NotFound", reason: "LORA_NOT_FOUND" });
    expect(shape(theirs, loraId)).toEqual(shape(missing, NEVER));
    expect(await snapshot(t.db)).toBe(before);
  });

  const uploadCalls: [string, (id: string) => Promise<unknown>][] = [
    ["GetLoraUpload", (id) => t.as(intruder).lora.getLoraUpload({ uploadId: id })],
    ["CompleteLoraUpload", (id) => t.as(intruder).lora.completeLoraUpload({ uploadId: id })],
    ["AbortLoraUpload", (id) => t.as(intruder).lora.abortLoraUpload({ uploadId: id })],
  ];
  it.each(uploadCalls)("%s with another user's upload", async (_name, call) => {
    const before = await snapshot(t.db);
    const theirs = await rpcFailure(call(uploadId));
    const missing = await rpcFailure(call(NEVER_UPLOAD));
    expect(theirs).toMatchObject({ code: "NotFound", reason: "UPLOAD_NOT_FOUND" });
    expect(shape(theirs, uploadId)).toEqual(shape(missing, NEVER_UPLOAD));
    expect(await snapshot(t.db)).toBe(before);
  });

  it("ListLoras and GetQuota never show another user's rows", async () => {
    const list = await t.as(intruder).lora.listLoras({ search: "owned" });
    expect(list.loras).toEqual([]);
    expect(list.totalSize).toBe(0);
    const quota = await t.as(intruder).lora.getQuota({});
    expect(quota.loras).toEqual([]);
    expect(quota.quota?.usedCount).toBe(0);
    expect(quota.quota?.reservedCount).toBe(0);
  });

  it("ResolveLoras for another user's job resolves nothing, exactly like a missing id", async () => {
    const machine = t.as("machine-7", ["machine"]);
    const res = await machine.resolver.resolveLoras({
      userId: intruder,
      jobId: "job-1",
      machineId: "machine-7",
      skipDownloadUrls: true,
      refs: [
        { source: LoraSource.USER, identifier: loraId },
        { source: LoraSource.USER, identifier: NEVER },
      ],
    });
    const [theirs, missing] = res.results.map((r) => r.outcome);
    expect(theirs?.case).toBe("error");
    expect(missing?.case).toBe("error");
    if (theirs?.case !== "error" || missing?.case !== "error") return;
    expect(theirs.value.code).toBe("not_found");
    expect(theirs.value.reason).toBe(missing.value.reason);
    expect(theirs.value.message.replace(loraId, "<id>")).toBe(missing.value.message.replace(NEVER, "<id>"));

    // The owner's own job resolves it.
    const own = await machine.resolver.resolveLoras({
      userId: owner,
      jobId: "job-2",
      skipDownloadUrls: true,
      refs: [{ source: LoraSource.USER, identifier: loraId }],
    });
    const ok = own.results[0]?.outcome;
    expect(ok?.case).toBe("lora");
    if (ok?.case !== "lora") return;
    expect(ok.value).toMatchObject({ loraId, userId: owner, fileName: "owned.safetensors", downloadUrl: "" });
    expect(ok.value.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(Number(ok.value.sizeBytes)).toBeGreaterThan(0);

    // Both resolutions are in the audit log.
    const audit = await t.as("root", ["admin"]).admin.listAuditEvents({ action: "lora.resolve" });
    const jobs = audit.events.map((e) => JSON.parse(e.detailsJson).job_id as string);
    expect(jobs.filter((j) => j === "job-1")).toHaveLength(2);
    expect(jobs).toContain("job-2");
  });
});

describe("a job without a user", () => {
  it("may resolve shared LoRAs, never a user's", async () => {
    const machine = t.as("machine-7", ["machine"]);
    // No gateway answers in these tests: the shared reference gets as far as signing its URL.
    const shared = await machine.resolver.resolveLoras({
      userId: "",
      jobId: "job-no-user",
      refs: [{ source: LoraSource.SHARED, identifier: "style.safetensors" }],
    });
    expect(shared.results[0]?.outcome).toMatchObject({
      case: "error",
      value: { code: "unavailable", reason: ErrorReason.DEPENDENCY_UNAVAILABLE },
    });
    expect(
      await rpcFailure(
        machine.resolver.resolveLoras({
          userId: "",
          refs: [
            { source: LoraSource.SHARED, identifier: "style.safetensors" },
            { source: LoraSource.USER, identifier: loraId },
          ],
        }),
      ),
    ).toMatchObject({ code: "InvalidArgument", reason: "INVALID_ID" });
  });
});

describe("the owner", () => {
  it("reads, updates and deletes the LoRA; deleting twice is harmless; then it is gone", async () => {
    const me = t.as(owner);
    const got = await me.lora.getLora({ loraId });
    expect(got.lora?.metadata?.raw).toEqual({ ss_network_dim: "32" });

    const updated = await me.lora.updateLora({
      loraId,
      name: "Renamed.safetensors",
      tags: ["portrait", "lora", "portrait"],
      description: "my style",
      triggerWords: ["sks style"],
      updateMask: { paths: ["name", "tags", "description", "trigger_words"] },
    });
    expect(updated.lora).toMatchObject({ name: "Renamed.safetensors", tags: ["lora", "portrait"] });
    expect(updated.lora?.metadata?.description).toBe("my style");
    expect(updated.lora?.metadata?.triggerWords).toEqual(["sks style"]);
    expect(updated.lora?.metadata?.baseModel).toBe("SDXL");

    // Clearing the trigger words falls back to what the file says.
    const cleared = await me.lora.updateLora({ loraId, updateMask: { paths: ["trigger_words"] } });
    expect(cleared.lora?.metadata?.triggerWords).toEqual(["seeded"]);

    const changeExt = await rpcFailure(
      me.lora.updateLora({ loraId, name: "Renamed.pt", updateMask: { paths: ["name"] } }),
    );
    expect(changeExt).toMatchObject({ code: "InvalidArgument", reason: "INVALID_NAME" });

    const before = await me.lora.getQuota({});
    await me.lora.deleteLora({ loraId });
    await me.lora.deleteLora({ loraId });
    const after = await me.lora.getQuota({});
    expect(after.quota?.usedCount).toBe((before.quota?.usedCount ?? 0) - 1);
    expect(after.quota!.usedBytes).toBe(before.quota!.usedBytes - got.lora!.sizeBytes);

    expect(await rpcFailure(me.lora.getLora({ loraId }))).toMatchObject({ code: "NotFound", reason: "LORA_NOT_FOUND" });
    expect((await me.lora.listLoras({})).loras.map((l) => l.id)).not.toContain(loraId);
    const outbox = await t.db.selectFrom("lora_outbox").selectAll().execute();
    expect(outbox).toHaveLength(1);
  });
});

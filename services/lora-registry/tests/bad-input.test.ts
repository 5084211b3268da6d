import { randomUUID } from "node:crypto";
import { type LoraSortField, LoraSource, type SortOrder } from "@emprops/contracts";
import { rpcFailure } from "@emprops/testkit";
import { type RegistryUnderTest, startRegistryForTest } from "./support/registry.js";
import { seedLoras, snapshot } from "./support/seed.js";

let t: RegistryUnderTest;
const user = randomUUID();
let own: string;

beforeAll(async () => {
  t = await startRegistryForTest("bad-input", { env: { MAX_LORA_BYTES: String(1024 ** 3) } });
  [own] = (await seedLoras(t.db, [{ userId: user, name: "mine.safetensors" }])) as [string];
  // A ledger, so that a reservation would show if one slipped through.
  await t.as("root", ["admin"]).admin.setUserQuota({ userId: user, maxCount: 10 });
});

afterAll(async () => {
  await t?.stop();
});

const long = (n: number) => "x".repeat(n);
const badIds = ["", "abc", "-5", "0", "1.5", "12 ", "99999999999999999999", "9223372036854775808"];
const badUuids = ["", "not-a-uuid", "550e8400-e29b-41d4-a716-44665544000", "550e8400e29b41d4a716446655440000"];
const upload = (over: object) => ({ name: "ok.safetensors", sizeBytes: 1000n, ...over });

type Case = [string, string, () => Promise<unknown>];
const me = () => t.as(user).lora;
const admin = () => t.as("root", ["admin"]).admin;
const machine = () => t.as("machine-1", ["machine"]).resolver;

const cases: Case[] = [
  // CreateLoraUpload
  ["CreateLoraUpload empty name", "INVALID_NAME", () => me().createLoraUpload(upload({ name: "" }))],
  ["CreateLoraUpload blank name", "INVALID_NAME", () => me().createLoraUpload(upload({ name: "   " }))],
  [
    "CreateLoraUpload name too long",
    "INVALID_NAME",
    () => me().createLoraUpload(upload({ name: `${long(250)}.safetensors` })),
  ],
  ["CreateLoraUpload path in name", "INVALID_NAME", () => me().createLoraUpload(upload({ name: "../x.safetensors" }))],
  ["CreateLoraUpload backslash in name", "INVALID_NAME", () => me().createLoraUpload(upload({ name: "a\\b.pt" }))],
  [
    "CreateLoraUpload control char in name",
    "INVALID_NAME",
    () => me().createLoraUpload(upload({ name: "a\u0007.pt" })),
  ],
  ["CreateLoraUpload extension only", "INVALID_NAME", () => me().createLoraUpload(upload({ name: ".safetensors" }))],
  [
    "CreateLoraUpload wrong extension",
    "INVALID_FILE_FORMAT",
    () => me().createLoraUpload(upload({ name: "model.zip" })),
  ],
  ["CreateLoraUpload no extension", "INVALID_FILE_FORMAT", () => me().createLoraUpload(upload({ name: "model" }))],
  ["CreateLoraUpload zero size", "INVALID_SIZE", () => me().createLoraUpload(upload({ sizeBytes: 0n }))],
  ["CreateLoraUpload negative size", "INVALID_SIZE", () => me().createLoraUpload(upload({ sizeBytes: -1n }))],
  [
    "CreateLoraUpload too large",
    "FILE_TOO_LARGE",
    () => me().createLoraUpload(upload({ sizeBytes: 1024n ** 3n + 1n })),
  ],
  [
    "CreateLoraUpload 21 tags",
    "INVALID_TAGS",
    () => me().createLoraUpload(upload({ tags: Array.from({ length: 21 }, (_, i) => `t${i}`) })),
  ],
  ["CreateLoraUpload empty tag", "INVALID_TAGS", () => me().createLoraUpload(upload({ tags: ["ok", " "] }))],
  ["CreateLoraUpload long tag", "INVALID_TAGS", () => me().createLoraUpload(upload({ tags: [long(65)] }))],
  ["CreateLoraUpload bad sha256", "INVALID_REQUEST", () => me().createLoraUpload(upload({ sha256: "abc" }))],
  [
    "CreateLoraUpload head above 1 MiB",
    "INVALID_REQUEST",
    () => me().createLoraUpload(upload({ sizeBytes: 2n ** 21n, head: new Uint8Array(2 ** 20 + 1) })),
  ],
  [
    "CreateLoraUpload head longer than the file",
    "INVALID_REQUEST",
    () => me().createLoraUpload(upload({ head: new Uint8Array(1001) })),
  ],
  [
    "CreateLoraUpload bad upload_source",
    "INVALID_REQUEST",
    () => me().createLoraUpload(upload({ uploadSource: "my studio!" })),
  ],
  [
    "CreateLoraUpload long description",
    "INVALID_REQUEST",
    () => me().createLoraUpload(upload({ metadata: { description: long(2001) } })),
  ],
  [
    "CreateLoraUpload empty trigger word",
    "INVALID_REQUEST",
    () => me().createLoraUpload(upload({ metadata: { triggerWords: [""] } })),
  ],
  [
    "CreateLoraUpload long base model",
    "INVALID_REQUEST",
    () => me().createLoraUpload(upload({ metadata: { baseModel: long(65) } })),
  ],
  // Upload sessions
  ...badUuids.flatMap((id): Case[] => [
    [`GetLoraUpload id ${JSON.stringify(id)}`, "INVALID_ID", () => me().getLoraUpload({ uploadId: id })],
    [`CompleteLoraUpload id ${JSON.stringify(id)}`, "INVALID_ID", () => me().completeLoraUpload({ uploadId: id })],
    [`AbortLoraUpload id ${JSON.stringify(id)}`, "INVALID_ID", () => me().abortLoraUpload({ uploadId: id })],
  ]),
  // ListLoras
  ["ListLoras negative page size", "INVALID_PAGE_SIZE", () => me().listLoras({ pageSize: -1 })],
  ["ListLoras negative skip", "INVALID_REQUEST", () => me().listLoras({ skip: -3 })],
  ["ListLoras unknown sort", "INVALID_SORT", () => me().listLoras({ sort: 9 as LoraSortField })],
  ["ListLoras unknown order", "INVALID_SORT", () => me().listLoras({ order: 7 as SortOrder })],
  ["ListLoras garbage token", "INVALID_PAGE_TOKEN", () => me().listLoras({ pageToken: "not a token!" })],
  [
    "ListLoras forged token",
    "INVALID_PAGE_TOKEN",
    () => me().listLoras({ pageToken: Buffer.from('{"v":1,"q":"x","k":"a","i":"1"}').toString("base64url") }),
  ],
  [
    "ListLoras token of junk",
    "INVALID_PAGE_TOKEN",
    () => me().listLoras({ pageToken: Buffer.from("[1,2,3]").toString("base64url") }),
  ],
  ["ListLoras long search", "INVALID_REQUEST", () => me().listLoras({ search: long(256) })],
  ["ListLoras empty tag", "INVALID_TAGS", () => me().listLoras({ tags: [""] })],
  // GetLora / UpdateLora / DeleteLora
  ...badIds.flatMap((id): Case[] => [
    [`GetLora id ${JSON.stringify(id)}`, "INVALID_ID", () => me().getLora({ loraId: id })],
    [
      `UpdateLora id ${JSON.stringify(id)}`,
      "INVALID_ID",
      () => me().updateLora({ loraId: id, name: "n.pt", updateMask: { paths: ["name"] } }),
    ],
    [`DeleteLora id ${JSON.stringify(id)}`, "INVALID_ID", () => me().deleteLora({ loraId: id })],
  ]),
  [
    "UpdateLora unknown mask path",
    "INVALID_UPDATE_MASK",
    () => me().updateLora({ loraId: own, updateMask: { paths: ["hidden"] } }),
  ],
  ["UpdateLora nothing to update", "INVALID_UPDATE_MASK", () => me().updateLora({ loraId: own })],
  [
    "UpdateLora empty name",
    "INVALID_NAME",
    () => me().updateLora({ loraId: own, name: "", updateMask: { paths: ["name"] } }),
  ],
  [
    "UpdateLora other extension",
    "INVALID_NAME",
    () => me().updateLora({ loraId: own, name: "mine.pt", updateMask: { paths: ["name"] } }),
  ],
  [
    "UpdateLora not a LoRA name",
    "INVALID_FILE_FORMAT",
    () => me().updateLora({ loraId: own, name: "mine.exe", updateMask: { paths: ["name"] } }),
  ],
  [
    "UpdateLora 21 tags",
    "INVALID_TAGS",
    () =>
      me().updateLora({
        loraId: own,
        tags: Array.from({ length: 21 }, (_, i) => `t${i}`),
        updateMask: { paths: ["tags"] },
      }),
  ],
  [
    "UpdateLora long description",
    "INVALID_REQUEST",
    () => me().updateLora({ loraId: own, description: long(2001), updateMask: { paths: ["description"] } }),
  ],
  [
    "UpdateLora 51 trigger words",
    "INVALID_REQUEST",
    () =>
      me().updateLora({
        loraId: own,
        triggerWords: Array.from({ length: 51 }, (_, i) => `w${i}`),
        updateMask: { paths: ["trigger_words"] },
      }),
  ],
  // LoraAdminService
  ...badUuids.flatMap((id): Case[] => [
    [`SetUserQuota user ${JSON.stringify(id)}`, "INVALID_ID", () => admin().setUserQuota({ userId: id, maxCount: 5 })],
    [`GetUserQuota user ${JSON.stringify(id)}`, "INVALID_ID", () => admin().getUserQuota({ userId: id })],
    [
      `DeleteUserLoras user ${JSON.stringify(id)}`,
      "INVALID_ID",
      () => admin().deleteUserLoras({ userId: id, reason: "x" }),
    ],
  ]),
  ["SetUserQuota negative bytes", "INVALID_QUOTA", () => admin().setUserQuota({ userId: user, maxBytes: -1n })],
  ["SetUserQuota negative count", "INVALID_QUOTA", () => admin().setUserQuota({ userId: user, maxCount: -1 })],
  ["SetUserQuota absurd bytes", "INVALID_QUOTA", () => admin().setUserQuota({ userId: user, maxBytes: 2n ** 60n })],
  ["SetUserQuota absurd count", "INVALID_QUOTA", () => admin().setUserQuota({ userId: user, maxCount: 2_000_000_000 })],
  ["SetUserQuota nothing", "INVALID_QUOTA", () => admin().setUserQuota({ userId: user })],
  [
    "SetUserQuota reset and value",
    "INVALID_QUOTA",
    () => admin().setUserQuota({ userId: user, resetToDefaults: true, maxCount: 3 }),
  ],
  ["GetCacheStats long machine id", "INVALID_REQUEST", () => admin().getCacheStats({ machineId: long(129) })],
  ["ListAuditEvents negative page size", "INVALID_PAGE_SIZE", () => admin().listAuditEvents({ pageSize: -1 })],
  ["ListAuditEvents bad user", "INVALID_ID", () => admin().listAuditEvents({ userId: "bob" })],
  ["ListAuditEvents bad action", "INVALID_REQUEST", () => admin().listAuditEvents({ action: "DROP TABLE" })],
  [
    "ListAuditEvents inverted range",
    "INVALID_TIME_RANGE",
    () => admin().listAuditEvents({ startTime: { seconds: 200n, nanos: 0 }, endTime: { seconds: 100n, nanos: 0 } }),
  ],
  [
    "ListAuditEvents bad nanos",
    "INVALID_TIME_RANGE",
    () => admin().listAuditEvents({ startTime: { seconds: 1n, nanos: -1 } }),
  ],
  ["ListAuditEvents garbage token", "INVALID_PAGE_TOKEN", () => admin().listAuditEvents({ pageToken: "%%%" })],
  [
    "DeleteUserLoras long reason",
    "INVALID_REQUEST",
    () => admin().deleteUserLoras({ userId: user, reason: long(201) }),
  ],
  ["ReconcileQuota bad user", "INVALID_ID", () => admin().reconcileQuota({ userId: "nobody", repair: true })],
  // LoraResolverService
  ...badUuids.map((id): Case => [
    `ResolveLoras user ${JSON.stringify(id)}`,
    "INVALID_ID",
    () => machine().resolveLoras({ userId: id, refs: [{ source: LoraSource.USER, identifier: own }] }),
  ]),
  [
    "ResolveLoras 65 refs",
    "INVALID_REQUEST",
    () =>
      machine().resolveLoras({
        userId: user,
        refs: Array.from({ length: 65 }, () => ({ source: LoraSource.USER, identifier: own })),
      }),
  ],
  [
    "ResolveLoras long job id",
    "INVALID_REQUEST",
    () => machine().resolveLoras({ userId: user, jobId: long(129), refs: [] }),
  ],
  ["ListPopularLoras negative page size", "INVALID_PAGE_SIZE", () => machine().listPopularLoras({ pageSize: -5 })],
  ["ListPopularLoras bad user", "INVALID_ID", () => machine().listPopularLoras({ userId: "x" })],
  [
    "ListPopularLoras bad time",
    "INVALID_TIME_RANGE",
    () => machine().listPopularLoras({ usedSince: { seconds: 1n, nanos: 2_000_000_000 } }),
  ],
];

describe("every bad input is INVALID_ARGUMENT with a reason, and changes nothing", () => {
  it.each(cases)("%s → %s", async (_name, reason, call) => {
    const before = await snapshot(t.db);
    const failure = await rpcFailure(call());
    expect(failure.code).toBe("InvalidArgument");
    expect(failure.reason).toBe(reason);
    expect(failure.message).not.toBe("");
    expect(await snapshot(t.db)).toBe(before);
  });

  it("bad references fail one by one inside ResolveLoras, each with its reason", async () => {
    const before = await snapshot(t.db);
    const res = await machine().resolveLoras({
      userId: user,
      skipDownloadUrls: true,
      refs: [
        { source: LoraSource.UNSPECIFIED, identifier: own },
        { source: LoraSource.USER, identifier: "" },
        { source: LoraSource.USER, identifier: "12abc" },
        { source: LoraSource.SHARED, identifier: "../etc/passwd" },
        { source: LoraSource.SHARED, identifier: "" },
        { source: LoraSource.SHARED, identifier: "CON.safetensors" },
        { source: LoraSource.SHARED, identifier: "evil\u202Egpj.safetensors" },
        { source: LoraSource.USER, identifier: own },
      ],
    });
    const outcomes = res.results.map((r) =>
      r.outcome.case === "error" ? [r.outcome.value.code, r.outcome.value.reason] : ["ok"],
    );
    const { ErrorReason } = await import("@emprops/contracts");
    expect(outcomes).toEqual([
      ["invalid_argument", ErrorReason.INVALID_REFERENCE],
      ["invalid_argument", ErrorReason.INVALID_ID],
      ["invalid_argument", ErrorReason.INVALID_ID],
      ["invalid_argument", ErrorReason.INVALID_NAME],
      ["invalid_argument", ErrorReason.INVALID_REFERENCE],
      ["invalid_argument", ErrorReason.INVALID_NAME],
      ["invalid_argument", ErrorReason.INVALID_NAME],
      ["ok"],
    ]);
    // Only the audit log grew: one row per reference.
    const after = await snapshot(t.db);
    expect(after.replace(/lora_audit_event: .*\n/, "")).toBe(before.replace(/lora_audit_event: .*\n/, ""));
  });

  it("over quota is RESOURCE_EXHAUSTED with the numbers a UI shows, and reserves nothing", async () => {
    await admin().setUserQuota({ userId: user, maxBytes: 5000n });
    const before = await snapshot(t.db);
    const failure = await rpcFailure(me().createLoraUpload(upload({ sizeBytes: 4500n })));
    expect(failure).toMatchObject({ code: "ResourceExhausted", reason: "QUOTA_EXCEEDED" });
    const used = Number(failure.metadata.current_bytes);
    expect(used).toBeGreaterThan(500);
    expect(failure.metadata).toMatchObject({
      limit: "bytes",
      max_bytes: "5000",
      available_bytes: String(5000 - used),
      requested_bytes: "4500",
    });
    expect(await snapshot(t.db)).toBe(before);
  });
});

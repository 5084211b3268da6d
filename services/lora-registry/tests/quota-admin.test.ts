import { randomUUID } from "node:crypto";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { sql } from "kysely";
import { rpcFailure } from "@emprops/testkit";
import { type RegistryUnderTest, startRegistryForTest } from "./support/registry.js";
import { seedLoras } from "./support/seed.js";

let t: RegistryUnderTest;
const GiB = 1024 ** 3;

beforeAll(async () => {
  t = await startRegistryForTest("quota-admin", {
    env: { DEFAULT_QUOTA_BYTES: String(4 * GiB), DEFAULT_QUOTA_COUNT: "10", QUOTA_WARNING_PERCENT: "75" },
  });
});

afterAll(async () => {
  await t?.stop();
});

const admin = () => t.as("admin-1", ["admin"]).admin;

describe("quota", () => {
  it("starts from the defaults in the environment, and reading it writes nothing", async () => {
    const user = randomUUID();
    const { quota, loras } = await t.as(user).lora.getQuota({});
    expect(quota).toMatchObject({
      userId: user,
      maxBytes: BigInt(4 * GiB),
      usedBytes: 0n,
      reservedBytes: 0n,
      availableBytes: BigInt(4 * GiB),
      utilizationPercent: 0,
      maxCount: 10,
      usedCount: 0,
      warning: false,
      warningThresholdPercent: 75,
      maxStorageGb: 4,
      currentStorageGb: 0,
      availableGb: 4,
      overridden: false,
    });
    expect(loras).toEqual([]);
    expect(await t.db.selectFrom("lora_quota").selectAll().where("user_id", "=", user).execute()).toEqual([]);
  });

  it("counts LoRAs that existed before the ledger, and warns at the threshold of bytes or of count", async () => {
    const user = randomUUID();
    const [small, big] = (await seedLoras(t.db, [
      { userId: user, sizeBytes: 1 * GiB, name: "small.safetensors" },
      { userId: user, sizeBytes: 2 * GiB, name: "big.safetensors" },
    ])) as [string, string];
    const { quota, loras } = await t.as(user).lora.getQuota({});
    expect(quota).toMatchObject({ usedBytes: BigInt(3 * GiB), usedCount: 2, utilizationPercent: 75, warning: true });
    expect(quota?.currentStorageGb).toBe(3);
    expect(quota?.availableGb).toBe(1);
    expect(loras.map((l) => [l.id, l.name, l.sizeGb, l.pending])).toEqual([
      [big, "big.safetensors", 2, false],
      [small, "small.safetensors", 1, false],
    ]);

    const counted = randomUUID();
    await seedLoras(
      t.db,
      Array.from({ length: 8 }, () => ({ userId: counted, sizeBytes: 10 })),
    );
    expect((await t.as(counted).lora.getQuota({})).quota).toMatchObject({ usedCount: 8, warning: true });
    await admin().setUserQuota({ userId: counted, maxCount: 20 });
    expect((await t.as(counted).lora.getQuota({})).quota).toMatchObject({
      maxCount: 20,
      warning: false,
      overridden: true,
    });
  });

  it("the warning compares exact integers: one byte under the threshold does not warn, the threshold does", async () => {
    // 75% of 9,999 bytes is 7,499.25: 7,499 bytes (74.9975%, shown as 75%) is under it, 7,500 is over.
    // 75% of 10 GiB is exactly 8,053,063,680 bytes.
    const cases: [maxBytes: number, usedBytes: number, warning: boolean][] = [
      [9_999, 7_499, false],
      [9_999, 7_500, true],
      [10 * GiB, 0.75 * 10 * GiB - 1, false],
      [10 * GiB, 0.75 * 10 * GiB, true],
    ];
    for (const [maxBytes, usedBytes, warning] of cases) {
      const user = randomUUID();
      await admin().setUserQuota({ userId: user, maxBytes: BigInt(maxBytes) });
      await seedLoras(t.db, [{ userId: user, sizeBytes: usedBytes }]);
      const { quota } = await t.as(user).lora.getQuota({});
      expect({ maxBytes, usedBytes, warning: quota?.warning }).toEqual({ maxBytes, usedBytes, warning });
    }
  });

  it("admins override bytes and count separately, and reset to the defaults", async () => {
    const user = randomUUID();
    const set = await admin().setUserQuota({ userId: user, maxBytes: BigInt(20 * GiB) });
    expect(set.quota).toMatchObject({ maxBytes: BigInt(20 * GiB), maxCount: 10, overridden: true });
    const both = await admin().setUserQuota({ userId: user, maxCount: 3 });
    expect(both.quota).toMatchObject({ maxBytes: BigInt(20 * GiB), maxCount: 3 });
    expect((await t.as(user).lora.getQuota({})).quota).toMatchObject({ maxBytes: BigInt(20 * GiB), maxCount: 3 });
    const viaAdmin = await admin().getUserQuota({ userId: user });
    expect(viaAdmin.quota).toMatchObject({ maxCount: 3, overridden: true });
    const reset = await admin().setUserQuota({ userId: user, resetToDefaults: true });
    expect(reset.quota).toMatchObject({ maxBytes: BigInt(4 * GiB), maxCount: 10, overridden: false });
    const zero = await admin().setUserQuota({ userId: user, maxBytes: 0n });
    expect(zero.quota).toMatchObject({ maxBytes: 0n, utilizationPercent: 100, warning: true, availableBytes: 0n });

    const audit = await admin().listAuditEvents({ userId: user, action: "quota.set" });
    expect(audit.events).toHaveLength(4);
    expect(audit.events.every((e) => e.actorId === "admin-1" && e.actorRole === "admin")).toBe(true);
    expect(JSON.parse(audit.events[0]!.detailsJson)).toMatchObject({ max_bytes: 0 });
  });

  it("refuses an upload over the count limit with QUOTA_EXCEEDED naming the count", async () => {
    const user = randomUUID();
    await seedLoras(t.db, [{ userId: user, sizeBytes: 10 }]);
    await admin().setUserQuota({ userId: user, maxCount: 1 });
    const failure = await rpcFailure(t.as(user).lora.createLoraUpload({ name: "n.safetensors", sizeBytes: 10n }));
    expect(failure).toMatchObject({ code: "ResourceExhausted", reason: "QUOTA_EXCEEDED" });
    expect(failure.metadata).toMatchObject({ limit: "count", current_count: "1", max_count: "1" });
  });

  it("gives the reservation back when no upload URL can be signed (storage down)", async () => {
    const user = randomUUID();
    await admin().setUserQuota({ userId: user, maxCount: 5 });
    const failure = await rpcFailure(t.as(user).lora.createLoraUpload({ name: "n.safetensors", sizeBytes: 1000n }));
    expect(failure).toMatchObject({ code: "Unavailable", reason: "DEPENDENCY_UNAVAILABLE" });
    const { quota, loras } = await t.as(user).lora.getQuota({});
    expect(quota).toMatchObject({ reservedBytes: 0n, reservedCount: 0, usedCount: 0 });
    expect(loras).toEqual([]);
    const sessions = await t.db
      .selectFrom("lora_upload")
      .select(["state", "failure_reason"])
      .where("user_id", "=", user)
      .execute();
    expect(sessions).toEqual([{ state: "failed", failure_reason: "DEPENDENCY_UNAVAILABLE" }]);
    expect((await t.as(user).lora.listLoras({})).totalSize).toBe(0);
  });
});

describe("ReconcileQuota", () => {
  it("reports ledgers that disagree with the rows and repairs them on request", async () => {
    const user = randomUUID();
    const fine = randomUUID();
    await seedLoras(t.db, [
      { userId: user, sizeBytes: 700 },
      { userId: user, sizeBytes: 300 },
      { userId: fine, sizeBytes: 5 },
    ]);
    await admin().setUserQuota({ userId: user, maxCount: 50 });
    await admin().setUserQuota({ userId: fine, maxCount: 50 });
    // Drift, as a crash between two systems or a manual edit would leave it.
    await sql`UPDATE lora_quota SET used_bytes = 4000, used_count = 1, reserved_bytes = 77, reserved_count = 2
              WHERE user_id = ${user}`.execute(t.db);

    const one = await admin().reconcileQuota({ userId: user });
    expect(one).toMatchObject({ usersChecked: 1, repaired: false });
    expect(one.drifts).toEqual([
      expect.objectContaining({
        userId: user,
        ledgerUsedBytes: 4000n,
        actualUsedBytes: 1000n,
        ledgerUsedCount: 1,
        actualUsedCount: 2,
        ledgerReservedBytes: 77n,
        actualReservedBytes: 0n,
        ledgerReservedCount: 2,
        actualReservedCount: 0,
      }),
    ]);
    const all = await admin().reconcileQuota({});
    expect(all.usersChecked).toBeGreaterThanOrEqual(2);
    expect(all.drifts.map((d) => d.userId)).toContain(user);
    expect(all.drifts.map((d) => d.userId)).not.toContain(fine);

    const repaired = await admin().reconcileQuota({ userId: user, repair: true });
    expect(repaired.repaired).toBe(true);
    expect((await admin().reconcileQuota({ userId: user })).drifts).toEqual([]);
    expect((await t.as(user).lora.getQuota({})).quota).toMatchObject({
      usedBytes: 1000n,
      usedCount: 2,
      reservedCount: 0,
    });
  });
});

describe("ListAuditEvents", () => {
  it("pages newest first and filters by user, action and time", async () => {
    const user = randomUUID();
    for (let i = 1; i <= 7; i++) await admin().setUserQuota({ userId: user, maxCount: i });
    const seen: string[] = [];
    const counts: number[] = [];
    let pageToken = "";
    do {
      const page = await admin().listAuditEvents({ userId: user, pageSize: 3, pageToken });
      seen.push(...page.events.map((e) => e.id));
      counts.push(...page.events.map((e) => JSON.parse(e.detailsJson).max_count as number));
      pageToken = page.nextPageToken;
    } while (pageToken);
    expect(new Set(seen).size).toBe(7);
    expect(counts).toEqual([7, 6, 5, 4, 3, 2, 1]);

    const all = await admin().listAuditEvents({ userId: user });
    const times = all.events.map((e) => e.eventTime!);
    const middle = times[3]!;
    const after = await admin().listAuditEvents({ userId: user, startTime: middle });
    expect(after.events.length).toBeGreaterThanOrEqual(4);
    const before = await admin().listAuditEvents({ userId: user, endTime: middle });
    expect(before.events.length + after.events.length).toBe(7);
    const future = await admin().listAuditEvents({
      userId: user,
      startTime: timestampFromDate(new Date(Date.now() + 86_400_000)),
    });
    expect(future.events).toEqual([]);
    expect((await admin().listAuditEvents({ userId: user, action: "lora.delete" })).events).toEqual([]);
  });
});

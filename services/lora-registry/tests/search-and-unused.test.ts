import { randomUUID } from "node:crypto";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type Lora, LoraSortField, SortOrder } from "@emprops/contracts";
import { rpcFailure } from "@emprops/testkit";
import { type RegistryUnderTest, startRegistryForTest } from "./support/registry.js";
import { seedLoras } from "./support/seed.js";

let t: RegistryUnderTest;
const MiB = 1024 * 1024;

beforeAll(async () => {
  t = await startRegistryForTest("search-unused", {
    env: { DEFAULT_QUOTA_BYTES: String(100 * MiB), DEFAULT_QUOTA_COUNT: "10", QUOTA_WARNING_PERCENT: "80" },
  });
});

afterAll(async () => {
  await t?.stop();
});

const ids = (loras: Lora[]) => loras.map((l) => l.id);
const day = (d: number) => new Date(Date.UTC(2026, 10, d));

describe("search across name, tags, trigger words and description", () => {
  const user = randomUUID();
  let named = "";
  let tagged = "";
  let triggered = "";
  let described = "";
  let other = "";

  beforeAll(async () => {
    [named, tagged, triggered, described, other] = (await seedLoras(t.db, [
      { userId: user, name: "Watercolor_Dreams.safetensors", createdAt: day(1) },
      { userId: user, name: "style-a.safetensors", tags: ["WaterColor", "soft"], createdAt: day(2) },
      { userId: user, name: "style-b.pt", triggerWords: ["in watercolor style", "wc"], createdAt: day(3) },
      { userId: user, name: "style-c.safetensors", description: "Loose WATERCOLOUR washes", createdAt: day(4) },
      { userId: user, name: "pixel.safetensors", tags: ["pixel"], triggerWords: ["8bit"], createdAt: day(5) },
    ])) as [string, string, string, string, string];
    // Another user's LoRA that would match is never seen.
    await seedLoras(t.db, [{ userId: randomUUID(), name: "watercolor-theirs.safetensors" }]);
  });

  const search = async (s: string, extra: object = {}) =>
    ids((await t.as(user).lora.listLoras({ search: s, ...extra })).loras);

  it("finds a substring in any of the four fields, case-insensitively, newest first", async () => {
    expect(await search("watercolor")).toEqual([triggered, tagged, named]);
    expect(await search("WATERCOL")).toEqual([described, triggered, tagged, named]);
    expect(await search("washes")).toEqual([described]);
    expect(await search("8BIT")).toEqual([other]);
    expect(await search("wc")).toEqual([triggered]);
    expect(await search("soft")).toEqual([tagged]);
  });

  it("matches within one field only: no match spans two of them", async () => {
    // The name ends ".safetensors" and the next field (tags) starts "watercolor": never one string.
    expect(await search("safetensorswatercolor")).toEqual([]);
    expect(await search("safetensors watercolor")).toEqual([]);
  });

  it("does not match the implicit 'lora' tag", async () => {
    expect(await search("lora")).toEqual([]);
  });

  it("stays keyset-paginated, in every order, with the total of all matches", async () => {
    const first = await t.as(user).lora.listLoras({ search: "watercolor", pageSize: 2 });
    expect(first.totalSize).toBe(3);
    expect(ids(first.loras)).toEqual([triggered, tagged]);
    const second = await t.as(user).lora.listLoras({
      search: "watercolor",
      pageSize: 2,
      pageToken: first.nextPageToken,
    });
    expect(ids(second.loras)).toEqual([named]);
    expect(second.nextPageToken).toBe("");
    expect(await search("watercolor", { sort: LoraSortField.NAME, order: SortOrder.ASC })).toEqual([
      tagged,
      triggered,
      named,
    ]);
  });

  it("filters by base model, case-insensitively, with search and tags", async () => {
    const carl = randomUUID();
    const [sdxl, flux] = await seedLoras(t.db, [
      { userId: carl, name: "a.safetensors", baseModel: "SDXL", tags: ["style"] },
      { userId: carl, name: "b.safetensors", baseModel: "FLUX.1", tags: ["style"] },
      { userId: carl, name: "c.safetensors", baseModel: "SD1.5" },
    ]);
    const list = async (req: object) => ids((await t.as(carl).lora.listLoras(req)).loras);
    expect(await list({ baseModel: "flux.1" })).toEqual([flux]);
    expect(await list({ baseModel: "SDXL", tags: ["style"], search: "a." })).toEqual([sdxl]);
    expect(await list({ baseModel: "SD2" })).toEqual([]);
    const page = await t.as(carl).lora.listLoras({ baseModel: "SDXL", pageSize: 1 });
    const failure = await rpcFailure(
      t.as(carl).lora.listLoras({ baseModel: "FLUX.1", pageSize: 1, pageToken: page.nextPageToken || "x" }),
    );
    expect(failure).toMatchObject({ code: "InvalidArgument", reason: "INVALID_PAGE_TOKEN" });
  });
});

describe("unused LoRAs", () => {
  const user = randomUUID();
  let never = "";
  let old = "";
  let recent = "";
  let neverNewer = "";

  beforeAll(async () => {
    [never, old, recent, neverNewer] = (await seedLoras(t.db, [
      { userId: user, name: "never.safetensors", sizeBytes: 30 * MiB, createdAt: day(1) },
      { userId: user, name: "old.safetensors", sizeBytes: 20 * MiB, createdAt: day(2), lastUsedAt: day(10) },
      { userId: user, name: "recent.safetensors", sizeBytes: 25 * MiB, createdAt: day(3), lastUsedAt: day(20) },
      { userId: user, name: "never-newer.safetensors", sizeBytes: 10 * MiB, createdAt: day(4) },
    ])) as [string, string, string, string];
  });

  it("sorts by last use, never-used first, across pages both ways", async () => {
    const walk = async (order: SortOrder) => {
      const seen: string[] = [];
      let pageToken = "";
      do {
        const page = await t.as(user).lora.listLoras({ sort: LoraSortField.LAST_USED, order, pageSize: 1, pageToken });
        seen.push(...ids(page.loras));
        pageToken = page.nextPageToken;
      } while (pageToken);
      return seen;
    };
    expect(await walk(SortOrder.ASC)).toEqual([never, neverNewer, old, recent]);
    expect(await walk(SortOrder.DESC)).toEqual([recent, old, neverNewer, never]);
  });

  it("filters LoRAs not used since a time, the never-used included", async () => {
    const unused = async (since: Date) =>
      ids(
        (
          await t.as(user).lora.listLoras({
            unusedSince: timestampFromDate(since),
            sort: LoraSortField.LAST_USED,
            order: SortOrder.ASC,
          })
        ).loras,
      );
    expect(await unused(day(15))).toEqual([never, neverNewer, old]);
    expect(await unused(day(10))).toEqual([never, neverNewer]);
    expect(await unused(day(25))).toEqual([never, neverNewer, old, recent]);
    const counted = await t.as(user).lora.listLoras({ unusedSince: timestampFromDate(day(15)) });
    expect(counted.totalSize).toBe(3);
  });

  it("GetQuota names the LoRAs unused longest, just enough to get back under the threshold", async () => {
    // 85 MiB of 100 MiB used (warning at 80 %): freeing 30 MiB (the never-used oldest) brings it to 55 %.
    const report = await t.as(user).lora.getQuota({});
    expect(report.quota?.warning).toBe(true);
    expect(report.deletionSuggestions.map((s) => [s.id, s.name, Number(s.sizeBytes)])).toEqual([
      [never, "never.safetensors", 30 * MiB],
    ]);
    expect(report.suggestedFreeBytes).toBe(BigInt(30 * MiB));
    expect(report.warningMessage).toBe(
      "You have used 85% of your LoRA quota (warning at 80%). Deleting the LoRA unused longest frees 30.0 MiB " +
        "and brings you back under it: never.safetensors (30.0 MiB, never used).",
    );
  });

  it("takes as many as it needs, in order of last use, and none without the warning", async () => {
    const dora = randomUUID();
    const [a, b, c] = await seedLoras(t.db, [
      { userId: dora, name: "a.safetensors", sizeBytes: 5 * MiB, createdAt: day(1), lastUsedAt: day(5) },
      { userId: dora, name: "b.safetensors", sizeBytes: 40 * MiB, createdAt: day(1), lastUsedAt: day(6) },
      { userId: dora, name: "c.safetensors", sizeBytes: 50 * MiB, createdAt: day(1), lastUsedAt: day(7) },
    ]);
    const report = await t.as(dora).lora.getQuota({});
    // 95 % used: a (5 MiB) leaves 90 %, b (40 MiB) then leaves 50 %.
    expect(report.deletionSuggestions.map((s) => s.id)).toEqual([a, b]);
    expect(report.warningMessage).toContain(
      "Deleting the 2 LoRAs unused longest frees 45.0 MiB and brings you back under it: " +
        "a.safetensors (5.0 MiB, last used 2026-11-05), b.safetensors (40.0 MiB, last used 2026-11-06).",
    );
    expect(report.deletionSuggestions[0]?.lastUsedAt).toEqual(timestampFromDate(day(5)));
    expect(ids((await t.as(dora).lora.listLoras({})).loras)).toContain(c);

    const calm = randomUUID();
    await seedLoras(t.db, [{ userId: calm, sizeBytes: MiB }]);
    const quiet = await t.as(calm).lora.getQuota({});
    expect(quiet.quota?.warning).toBe(false);
    expect(quiet.deletionSuggestions).toEqual([]);
    expect(quiet.warningMessage).toBe("");
  });

  it("counts the count threshold too", async () => {
    const many = randomUUID();
    // 8 of 10 LoRAs is the 80 % warning by count, with almost no bytes: one deletion ends it.
    const seeded = await seedLoras(
      t.db,
      Array.from({ length: 8 }, (_, i) => ({ userId: many, sizeBytes: 1000, createdAt: day(1 + i) })),
    );
    const report = await t.as(many).lora.getQuota({});
    expect(report.quota?.warning).toBe(true);
    expect(report.deletionSuggestions.map((s) => s.id)).toEqual([seeded[0]]);
  });
});

import { randomUUID } from "node:crypto";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { type Lora, LoraSortField, SortOrder } from "@emprops/contracts";
import { rpcFailure } from "@emprops/testkit";
import { type RegistryUnderTest, startRegistryForTest } from "./support/registry.js";
import { seedLoras } from "./support/seed.js";

let t: RegistryUnderTest;
const alice = randomUUID();
const bob = randomUUID();
const carol = randomUUID();
let aliceIds: string[] = [];
let hiddenIds: string[] = [];
let bobIds: string[] = [];
let aliceImageIds: string[] = [];

beforeAll(async () => {
  t = await startRegistryForTest("listing");
  // 60 LoRAs of alice's with distinct sizes and times; hidden ones, an image, and other users' LoRAs around them.
  aliceIds = await seedLoras(
    t.db,
    Array.from({ length: 60 }, (_, i) => ({
      userId: alice,
      name: `lora${String((i * 37) % 60).padStart(2, "0")}.safetensors`,
      sizeBytes: 10_000 + ((i * 53) % 60) * 100,
      createdAt: new Date(Date.UTC(2026, 0, 1, 0, 0, i)),
      tags: i % 3 === 0 ? ["style"] : i % 3 === 1 ? ["style", "anime"] : [],
    })),
  );
  hiddenIds = await seedLoras(t.db, [
    { userId: alice, name: "hidden-one.safetensors", hidden: true },
    { userId: alice, name: "hidden-two.safetensors", hidden: true },
  ]);
  aliceImageIds = await seedLoras(t.db, [{ userId: alice, name: "portrait.png", notLora: true }]);
  bobIds = await seedLoras(
    t.db,
    Array.from({ length: 210 }, (_, i) => ({ userId: bob, name: `bob-${i}.safetensors` })),
  );
});

afterAll(async () => {
  await t?.stop();
});

const ids = (loras: Lora[]) => loras.map((l) => l.id);

describe("ListLoras", () => {
  it("shows only the caller's visible LoRAs, newest first, 50 per page by default, with the total", async () => {
    const page = await t.as(alice).lora.listLoras({});
    expect(page.totalSize).toBe(60);
    expect(page.loras).toHaveLength(50);
    expect(page.nextPageToken).not.toBe("");
    expect(ids(page.loras)).toEqual([...aliceIds].reverse().slice(0, 50));
    for (const l of page.loras) {
      expect(l.userId).toBe(alice);
      expect(l.tags[0]).toBe("lora");
      expect(l.sha256).toMatch(/^[0-9a-f]{64}$/);
      expect(l.metadata?.baseModel).toBe("SDXL");
      // The raw header map is left out of lists.
      expect(l.metadata?.raw).toEqual({});
    }
    const rest = await t.as(alice).lora.listLoras({ pageToken: page.nextPageToken });
    expect(rest.loras).toHaveLength(10);
    expect(rest.nextPageToken).toBe("");
    const all = new Set([...ids(page.loras), ...ids(rest.loras)]);
    expect([...all].sort()).toEqual([...aliceIds].sort());
    for (const hidden of [...hiddenIds, ...aliceImageIds, ...bobIds]) expect(all.has(hidden)).toBe(false);
  });

  it("never shows a user without LoRAs anything", async () => {
    const page = await t.as(carol).lora.listLoras({});
    expect(page.loras).toEqual([]);
    expect(page.totalSize).toBe(0);
    expect(page.nextPageToken).toBe("");
  });

  it("clamps a page size above 200 to 200", async () => {
    const page = await t.as(bob).lora.listLoras({ pageSize: 1000 });
    expect(page.loras).toHaveLength(200);
    expect(page.totalSize).toBe(210);
  });

  it.each([
    [LoraSortField.CREATED_AT, SortOrder.ASC, (l: Lora) => timestampDate(l.createdAt!).getTime()],
    [LoraSortField.CREATED_AT, SortOrder.DESC, (l: Lora) => timestampDate(l.createdAt!).getTime()],
    [LoraSortField.SIZE, SortOrder.ASC, (l: Lora) => Number(l.sizeBytes)],
    [LoraSortField.SIZE, SortOrder.DESC, (l: Lora) => Number(l.sizeBytes)],
    [LoraSortField.NAME, SortOrder.ASC, (l: Lora) => l.name],
    [LoraSortField.NAME, SortOrder.DESC, (l: Lora) => l.name],
  ])("sorts by %s in order %s across pages", async (sort, order, key) => {
    const seen: Lora[] = [];
    let pageToken = "";
    do {
      const page = await t.as(alice).lora.listLoras({ sort, order, pageSize: 13, pageToken });
      seen.push(...page.loras);
      pageToken = page.nextPageToken;
    } while (pageToken);
    expect(seen).toHaveLength(60);
    const keys: (number | string)[] = seen.map((l) => key(l));
    const sorted = [...keys].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    expect(keys).toEqual(order === SortOrder.ASC ? sorted : sorted.reverse());
  });

  it("searches names case-insensitively by substring, taking % and _ literally", async () => {
    const dave = randomUUID();
    const [anime1, anime2, percent, plain, underscore] = await seedLoras(t.db, [
      { userId: dave, name: "Anime_Style.safetensors" },
      { userId: dave, name: "my-ANIME-portrait.pt" },
      { userId: dave, name: "50%off.safetensors" },
      { userId: dave, name: "5000.safetensors" },
      { userId: dave, name: "x_y.pt" },
    ]);
    const search = async (s: string) => ids((await t.as(dave).lora.listLoras({ search: s })).loras).sort();
    expect(await search("anime")).toEqual([anime1, anime2].sort());
    expect(await search("AnImE")).toEqual([anime1, anime2].sort());
    expect(await search("50%")).toEqual([percent]);
    expect(await search("_")).toEqual([anime1, underscore].sort());
    expect(await search("5000")).toEqual([plain]);
    expect(await search("nothing-like-this")).toEqual([]);
    const page = await t.as(dave).lora.listLoras({ search: "anime", pageSize: 1 });
    expect(page.totalSize).toBe(2);
    expect(page.loras).toHaveLength(1);
  });

  it("filters by tags: every tag given must be present", async () => {
    const style = await t.as(alice).lora.listLoras({ tags: ["style"], pageSize: 200 });
    expect(style.totalSize).toBe(40);
    expect(style.loras.every((l) => l.tags.includes("style"))).toBe(true);
    const both = await t.as(alice).lora.listLoras({ tags: ["style", "anime"], pageSize: 200 });
    expect(both.totalSize).toBe(20);
    expect(both.loras.every((l) => l.tags.includes("anime") && l.tags.includes("style"))).toBe(true);
    const lora = await t.as(alice).lora.listLoras({ tags: ["lora"] });
    expect(lora.totalSize).toBe(60);
  });

  it("skips rows after the cursor (the specification's offset)", async () => {
    const all = ids((await t.as(alice).lora.listLoras({ pageSize: 60 })).loras);
    const skipped = await t.as(alice).lora.listLoras({ pageSize: 10, skip: 5 });
    expect(ids(skipped.loras)).toEqual(all.slice(5, 15));
    const next = await t.as(alice).lora.listLoras({ pageSize: 10, skip: 5, pageToken: skipped.nextPageToken });
    expect(ids(next.loras)).toEqual(all.slice(20, 30));
  });

  it("refuses a token issued for another query or another user", async () => {
    const first = await t.as(alice).lora.listLoras({ pageSize: 5 });
    for (const req of [
      { pageToken: first.nextPageToken, search: "lora" },
      { pageToken: first.nextPageToken, sort: LoraSortField.NAME },
      { pageToken: first.nextPageToken, order: SortOrder.ASC },
      { pageToken: first.nextPageToken, tags: ["style"] },
    ]) {
      const failure = await rpcFailure(t.as(alice).lora.listLoras(req));
      expect(failure).toMatchObject({ code: "InvalidArgument", reason: "INVALID_PAGE_TOKEN" });
    }
    const other = await rpcFailure(t.as(bob).lora.listLoras({ pageToken: first.nextPageToken }));
    expect(other).toMatchObject({ code: "InvalidArgument", reason: "INVALID_PAGE_TOKEN" });
  });
});

describe("pagination while rows are inserted", () => {
  it.each([
    [LoraSortField.CREATED_AT, SortOrder.DESC],
    [LoraSortField.CREATED_AT, SortOrder.ASC],
    [LoraSortField.NAME, SortOrder.ASC],
    [LoraSortField.SIZE, SortOrder.DESC],
  ])("returns each pre-existing row exactly once (sort %s, order %s)", async (sort, order) => {
    const erin = randomUUID();
    const before = await seedLoras(
      t.db,
      Array.from({ length: 40 }, (_, i) => ({
        userId: erin,
        name: `e${String((i * 7) % 40).padStart(2, "0")}.safetensors`,
        sizeBytes: 5000 + ((i * 11) % 40) * 10,
        // Equal times and sizes in pairs: the id breaks the ties.
        createdAt: new Date(Date.UTC(2026, 1, 1, 0, 0, Math.floor(i / 2))),
      })),
    );
    const seen: string[] = [];
    let pageToken = "";
    let round = 0;
    do {
      const page = await t.as(erin).lora.listLoras({ sort, order, pageSize: 6, pageToken });
      seen.push(...ids(page.loras));
      pageToken = page.nextPageToken;
      // New LoRAs land everywhere in the order: before, inside and after the part already read.
      round++;
      await seedLoras(t.db, [
        {
          userId: erin,
          name: `a-new-${round}.safetensors`,
          sizeBytes: 1,
          createdAt: new Date(Date.UTC(2025, 0, round)),
        },
        {
          userId: erin,
          name: `e20-new-${round}.safetensors`,
          sizeBytes: 5200,
          createdAt: new Date(Date.UTC(2026, 1, 1, 0, 0, 10)),
        },
        {
          userId: erin,
          name: `z-new-${round}.safetensors`,
          sizeBytes: 99_999,
          createdAt: new Date(Date.UTC(2027, 0, round)),
        },
      ]);
    } while (pageToken);
    for (const id of before) expect(seen.filter((s) => s === id)).toHaveLength(1);
    expect(new Set(seen).size).toBe(seen.length);
  });
});

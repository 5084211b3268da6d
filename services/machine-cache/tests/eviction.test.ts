import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import pLimit from "p-limit";
import { createLogger, errorReason, ManualClock } from "@emprops/platform";
import { Evictor } from "../src/cache/evictor.js";
import { GDSF_FIXED_COST_BYTES, pickAged, pickGdsf, pickLru } from "../src/cache/eviction-policies.js";
import { Pins } from "../src/cache/pins.js";
import { SpaceManager } from "../src/cache/space-manager.js";
import { contentIdOf, setContentId } from "../src/db/lora-files.js";
import { getModel, userLoraBytes } from "../src/db/models.js";
import { type Db, openDatabase } from "../src/db/open-database.js";
import { GIB, seedSettings } from "../src/db/settings.js";
import { createMetrics } from "../src/telemetry.js";
import { exists, type SeededLora, seedLora } from "./support/seed.js";

const DAY = 24 * 3600 * 1000;
const U = "7d3c8a52-5f0e-4c3e-9f51-3b8f0f7d1c11";
const logger = createLogger("eviction-test", "silent");

let root: string;
beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), "mc-evict-"));
});
afterAll(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

interface World {
  db: Db;
  loraDir: string;
  clock: ManualClock;
  pins: Pins;
  downloading: Set<string>;
  space: SpaceManager;
}

let worlds = 0;
async function world(settings: {
  maxBytes: number;
  maxAgeDays?: number;
  enabled?: boolean;
  policy?: "lru" | "gdsf";
}): Promise<World> {
  const base = path.join(root, `w${++worlds}`);
  const loraDir = path.join(base, "models", "loras");
  await fs.mkdir(loraDir, { recursive: true });
  const db = openDatabase(path.join(base, "model_cache.db"));
  await seedSettings(db, {
    loraCacheMaxGb: settings.maxBytes / GIB,
    loraMaxAgeDays: settings.maxAgeDays ?? 7,
    loraEvictionEnabled: settings.enabled ?? true,
    minFreeSpaceGb: 0,
    loraEvictionPolicy: settings.policy ?? "lru",
  });
  const clock = new ManualClock(new Date("2030-06-01T12:00:00Z"));
  const pins = new Pins();
  const downloading = new Set<string>();
  const evictor = new Evictor({ db, loraDir, clock, logger, metrics: createMetrics() });
  const space = new SpaceManager({
    db,
    loraDir,
    evictor,
    clock,
    logger,
    busy: (p) => pins.has(p) || downloading.has(p),
    warmMaxEvictPercent: 20,
  });
  return { db, loraDir, clock, pins, downloading, space };
}

/** user LoRAs a..c (a least recently used), a protected and an ignored one, a shared one: all older than a..c. */
async function standardCache(w: World) {
  const at = (daysAgo: number) => new Date(w.clock.now().getTime() - daysAgo * DAY);
  const lora = (rel: string, daysAgo: number, extra = {}) =>
    seedLora(w.db, w.loraDir, { relativePath: rel, sizeBytes: 200, lastUsed: at(daysAgo), ...extra });
  return {
    a: await lora(`users/${U}/1-a.safetensors`, 3),
    b: await lora(`users/${U}/2-b.safetensors`, 2),
    c: await lora(`users/${U}/3-c.safetensors`, 1),
    protectedOne: await lora(`users/${U}/4-p.safetensors`, 30, { protected: true }),
    ignored: await lora(`users/${U}/5-i.safetensors`, 30, { ignore: true }),
    shared: await lora("shared/style.safetensors", 30),
  };
}

const present = async (l: SeededLora, w: World) => (await exists(l.path)) && !!getModel(w.db, l.path);

test("LRU evicts the least recently used evictable user LoRAs, only as many as needed", async () => {
  const w = await world({ maxBytes: 1024 });
  const c = await standardCache(w);
  // 1000 user bytes cached; 300 more need 276 freed: a alone (200) is not enough, a and b are.
  const reservation = await w.space.reserve({
    path: path.join(w.loraDir, "users/x/9-new.safetensors"),
    sizeBytes: 300,
    userLora: true,
  });
  expect(await present(c.a, w)).toBe(false);
  expect(await present(c.b, w)).toBe(false);
  for (const kept of [c.c, c.protectedOne, c.ignored, c.shared]) expect(await present(kept, w)).toBe(true);
  expect(userLoraBytes(w.db) + 300).toBeLessThanOrEqual(1024);
  reservation.release();
});

test("files pinned by a batch or being downloaded are never evicted; when the rest is not enough nothing is", async () => {
  const w = await world({ maxBytes: 1024 });
  const c = await standardCache(w);
  const unpin = w.pins.pin([c.a.path]);
  w.downloading.add(c.b.path);
  // 500 more need 476 freed; only c (200) may go: refuse and evict nothing.
  const err = await w.space
    .reserve({ path: path.join(w.loraDir, "users/x/9-new.safetensors"), sizeBytes: 500, userLora: true })
    .catch((e: unknown) => e);
  expect(errorReason(err)).toBe("NO_SPACE");
  for (const kept of Object.values(c)) expect(await present(kept, w)).toBe(true);
  unpin();
  w.downloading.clear();
});

test("with eviction disabled a full cache refuses instead of evicting", async () => {
  const w = await world({ maxBytes: 1024, enabled: false });
  const c = await standardCache(w);
  const err = await w.space
    .reserve({ path: path.join(w.loraDir, "users/x/9-new.safetensors"), sizeBytes: 100, userLora: true })
    .catch((e: unknown) => e);
  expect(errorReason(err)).toBe("NO_SPACE");
  for (const kept of Object.values(c)) expect(await present(kept, w)).toBe(true);
  expect(await w.space.runAgePolicy()).toEqual([]);
});

test("a LoRA larger than the whole cache is refused without evicting", async () => {
  const w = await world({ maxBytes: 1024 });
  const c = await standardCache(w);
  const err = await w.space
    .reserve({ path: path.join(w.loraDir, "users/x/9-new.safetensors"), sizeBytes: 2048, userLora: true })
    .catch((e: unknown) => e);
  expect(errorReason(err)).toBe("NO_SPACE");
  expect(await present(c.a, w)).toBe(true);
});

test("concurrent downloads together never take the cache over its limit", async () => {
  const w = await world({ maxBytes: 1000 });
  let outstanding = 0;
  let peak = 0;
  const one = async (i: number) => {
    const rel = `users/${U}/${100 + i}-n.safetensors`;
    const r = await w.space.reserve({ path: path.join(w.loraDir, rel), sizeBytes: 150, userLora: true });
    outstanding += 150;
    peak = Math.max(peak, userLoraBytes(w.db) + outstanding);
    await new Promise((done) => setTimeout(done, 5 * (i % 3)));
    await seedLora(w.db, w.loraDir, { relativePath: rel, sizeBytes: 150, lastUsed: w.clock.now() });
    w.clock.advance(1000);
    outstanding -= 150;
    r.release();
  };
  // Four downloads at a time, as the configured concurrency allows; twenty in all.
  const limit = pLimit(4);
  await Promise.all(Array.from({ length: 20 }, (_, i) => limit(() => one(i))));
  expect(peak).toBeLessThanOrEqual(1000);
  expect(userLoraBytes(w.db)).toBeLessThanOrEqual(1000);
  expect(userLoraBytes(w.db)).toBeGreaterThanOrEqual(1000 - 150);
});

test("age eviction removes exactly the user LoRAs unused for more than lora_max_age_days", async () => {
  const w = await world({ maxBytes: 1 << 20, maxAgeDays: 7 });
  const at = (ms: number) => new Date(w.clock.now().getTime() - ms);
  const lora = (rel: string, ago: number, extra = {}) =>
    seedLora(w.db, w.loraDir, { relativePath: rel, sizeBytes: 10, lastUsed: at(ago), ...extra });
  const old = await lora(`users/${U}/1-old.safetensors`, 30 * DAY);
  const justOver = await lora(`users/${U}/2-over.safetensors`, 7 * DAY + 1000);
  const justUnder = await lora(`users/${U}/3-under.safetensors`, 7 * DAY - 1000);
  const fresh = await lora(`users/${U}/4-fresh.safetensors`, 0);
  const oldProtected = await lora(`users/${U}/5-p.safetensors`, 30 * DAY, { protected: true });
  const oldIgnored = await lora(`users/${U}/6-i.safetensors`, 30 * DAY, { ignore: true });
  const oldShared = await lora("shared/old.safetensors", 30 * DAY);
  const oldPinned = await lora(`users/${U}/7-pinned.safetensors`, 30 * DAY);
  const unpin = w.pins.pin([oldPinned.path]);

  const evicted = await w.space.runAgePolicy();
  expect(evicted.map((e) => e.path).sort()).toEqual([old.path, justOver.path].sort());
  expect(evicted.every((e) => e.reason === "age")).toBe(true);
  for (const kept of [justUnder, fresh, oldProtected, oldIgnored, oldShared, oldPinned]) {
    expect(await present(kept, w)).toBe(true);
  }
  // Two days later, justUnder has aged out too.
  unpin();
  w.clock.advance(2 * DAY);
  const later = await w.space.runAgePolicy();
  expect(later.map((e) => e.path).sort()).toEqual([justUnder.path, oldPinned.path].sort());
});

test("admin free_bytes evicts LRU until the bytes are freed", async () => {
  const w = await world({ maxBytes: 1 << 20 });
  const c = await standardCache(w);
  const evicted = await w.space.freeBytes(250, "admin");
  expect(evicted.map((e) => e.path)).toEqual([c.a.path, c.b.path]);
  expect(await present(c.c, w)).toBe(true);
});

test("pure policies: LRU picks the fewest oldest rows, age picks rows past the cut-off", () => {
  const row = (id: number, last: string, size: number) => ({
    id,
    path: `/p/${id}`,
    model_type: "user_lora",
    filename: `${id}`,
    size_bytes: size,
    last_used: last,
    use_count: 1,
    download_date: last,
    protected: 0,
    is_ignore: 0,
  });
  const rows = [
    row(1, "2030-01-03T00:00:00", 10),
    row(2, "2030-01-01T00:00:00.5", 10),
    row(3, "2030-01-02T00:00:00", 10),
  ];
  expect(pickLru(rows, 15)?.map((r) => r.id)).toEqual([2, 3]);
  expect(pickLru(rows, 31)).toBeUndefined();
  expect(pickLru(rows, 0)).toEqual([]);
  expect(pickAged(rows, new Date(2030, 0, 9, 0, 0, 0), 7).map((r) => r.id)).toEqual([2]);
});

test("GDSF keeps a frequently used LoRA that LRU would evict, and its inflation ages the rest", async () => {
  const w = await world({ maxBytes: 1000, policy: "gdsf" });
  const at = (daysAgo: number) => new Date(w.clock.now().getTime() - daysAgo * DAY);
  const lora = (rel: string, daysAgo: number) =>
    seedLora(w.db, w.loraDir, { relativePath: rel, sizeBytes: 300, lastUsed: at(daysAgo) });
  const popular = await lora(`users/${U}/1-popular.safetensors`, 3);
  const once = await lora(`users/${U}/2-once.safetensors`, 2);
  const recent = await lora(`users/${U}/3-recent.safetensors`, 1);
  w.db.prepare("UPDATE models SET use_count = 20 WHERE path = ?").run(popular.path);
  const newPath = (n: number) => path.join(w.loraDir, `users/${U}/${10 + n}-new.safetensors`);

  // 900 cached, 300 more: LRU would take the popular one; GDSF takes the least used, oldest first.
  (await w.space.reserve({ path: newPath(0), sizeBytes: 300, userLora: true })).release();
  expect(await present(popular, w)).toBe(true);
  expect(await present(once, w)).toBe(false);
  expect(await present(recent, w)).toBe(true);

  // The inflation value rose to the victim's priority: a LoRA used once from now on outranks one used once before.
  const fresh = await seedLora(w.db, w.loraDir, {
    relativePath: `users/${U}/4-fresh.safetensors`,
    sizeBytes: 300,
    lastUsed: w.clock.now(),
  });
  w.clock.advance(1000);
  (await w.space.reserve({ path: newPath(1), sizeBytes: 300, userLora: true })).release();
  expect(await present(recent, w)).toBe(false);
  expect(await present(fresh, w)).toBe(true);
  expect(await present(popular, w)).toBe(true);
});

test("lora_eviction_policy is read at each decision: switching it back to lru takes effect at once", async () => {
  const w = await world({ maxBytes: 1000, policy: "gdsf" });
  const at = (daysAgo: number) => new Date(w.clock.now().getTime() - daysAgo * DAY);
  const popular = await seedLora(w.db, w.loraDir, {
    relativePath: `users/${U}/1-popular.safetensors`,
    sizeBytes: 500,
    lastUsed: at(2),
  });
  const other = await seedLora(w.db, w.loraDir, {
    relativePath: `users/${U}/2-other.safetensors`,
    sizeBytes: 500,
    lastUsed: at(1),
  });
  w.db.prepare("UPDATE models SET use_count = 20 WHERE path = ?").run(popular.path);
  w.db.prepare("UPDATE settings SET value = 'lru' WHERE key = 'lora_eviction_policy'").run();
  (
    await w.space.reserve({ path: path.join(w.loraDir, "users/x/9-new.safetensors"), sizeBytes: 400, userLora: true })
  ).release();
  expect(await present(popular, w)).toBe(false);
  expect(await present(other, w)).toBe(true);
});

test("room made for a download is recorded under the policy that chose it; warming's budget counts either", async () => {
  const w = await world({ maxBytes: 1000, policy: "gdsf" });
  for (const n of [1, 2, 3, 4, 5, 6]) {
    await seedLora(w.db, w.loraDir, {
      relativePath: `users/${U}/${n}-old.safetensors`,
      sizeBytes: 150,
      lastUsed: new Date(w.clock.now().getTime() - (10 - n) * DAY),
    });
  }
  const target = (n: number) => path.join(w.loraDir, `users/${U}/${10 + n}-new.safetensors`);
  const evictions = () =>
    w.db.prepare("SELECT reason, bytes FROM lora_cache_events WHERE kind = 'eviction' ORDER BY rowid").all();
  // Warming may evict 20 % of the cache a day.
  expect(w.space.warmEvictBudget()).toBe(200);

  // 900 cached and 200 more: one of 150 goes, for warming, chosen by GDSF.
  const warm = { path: target(0), sizeBytes: 200, userLora: true, maxEvictBytes: w.space.warmEvictBudget() };
  (await w.space.reserve(warm)).release();
  expect(evictions()).toEqual([{ reason: "gdsf-warm", bytes: 150 }]);
  expect(w.space.warmEvictBudget()).toBe(50);

  // 750 cached and 300 more, for a job, chosen by LRU: warming's budget stays as it was.
  w.db.prepare("UPDATE settings SET value = 'lru' WHERE key = 'lora_eviction_policy'").run();
  (await w.space.reserve({ path: target(1), sizeBytes: 300, userLora: true })).release();
  expect(evictions()).toEqual([
    { reason: "gdsf-warm", bytes: 150 },
    { reason: "lru", bytes: 150 },
  ]);
  expect(w.space.warmEvictBudget()).toBe(50);
});

test("pure GDSF: fewest lowest-priority rows; among equal use counts the larger file goes first", () => {
  const MIB = 1024 * 1024;
  const row = (id: number, useCount: number, size: number, last = "2030-01-01T00:00:00") => ({
    id,
    path: `/p/${id}`,
    model_type: "user_lora",
    filename: `${id}`,
    size_bytes: size,
    last_used: last,
    use_count: useCount,
    download_date: last,
    protected: 0,
    is_ignore: 0,
  });
  const rows = [row(1, 3, 100 * MIB), row(2, 1, 100 * MIB), row(3, 1, 800 * MIB), row(4, 2, 50 * MIB)];
  const none = () => 0;
  const picked = pickGdsf(rows, 850 * MIB, none);
  expect(picked?.victims.map((r) => r.id)).toEqual([3, 2]);
  expect(picked?.inflation).toBeCloseTo((100 * MIB + GDSF_FIXED_COST_BYTES) / (100 * MIB));
  expect(pickGdsf(rows, 2000 * MIB, none)).toBeUndefined();
  expect(pickGdsf(rows, 0, none)?.victims).toEqual([]);
  // A use after the inflation rose counts for more than the same use before it.
  const inflationAt = (ms: number) => (ms >= new Date(2030, 0, 2).getTime() ? 10 : 0);
  const later = [row(1, 3, 100 * MIB), row(2, 1, 100 * MIB, "2030-01-02T00:00:00")];
  expect(pickGdsf(later, 1, inflationAt)?.victims.map((r) => r.id)).toEqual([1]);
});

describe("paths linked to one file (identical LoRAs of several users)", () => {
  const V = "2f1e0d9c-8b7a-4695-a4b3-c2d1e0f9a8b7";
  /** A second path for `of`'s file, as a linked reference is made; both rows get the file's identity. */
  async function linkOf(w: World, of: SeededLora, rel: string, daysAgo: number, extra = {}) {
    const twin = await seedLora(w.db, w.loraDir, {
      relativePath: rel,
      sizeBytes: of.sizeBytes,
      lastUsed: new Date(w.clock.now().getTime() - daysAgo * DAY),
      ...extra,
    });
    await fs.rm(twin.path);
    await fs.link(of.path, twin.path);
    const id = contentIdOf(await fs.stat(of.path));
    for (const p of [of.path, twin.path]) setContentId(w.db, p, id);
    return twin;
  }

  test("count once, are one LRU candidate used when any path was, and go together to free their bytes", async () => {
    const w = await world({ maxBytes: 1024 });
    const c = await standardCache(w);
    // a (3 days) is linked under V's path, used 30 minutes ago: the content's last use.
    const twin = await linkOf(w, c.a, `users/${V}/1-a.safetensors`, 1 / 48);
    // a once, b, c, the protected and the ignored one.
    expect(userLoraBytes(w.db)).toBe(1000);
    // 300 more need 276 freed: b (2 days) and c (1 day) go before the content of a and its link.
    const r1 = await w.space.reserve({
      path: path.join(w.loraDir, "users/x/9-n.safetensors"),
      sizeBytes: 300,
      userLora: true,
    });
    expect(await present(c.b, w)).toBe(false);
    expect(await present(c.c, w)).toBe(false);
    expect(await present(c.a, w)).toBe(true);
    expect(await present(twin, w)).toBe(true);
    r1.release();
    // 600 more need 176 freed, a's content (200), the only candidate left: both paths go.
    const r2 = await w.space.reserve({
      path: path.join(w.loraDir, "users/x/9-m.safetensors"),
      sizeBytes: 600,
      userLora: true,
    });
    expect(await present(c.a, w)).toBe(false);
    expect(await present(twin, w)).toBe(false);
    expect(userLoraBytes(w.db)).toBe(400);
    r2.release();
  });

  test("a content one of whose paths is protected, pinned or shared is never an LRU victim", async () => {
    const w = await world({ maxBytes: 1024 });
    const c = await standardCache(w);
    const kept = await linkOf(w, c.a, `users/${V}/1-a.safetensors`, 3, { protected: true });
    const unpin = w.pins.pin([c.c.path]);
    const held = await linkOf(w, c.c, `users/${V}/3-c.safetensors`, 5);
    // Only b may go (200): 500 more need 476 freed, so nothing is evicted.
    const err = await w.space
      .reserve({ path: path.join(w.loraDir, "users/x/9-n.safetensors"), sizeBytes: 500, userLora: true })
      .catch((e: unknown) => e);
    expect(errorReason(err)).toBe("NO_SPACE");
    for (const l of [c.a, kept, c.b, c.c, held]) expect(await present(l, w)).toBe(true);
    unpin();
    // A user LoRA identical to a shared one costs the budget nothing: the shared file holds the bytes.
    const before = userLoraBytes(w.db);
    await linkOf(w, c.shared, `users/${V}/6-style.safetensors`, 0);
    expect(userLoraBytes(w.db)).toBe(before);
  });

  test("evicting one path frees nothing until the last path goes", async () => {
    const w = await world({ maxBytes: 1024 });
    const c = await standardCache(w);
    const twin = await linkOf(w, c.a, `users/${V}/1-a.safetensors`, 0);
    const [one] = await w.space.evictSelected([{ path: c.a.path }], "admin");
    expect(one).toMatchObject({ path: c.a.path, sizeBytes: 200, freedBytes: 0 });
    expect(await present(twin, w)).toBe(true);
    expect(await fs.readFile(twin.path)).toHaveLength(200);
    const [last] = await w.space.evictSelected([{ path: twin.path }], "admin");
    expect(last).toMatchObject({ path: twin.path, freedBytes: 200 });
  });
});

import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { createLogger, ManualClock } from "@emprops/platform";
import { PARTIAL_SUFFIX, SIDECAR_SUFFIX } from "../src/cache/cache-layout.js";
import { findLoraFileByPath } from "../src/db/lora-files.js";
import { getModel, registerModel, userLoraBytes } from "../src/db/models.js";
import { openDatabase } from "../src/db/open-database.js";
import { toPythonIso } from "../src/db/python-time.js";
import { savePartialState } from "../src/download/partial-state.js";
import { reconcile } from "../src/jobs/reconcile.js";
import { createMetrics } from "../src/telemetry.js";
import { defaultUserLoraDir, exists, seedLora } from "./support/seed.js";

const U = "0b7f2f9e-9a55-4b0e-8b8e-2f6d1c0a9e21";
const HOUR = 3600 * 1000;

let root: string;
beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), "mc-reconcile-"));
});
afterAll(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

test("after a crash the database and the disk are made to agree", async () => {
  const loraDir = path.join(root, "models", "loras");
  const db = openDatabase(path.join(root, "model_cache.db"));
  const clock = new ManualClock(new Date());
  const now = clock.now();
  const userDir = path.join(defaultUserLoraDir(loraDir), U);

  const intact = await seedLora(db, loraDir, {
    relativePath: `users/${U}/1-ok.safetensors`,
    sizeBytes: 64,
    lastUsed: now,
  });
  // A row whose file is gone (deleted by hand, or the crash came between unlink and delete).
  const staleRow = await seedLora(db, loraDir, {
    relativePath: `users/${U}/2-gone.safetensors`,
    sizeBytes: 64,
    lastUsed: now,
  });
  await fs.rm(staleRow.path);
  // The node package's own row for a LoRA that no longer exists.
  const foreign = path.join(loraDir, "old.safetensors");
  registerModel(db, {
    path: foreign,
    modelType: "loras",
    filename: "old.safetensors",
    sizeBytes: 1,
    now: toPythonIso(now),
    useCount: 1,
  });
  // A file the crash left truncated.
  const truncated = await seedLora(db, loraDir, {
    relativePath: `users/${U}/3-cut.safetensors`,
    sizeBytes: 64,
    lastUsed: now,
  });
  await fs.truncate(truncated.path, 10);
  // A finished file whose rows were never written: not known to be ours, so reported and kept.
  const orphan = path.join(userDir, "4-orphan.safetensors");
  await fs.writeFile(orphan, "x");
  // A file the node package registered itself (register_model): not ours to remove.
  const registeredByPackage = path.join(loraDir, "shared", "package.safetensors");
  await fs.mkdir(path.dirname(registeredByPackage), { recursive: true });
  await fs.writeFile(registeredByPackage, "y");
  registerModel(db, {
    path: registeredByPackage,
    modelType: "loras",
    filename: "package.safetensors",
    sizeBytes: 1,
    now: toPythonIso(now),
    useCount: 1,
  });
  // Ours (a lora_files row) but its models row is gone: removed.
  const rowless = await seedLora(db, loraDir, {
    relativePath: `users/${U}/7-rowless.safetensors`,
    sizeBytes: 8,
    lastUsed: now,
  });
  db.prepare("DELETE FROM models WHERE path = ?").run(rowless.path);
  // A partial download with its sidecar: kept for a resume.
  const resumable = path.join(userDir, "5-partial.safetensors");
  await fs.writeFile(resumable + PARTIAL_SUFFIX, Buffer.alloc(100));
  await savePartialState(resumable + SIDECAR_SUFFIX, {
    version: 1,
    sizeBytes: 100,
    sha256: "ab".repeat(32),
    parts: [{ start: 0, end: 100, done: 40 }],
  });
  // A partial download without a sidecar, and an old one: removed.
  const noSidecar = path.join(userDir, "6-partial.safetensors");
  await fs.writeFile(noSidecar + PARTIAL_SUFFIX, Buffer.alloc(100));
  const stale = path.join(loraDir, "shared", "old.safetensors");
  await fs.mkdir(path.dirname(stale), { recursive: true });
  await fs.writeFile(stale + PARTIAL_SUFFIX, Buffer.alloc(10));
  await savePartialState(stale + SIDECAR_SUFFIX, {
    version: 1,
    sizeBytes: 10,
    sha256: "",
    parts: [{ start: 0, end: 10, done: 5 }],
  });
  const old = new Date(now.getTime() - 48 * HOUR);
  await fs.utimes(stale + PARTIAL_SUFFIX, old, old);
  // A user directory with nothing left in it.
  const emptyUser = path.join(defaultUserLoraDir(loraDir), "1d0c2b7a-0000-4000-8000-000000000000");
  await fs.mkdir(emptyUser, { recursive: true });

  const metrics = createMetrics();
  const report = await reconcile({
    db,
    loraDir,
    userLoraDir: defaultUserLoraDir(loraDir),
    clock,
    logger: createLogger("t", "silent"),
    partialMaxAgeMs: 24 * HOUR,
    removeUnownedFiles: false,
    metrics,
  });

  expect(await exists(intact.path)).toBe(true);
  expect(getModel(db, intact.path)).toBeDefined();
  expect(getModel(db, staleRow.path)).toBeUndefined();
  expect(findLoraFileByPath(db, staleRow.path)).toBeUndefined();
  expect(getModel(db, foreign)).toBeUndefined();
  expect(await exists(truncated.path)).toBe(false);
  expect(getModel(db, truncated.path)).toBeUndefined();
  expect(await exists(orphan)).toBe(true);
  expect(await exists(registeredByPackage)).toBe(true);
  expect(getModel(db, registeredByPackage)).toBeDefined();
  expect(await exists(rowless.path)).toBe(false);
  expect(findLoraFileByPath(db, rowless.path)).toBeUndefined();
  expect(await exists(resumable + PARTIAL_SUFFIX)).toBe(true);
  expect(await exists(resumable + SIDECAR_SUFFIX)).toBe(true);
  expect(await exists(noSidecar + PARTIAL_SUFFIX)).toBe(false);
  expect(await exists(stale + PARTIAL_SUFFIX)).toBe(false);
  expect(await exists(stale + SIDECAR_SUFFIX)).toBe(false);
  expect(await exists(emptyUser)).toBe(false);
  expect(report).toEqual({
    droppedRows: 4,
    removedFiles: 2,
    keptPartials: 1,
    removedPartials: 2,
    foreignFiles: 1,
    unownedFiles: 1,
    contentIdsSet: 1,
  });
  db.close();
});

test("another model_cache.db (MODEL_CACHE_DB changed, or the node package's after an upgrade) deletes no file", async () => {
  const base = path.join(root, "upgrade");
  const loraDir = path.join(base, "models", "loras");
  const clock = new ManualClock(new Date());
  const before = openDatabase(path.join(base, "model_cache.db"));
  const cached = [
    await seedLora(before, loraDir, {
      relativePath: `users/${U}/1-a.safetensors`,
      sizeBytes: 16,
      lastUsed: clock.now(),
    }),
    await seedLora(before, loraDir, { relativePath: "shared/b.safetensors", sizeBytes: 16, lastUsed: clock.now() }),
  ];
  before.close();
  const after = openDatabase(path.join(base, "custom_nodes", "emprops_comfy_nodes", "db", "model_cache.db"));
  const deps = {
    db: after,
    loraDir,
    userLoraDir: defaultUserLoraDir(loraDir),
    clock,
    logger: createLogger("t", "silent"),
    partialMaxAgeMs: 24 * HOUR,
  };
  const report = await reconcile({ ...deps, removeUnownedFiles: false });
  expect(report).toMatchObject({ removedFiles: 0, unownedFiles: 2 });
  for (const lora of cached) expect(await exists(lora.path)).toBe(true);

  // Only an operator's explicit setting removes files nobody owns.
  const removing = await reconcile({ ...deps, removeUnownedFiles: true });
  expect(removing).toMatchObject({ removedFiles: 2, unownedFiles: 2 });
  for (const lora of cached) expect(await exists(lora.path)).toBe(false);
  after.close();
});

test("a model_cache.db from before links migrates; start-up records each file's identity, so linked paths count once", async () => {
  const base = path.join(root, "links");
  const loraDir = path.join(base, "models", "loras");
  const file = path.join(base, "model_cache.db");
  const clock = new ManualClock(new Date());
  const V = "3c9e1a57-0d2b-4f86-a4c1-5e7b9d0f2a63";
  const old = openDatabase(file);
  const mine = await seedLora(old, loraDir, {
    relativePath: `users/${U}/1-same.safetensors`,
    sizeBytes: 300,
    lastUsed: clock.now(),
    sha256: "ab".repeat(32),
  });
  const theirs = await seedLora(old, loraDir, {
    relativePath: `users/${V}/2-same.safetensors`,
    sizeBytes: 300,
    lastUsed: clock.now(),
    sha256: "ab".repeat(32),
  });
  // The second path made a hard link of the first, as a linked reference is.
  await fs.rm(theirs.path);
  await fs.link(mine.path, theirs.path);
  // The schema as the previous version left it: lora_files without content_id, user_version 2.
  old.exec(
    "DROP INDEX lora_files_content; DROP INDEX lora_files_sha256; ALTER TABLE lora_files DROP COLUMN content_id",
  );
  old.pragma("user_version = 2");
  old.close();

  const db = openDatabase(file);
  expect(db.pragma("user_version", { simple: true })).toBe(3);
  // Before reconciliation the identities are unknown: each path counts as a content of its own.
  expect(findLoraFileByPath(db, mine.path)?.content_id).toBe("");
  expect(userLoraBytes(db)).toBe(600);
  const report = await reconcile({
    db,
    loraDir,
    userLoraDir: defaultUserLoraDir(loraDir),
    clock,
    logger: createLogger("t", "silent"),
    partialMaxAgeMs: HOUR,
    removeUnownedFiles: false,
  });
  expect(report).toMatchObject({ removedFiles: 0, droppedRows: 0, contentIdsSet: 2 });
  const ids = [mine, theirs].map((l) => findLoraFileByPath(db, l.path)?.content_id);
  expect(ids[0]).not.toBe("");
  expect(ids[1]).toBe(ids[0]);
  expect(userLoraBytes(db)).toBe(300);
  for (const l of [mine, theirs]) expect(await exists(l.path)).toBe(true);
  // Run again: nothing left to record.
  expect(
    (
      await reconcile({
        db,
        loraDir,
        userLoraDir: defaultUserLoraDir(loraDir),
        clock,
        logger: createLogger("t", "silent"),
        partialMaxAgeMs: HOUR,
        removeUnownedFiles: false,
      })
    ).contentIdsSet,
  ).toBe(0);
  db.close();
});

import type { Dirent } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import type { Clock, Logger } from "@emprops/platform";
import { PARTIAL_SUFFIX, SHARED_DIR, SIDECAR_SUFFIX, USERS_DIR } from "../cache/cache-layout.js";
import { allLoraFiles, deleteLoraFile, findLoraFileByPath } from "../db/lora-files.js";
import { deleteModel, getModel, modelsUnder } from "../db/models.js";
import type { Db } from "../db/open-database.js";
import { readPartialState } from "../download/partial-state.js";

export interface ReconcileReport {
  droppedRows: number;
  removedFiles: number;
  keptPartials: number;
  removedPartials: number;
}

/**
 * Makes model_cache.db and models/loras agree after a crash at any point,
 * before the first request: rows under models/loras whose file is missing
 * (or, for this service's files, has the wrong size) are dropped; files in
 * users/ and shared/ without rows are removed; a partial download with a
 * readable sidecar younger than `partialMaxAgeMs` is kept so the next
 * request for it resumes, any other is removed; empty user directories go.
 */
export async function reconcile(deps: {
  db: Db;
  loraDir: string;
  clock: Clock;
  logger: Logger;
  partialMaxAgeMs: number;
}): Promise<ReconcileReport> {
  const { db, loraDir, clock, logger } = deps;
  const report: ReconcileReport = { droppedRows: 0, removedFiles: 0, keptPartials: 0, removedPartials: 0 };
  const usersDir = path.join(loraDir, USERS_DIR);
  const sharedDir = path.join(loraDir, SHARED_DIR);
  await fs.mkdir(usersDir, { recursive: true });
  await fs.mkdir(sharedDir, { recursive: true });

  const dropRows = (p: string, why: string) => {
    db.transaction(() => {
      deleteModel(db, p);
      deleteLoraFile(db, p);
    }).immediate();
    report.droppedRows++;
    logger.info({ path: p, why }, "reconcile: dropped row");
  };
  const removeFile = async (p: string, why: string) => {
    await fs.rm(p, { force: true });
    report.removedFiles++;
    logger.info({ path: p, why }, "reconcile: removed file");
  };

  for (const row of modelsUnder(db, loraDir)) {
    const stat = await statOrUndefined(row.path);
    const ours = !!findLoraFileByPath(db, row.path);
    if (!stat?.isFile()) dropRows(row.path, "file missing");
    else if (ours && stat.size !== row.size_bytes) {
      await removeFile(row.path, `size ${stat.size} differs from the recorded ${row.size_bytes}`);
      dropRows(row.path, "file truncated");
    }
  }
  for (const row of allLoraFiles(db)) {
    if (getModel(db, row.path)) continue;
    await removeFile(row.path, "no models row");
    dropRows(row.path, "no models row");
  }

  const dirs = [sharedDir, ...(await subdirectories(usersDir))];
  for (const dir of dirs) {
    const entries = await fs.readdir(dir, { withFileTypes: true });
    const names = new Set(entries.map((e) => e.name));
    for (const entry of entries) {
      const p = path.join(dir, entry.name);
      if (!entry.isFile()) continue;
      if (entry.name.endsWith(PARTIAL_SUFFIX)) {
        const final = p.slice(0, -PARTIAL_SUFFIX.length);
        const state = await readPartialState(final + SIDECAR_SUFFIX);
        const stat = await fs.stat(p);
        const fresh = clock.now().getTime() - stat.mtimeMs <= deps.partialMaxAgeMs;
        if (state && fresh && stat.size === state.sizeBytes) {
          report.keptPartials++;
          continue;
        }
        await fs.rm(final + SIDECAR_SUFFIX, { force: true });
        await fs.rm(p, { force: true });
        report.removedPartials++;
        logger.info({ path: p }, "reconcile: removed partial download that cannot be resumed");
      } else if (entry.name.endsWith(SIDECAR_SUFFIX)) {
        if (!names.has(entry.name.slice(0, -SIDECAR_SUFFIX.length) + PARTIAL_SUFFIX))
          await removeFile(p, "orphan sidecar");
      } else if (entry.name.endsWith(`${SIDECAR_SUFFIX}.tmp`)) {
        await removeFile(p, "unfinished sidecar");
      } else if (!getModel(db, p) || !findLoraFileByPath(db, p)) {
        await removeFile(p, "no row");
        if (getModel(db, p)) dropRows(p, "not a file this cache downloaded");
      }
    }
  }
  for (const dir of await subdirectories(usersDir)) {
    await fs.rmdir(dir).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== "ENOTEMPTY" && err.code !== "EEXIST") throw err;
    });
  }
  logger.info({ ...report }, "reconciled model_cache.db with the LoRA directory");
  return report;
}

async function subdirectories(dir: string): Promise<string[]> {
  const entries: Dirent[] = await fs.readdir(dir, { withFileTypes: true });
  return entries.filter((e) => e.isDirectory()).map((e) => path.join(dir, e.name));
}

async function statOrUndefined(p: string) {
  try {
    return await fs.stat(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

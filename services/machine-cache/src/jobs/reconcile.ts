import type { Dirent } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import type { Clock, Logger } from "@emprops/platform";
import { PARTIAL_SUFFIX, SHARED_DIR, SIDECAR_SUFFIX } from "../cache/cache-layout.js";
import { allLoraFiles, contentIdOf, deleteLoraFile, findLoraFileByPath, setContentId } from "../db/lora-files.js";
import { deleteModel, getModel, modelsUnder } from "../db/models.js";
import type { Db } from "../db/open-database.js";
import { writeTransaction } from "../db/write-transaction.js";
import { readPartialState } from "../download/partial-state.js";
import type { Metrics } from "../telemetry.js";

export interface ReconcileReport {
  droppedRows: number;
  removedFiles: number;
  keptPartials: number;
  removedPartials: number;
  /** Files with a models row this service did not write (the node package's): left alone. */
  foreignFiles: number;
  /** Files with no row at all: reported, removed only with `removeUnownedFiles`. */
  unownedFiles: number;
  /** This service's rows whose file identity (content_id) was unknown or had changed, now the file's. */
  contentIdsSet: number;
}

export interface ReconcileDeps {
  db: Db;
  loraDir: string;
  /** Where user LoRAs are cached ({dir}/{user_id}/{lora_id}-{name}). */
  userLoraDir: string;
  clock: Clock;
  logger: Logger;
  partialMaxAgeMs: number;
  /** An operator's choice: files with no row in model_cache.db are removed too. */
  removeUnownedFiles: boolean;
  metrics?: Pick<Metrics, "unownedFiles">;
}

/**
 * Makes model_cache.db and the cache's directories agree after a crash,
 * before the first request, removing only what this service owns: files it
 * downloaded (its lora_files rows) and its partial downloads.
 * - rows under the cache's directories whose file is missing are dropped
 *   (rows only);
 * - this service's files with the wrong size, or whose models row is gone,
 *   are removed with their rows (that path only: other hard links of the
 *   file are checked as files of their own);
 * - each of this service's rows records its file's identity (device:inode),
 *   so paths linked to one file count as one content (rows from before
 *   links, or a file replaced behind our back, get it here);
 * - a partial download with a readable sidecar younger than
 *   `partialMaxAgeMs` is kept so the next request resumes it, any other is
 *   removed;
 * - a file with a models row written by other code (the node package's
 *   register_model) is left alone, and a file with no row at all is
 *   reported (log, metric) and kept unless `removeUnownedFiles`: another
 *   model_cache.db, an operator or another tool may own it;
 * - empty user directories go.
 */
export async function reconcile(deps: ReconcileDeps): Promise<ReconcileReport> {
  const { db, loraDir, userLoraDir, clock, logger } = deps;
  const report: ReconcileReport = {
    droppedRows: 0,
    removedFiles: 0,
    keptPartials: 0,
    removedPartials: 0,
    foreignFiles: 0,
    unownedFiles: 0,
    contentIdsSet: 0,
  };
  const sharedDir = path.join(loraDir, SHARED_DIR);
  await fs.mkdir(userLoraDir, { recursive: true });
  await fs.mkdir(sharedDir, { recursive: true });

  const dropRows = async (p: string, why: string) => {
    await writeTransaction(db, () => {
      deleteModel(db, p);
      deleteLoraFile(db, p);
    });
    report.droppedRows++;
    logger.info({ path: p, why }, "reconcile: dropped row");
  };
  const removeFile = async (p: string, why: string) => {
    await fs.rm(p, { force: true });
    report.removedFiles++;
    logger.info({ path: p, why }, "reconcile: removed file");
  };

  const rows = new Map([...modelsUnder(db, loraDir), ...modelsUnder(db, userLoraDir)].map((r) => [r.path, r]));
  for (const row of rows.values()) {
    const stat = await statOrUndefined(row.path);
    const ours = findLoraFileByPath(db, row.path);
    if (!stat?.isFile()) await dropRows(row.path, "file missing");
    else if (ours && stat.size !== row.size_bytes) {
      await removeFile(row.path, `size ${stat.size} differs from the recorded ${row.size_bytes}`);
      await dropRows(row.path, "file truncated");
    } else if (ours && ours.content_id !== contentIdOf(stat)) {
      await writeTransaction(db, () => setContentId(db, row.path, contentIdOf(stat)));
      report.contentIdsSet++;
    }
  }
  for (const row of allLoraFiles(db)) {
    if (getModel(db, row.path)) continue;
    await removeFile(row.path, "no models row");
    await dropRows(row.path, "no models row");
  }

  const dirs = [sharedDir, ...(await subdirectories(userLoraDir))];
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
      } else if (findLoraFileByPath(db, p)) {
        continue;
      } else if (getModel(db, p)) {
        report.foreignFiles++;
        logger.info({ path: p }, "reconcile: file registered in models by other code; left alone");
      } else if (deps.removeUnownedFiles) {
        report.unownedFiles++;
        await removeFile(p, "no row in model_cache.db (LORA_RECONCILE_REMOVE_UNOWNED)");
      } else {
        report.unownedFiles++;
        logger.warn({ path: p }, "reconcile: file with no row in model_cache.db; kept");
      }
    }
  }
  deps.metrics?.unownedFiles.add(report.unownedFiles, { removed: String(deps.removeUnownedFiles) });
  for (const dir of await subdirectories(userLoraDir)) {
    await fs.rmdir(dir).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== "ENOTEMPTY" && err.code !== "EEXIST") throw err;
    });
  }
  logger.info({ ...report }, "reconciled model_cache.db with the LoRA directories");
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

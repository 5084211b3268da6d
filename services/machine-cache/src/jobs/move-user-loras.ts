import fs from "node:fs/promises";
import path from "node:path";
import type { Logger } from "@emprops/platform";
import { PARTIAL_SUFFIX, SIDECAR_SUFFIX, USERS_DIR } from "../cache/cache-layout.js";
import { allLoraFiles, deleteLoraFile, moveLoraFile } from "../db/lora-files.js";
import { deleteModel, moveModel } from "../db/models.js";
import type { Db } from "../db/open-database.js";
import { writeTransaction } from "../db/write-transaction.js";

export interface MoveReport {
  moved: number;
  /** Copies that could not be renamed (another file system): removed, downloaded again on first use. */
  removed: number;
}

/**
 * User LoRAs an earlier version cached in models/loras/users/ — where
 * ComfyUI lists them to every workflow — move to the user LoRA directory
 * before the first request, each by a rename (then its rows), so a crash in
 * between leaves the file where nothing but this service names it. A copy
 * that cannot be renamed there (another file system) is removed and fetched
 * again on first use; partial downloads there are removed. Files without a
 * row of this service are left for reconciliation to report.
 */
export async function moveUserLorasOutOfComfyFolders(deps: {
  db: Db;
  loraDir: string;
  userLoraDir: string;
  fileMode: number;
  logger: Logger;
}): Promise<MoveReport> {
  const { db, loraDir, userLoraDir, fileMode, logger } = deps;
  const report: MoveReport = { moved: 0, removed: 0 };
  const oldDir = path.join(loraDir, USERS_DIR);
  if (path.resolve(oldDir) === path.resolve(userLoraDir)) return report;
  for (const row of allLoraFiles(db)) {
    const rel = path.relative(oldDir, row.path);
    if (row.source !== "user" || rel.startsWith("..") || path.isAbsolute(rel)) continue;
    const target = path.join(userLoraDir, rel);
    await fs.mkdir(path.dirname(target), { recursive: true });
    try {
      await fs.rename(row.path, target);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT") continue; // reconciliation drops the rows of a missing file
      if (code !== "EXDEV") throw err;
      await fs.rm(row.path, { force: true });
      await writeTransaction(db, () => {
        deleteModel(db, row.path);
        deleteLoraFile(db, row.path);
      });
      report.removed++;
      logger.info({ from: row.path }, "user LoRA on another file system than the user LoRA directory: removed");
      continue;
    }
    await fs.chmod(target, fileMode);
    await writeTransaction(db, () => {
      moveModel(db, row.path, target);
      moveLoraFile(db, row.path, target);
    });
    report.moved++;
    logger.info({ from: row.path, to: target }, "user LoRA moved out of ComfyUI's loras folder");
  }
  for (const userDir of await subdirectories(oldDir)) {
    for (const name of await fs.readdir(userDir)) {
      if ([PARTIAL_SUFFIX, SIDECAR_SUFFIX, `${SIDECAR_SUFFIX}.tmp`].some((suffix) => name.endsWith(suffix))) {
        await fs.rm(path.join(userDir, name), { force: true });
      }
    }
    await fs.rmdir(userDir).catch(() => {}); // kept when files of others remain
  }
  await fs.rmdir(oldDir).catch(() => {});
  if (report.moved + report.removed > 0) logger.info({ ...report }, "user LoRAs moved out of ComfyUI's loras folder");
  return report;
}

async function subdirectories(dir: string): Promise<string[]> {
  try {
    const entries = await fs.readdir(dir, { withFileTypes: true });
    return entries.filter((e) => e.isDirectory()).map((e) => path.join(dir, e.name));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw err;
  }
}

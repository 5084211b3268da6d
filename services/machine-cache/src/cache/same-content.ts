import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import type { ResolvedLora } from "@emprops/contracts";
import type { Clock, Logger } from "@emprops/platform";
import { type LoraFileRow, loraFilesWithContent } from "../db/lora-files.js";
import type { Db } from "../db/open-database.js";
import type { HoldingsRecorder } from "../reporting/holdings-publisher.js";
import type { Metrics } from "../telemetry.js";
import { PARTIAL_SUFFIX, relativeToLoraDir, SIDECAR_SUFFIX } from "./cache-layout.js";
import { isIntact } from "./cached-copy.js";
import type { FetchedLora } from "./fetch-lora.js";
import type { LoraKey } from "./lora-key.js";
import { registerDownloaded } from "./register.js";
import type { SpaceManager } from "./space-manager.js";
import { syncDirectory } from "../download/sync-directory.js";

/** A shared LoRA's file is readable by every user of the node, as a download leaves it (umask 022). */
const SHARED_FILE_MODE = 0o644;

export interface SameContentDeps {
  db: Db;
  loraDir: string;
  /** Mode of a user LoRA's file once cached. */
  userLoraFileMode: number;
  space: SpaceManager;
  clock: Clock;
  logger: Logger;
  metrics: Metrics;
  holdings: HoldingsRecorder;
}

/**
 * One copy per content on a node: a reference whose file (the sha256 and
 * size the registry resolved it with) is already cached under another path
 * — another user's identical upload, a shared LoRA — gets a hard link to
 * that file instead of a download, registered as its own reference. Across
 * file systems (EXDEV) the file is copied instead, within the budget, and
 * the copy is checked against the sha256. Undefined: no usable file, download.
 * The answer names only `target`, the caller's own path.
 */
export async function fromSameContent(
  deps: SameContentDeps,
  key: LoraKey,
  lora: ResolvedLora,
  target: string,
  opts: { forWarm?: boolean } = {},
): Promise<FetchedLora | undefined> {
  const { db, space } = deps;
  const sha256 = lora.sha256.toLowerCase();
  const sizeBytes = Number(lora.sizeBytes);
  if (!sha256) return undefined;
  const done: FetchedLora = {
    path: target,
    sizeBytes,
    sha256,
    bytesDownloaded: 0,
    attempts: 0,
    resumed: false,
    present: true,
  };
  // In the space lock: no eviction decision removes the file between the check and the link.
  const found = await space.exclusive(async () => {
    const rows = loraFilesWithContent(db, sha256, sizeBytes);
    for (const source of rows) {
      if (source.path === target || !isIntact(db, source)) continue;
      try {
        await linkInto(source.path, target);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === "EXDEV") return { copyFrom: await fs.open(source.path, "r") };
        if (code === "ENOENT") continue;
        throw err;
      }
      await registerDownloaded(
        db,
        {
          key,
          path: target,
          fileName: lora.fileName,
          sizeBytes,
          sha256,
          bytesDownloaded: 0,
          mode: modeOf(key, rows, source, deps),
        },
        deps.clock.now(),
        deps.holdings,
      );
      return { linked: true };
    }
    return undefined;
  });
  if (!found) return undefined;
  if ("linked" in found) {
    deps.metrics.sameContent.add(1, { outcome: "linked", "lora.source": key.source });
    deps.logger.info(
      { path: relativeToLoraDir(deps.loraDir, target) ?? target, size_bytes: sizeBytes, sha256 },
      "linked LoRA to the cached file of the same content",
    );
    return done;
  }
  const source = found.copyFrom;
  try {
    const reservation = await space.reserve({
      path: target,
      sizeBytes,
      userLora: key.source === "user",
      maxEvictBytes: opts.forWarm ? space.warmEvictBudget() : undefined,
    });
    try {
      if (!(await copyVerified(source, target, sizeBytes, sha256))) {
        deps.logger.warn({ path: target, sha256 }, "the cached file of the same content did not verify; downloading");
        return undefined;
      }
      await registerDownloaded(
        db,
        {
          key,
          path: target,
          fileName: lora.fileName,
          sizeBytes,
          sha256,
          bytesDownloaded: 0,
          mode: key.source === "user" ? deps.userLoraFileMode : undefined,
        },
        deps.clock.now(),
        deps.holdings,
      );
    } finally {
      reservation.release();
    }
  } finally {
    await source.close();
  }
  deps.metrics.sameContent.add(1, { outcome: "copied", "lora.source": key.source });
  deps.logger.info(
    { path: relativeToLoraDir(deps.loraDir, target) ?? target, size_bytes: sizeBytes, sha256 },
    "copied LoRA from the cached file of the same content on another file system",
  );
  return done;
}

/**
 * The linked file's mode: a user LoRA's when all its paths are user LoRAs;
 * a shared LoRA's when one is (the bytes are then public anyway, and a user
 * link must not make a shared file unreadable to ComfyUI).
 */
function modeOf(key: LoraKey, rows: LoraFileRow[], source: LoraFileRow, deps: SameContentDeps): number | undefined {
  const sharedHolds =
    source.source === "shared" ||
    rows.some((r) => r.source === "shared" && r.content_id !== "" && r.content_id === source.content_id);
  if (key.source === "shared") return SHARED_FILE_MODE;
  return sharedHolds ? undefined : deps.userLoraFileMode;
}

/** A hard link of `source` at `target`, atomically (a crash leaves a partial file reconciliation removes). */
async function linkInto(source: string, target: string): Promise<void> {
  await fs.mkdir(path.dirname(target), { recursive: true });
  const staging = target + PARTIAL_SUFFIX;
  await Promise.all([fs.rm(staging, { force: true }), fs.rm(target + SIDECAR_SUFFIX, { force: true })]);
  await fs.link(source, staging);
  try {
    await fs.rename(staging, target);
  } catch (err) {
    // Never leave a link where a download would open (and truncate) its partial file.
    await fs.rm(staging, { force: true });
    throw err;
  }
  await syncDirectory(path.dirname(target));
}

/** Copies an open file to `target` while hashing it; false (nothing left) when size or sha256 differ. */
async function copyVerified(source: fs.FileHandle, target: string, sizeBytes: number, sha256: string) {
  await fs.mkdir(path.dirname(target), { recursive: true });
  const staging = target + PARTIAL_SUFFIX;
  // A new file ("wx"): truncating whatever was at the staging path could be truncating another path's file.
  await Promise.all([fs.rm(staging, { force: true }), fs.rm(target + SIDECAR_SUFFIX, { force: true })]);
  const out = await fs.open(staging, "wx");
  const hash = createHash("sha256");
  let bytes = 0;
  try {
    for await (const chunk of source.createReadStream({ start: 0, autoClose: false, highWaterMark: 1 << 20 })) {
      const buf = chunk as Buffer;
      hash.update(buf);
      bytes += buf.length;
      await out.write(buf);
    }
    await out.sync();
  } finally {
    await out.close();
  }
  if (bytes !== sizeBytes || hash.digest("hex") !== sha256) {
    await fs.rm(staging, { force: true });
    return false;
  }
  await fs.rename(staging, target);
  await syncDirectory(path.dirname(target));
  return true;
}

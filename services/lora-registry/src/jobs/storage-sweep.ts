import { create, toJson } from "@bufbuild/protobuf";
import { type Timestamp, timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  BlobArea,
  ErrorReason,
  type ListedBlob,
  ListedBlobKind,
  type StorageConsistencyReport,
  StorageConsistencyReportSchema,
  type StorageFinding,
  StorageFindingAction,
  StorageFindingReason,
  StorageFindingSchema,
} from "@emprops/contracts";
import { rpcError } from "@emprops/platform";
import { Code } from "@connectrpc/connect";
import { Cron } from "croner";
import {
  liveLoraRowsByIds,
  liveLoraRowsOfUser,
  saveSweepReport,
  sessionsByIds,
  type SweptLoraRow,
  usersWithVisibleLoras,
  withSweepLock,
} from "../db/queries/storage-sweep.js";
import { blobPathOf, stagedUpload, viaGateway } from "../domain/blob.js";
import type { AppContext } from "../context.js";
import { withSpan } from "../telemetry.js";

/** Blobs per ListBlobs page (Blob Storage allows 5,000; a smaller page stays well within one call's deadline). */
const PAGE = 1000;
/** Deadline of one ListBlobs page: listing with metadata can take seconds on a busy account, more than other calls. */
const LIST_TIMEOUT_MS = 30_000;
/** Orphans re-checked and deleted together. */
const ACT_BATCH = 200;
/** Findings a report carries (the counts cover all of them). */
const SAMPLE = 100;

export interface SweepOptions {
  trigger: "schedule" | "rpc";
  /** Report only: seal and delete nothing. */
  dryRun: boolean;
  /**
   * Called with each batch of orphans after listing and before they are
   * checked against the database again and deleted (where a row created
   * meanwhile must save its blob).
   */
  beforeActing?: (orphans: readonly { blobPath: string; loraId: string; uploadId: string }[]) => Promise<void>;
}

/**
 * One consistency sweep: flat_file against users/, upload sessions against
 * staging/ (module comment of startStorageSweep). Undefined when another
 * sweep holds the advisory lock.
 */
export async function runStorageSweep(
  ctx: AppContext,
  opts: SweepOptions,
): Promise<StorageConsistencyReport | undefined> {
  const report = await withSweepLock(ctx.db, () =>
    withSpan("storage_sweep", { "sweep.trigger": opts.trigger, "sweep.dry_run": opts.dryRun }, async () => {
      const run = new SweepRun(ctx, opts);
      await run.sweepUsers();
      await run.sweepStaging();
      return run.finish();
    }),
  ).catch((err: unknown) => {
    ctx.metrics.storageSweepRuns.add(1, { outcome: "failed", trigger: opts.trigger });
    throw err;
  });
  if (!report) {
    ctx.metrics.storageSweepRuns.add(1, { outcome: "skipped", trigger: opts.trigger });
    return undefined;
  }
  await saveSweepReport(ctx.db, {
    runId: report.runId,
    startedAt: timestampDate(report.startTime!),
    finishedAt: timestampDate(report.finishTime!),
    report: toJson(StorageConsistencyReportSchema, report) as Record<string, unknown>,
  });
  ctx.metrics.storageSweepRuns.add(1, { outcome: "completed", trigger: opts.trigger });
  ctx.logger.info(
    {
      run_id: report.runId,
      trigger: report.trigger,
      rows_checked: Number(report.rowsChecked),
      missing: Number(report.missingBlobs),
      size_mismatches: Number(report.sizeMismatches),
      etag_mismatches: Number(report.etagMismatches),
      orphans: Number(report.orphanBlobs),
      staging_orphans: Number(report.stagingOrphans),
      deleted: Number(report.deletedBlobs),
      sealed: Number(report.sealedBlobs),
    },
    "storage consistency sweep finished",
  );
  return report;
}

/** runStorageSweep for an RPC: ABORTED / STORAGE_SWEEP_RUNNING while another runs. */
export async function sweepNow(ctx: AppContext, dryRun: boolean): Promise<StorageConsistencyReport> {
  const report = await runStorageSweep(ctx, { trigger: "rpc", dryRun });
  if (!report) {
    throw rpcError(
      Code.Aborted,
      ErrorReason.STORAGE_SWEEP_RUNNING,
      "a storage consistency sweep is already running; ask for its report with GetStorageConsistencyReport once it has finished",
    );
  }
  return report;
}

/**
 * The scheduled sweep, on STORAGE_SWEEP_CRON: every replica schedules it
 * and whichever takes the advisory lock runs it; the others skip that
 * tick. A run never overlaps this replica's previous one.
 *
 * What it does: every visible LoRA row's blobs (the file, the converted
 * .safetensors of a .pt, the preview) are compared with the listing of
 * users/ — a missing blob, or one whose size or ETag differs from what
 * the row recorded at completion, is reported. A blob under users/ that no
 * visible row records and no pending upload may be writing is an orphan:
 * deleted once its last write is older than STORAGE_ORPHAN_GRACE_HOURS,
 * after the database is asked again (a row created since the listing keeps
 * its blob) and only while its ETag is still the listed one. A staging blob
 * without a live session is sealed, and deleted once its session's upload
 * URLs have expired and the grace has passed; a live session's is never
 * touched.
 */
export function startStorageSweep(ctx: AppContext): { stop(): Promise<void> } {
  let running: Promise<unknown> = Promise.resolve();
  const job = new Cron(ctx.cfg.storageSweep.cron, { protect: true }, async () => {
    running = runStorageSweep(ctx, { trigger: "schedule", dryRun: false }).catch((err: unknown) =>
      ctx.logger.error({ err }, "storage consistency sweep failed"),
    );
    await running;
  });
  return {
    stop: async () => {
      job.stop();
      await running;
    },
  };
}

/** What a row expects to find at one of its paths. */
interface Expected {
  row: SweptLoraRow;
  /** -1: not recorded. */
  size: number;
  /** "": not recorded. */
  etag: string;
}

interface Orphan {
  blob: ListedBlob;
  reason: StorageFindingReason;
  /** For staging blobs: seal rather than delete. */
  seal: boolean;
}

/** The path of a LoRA's preview, as the gateway names it. */
const previewPath = (userId: string, loraId: string) => `users/${userId}/loras/${loraId}.preview.webp`;

/**
 * The blobs a row points at and what it recorded of each: for a visible
 * LoRA its file, converted copy and preview as recorded; for a row whose
 * upload is pending every path its completion may write (nothing recorded
 * yet).
 */
function pointedAt(row: SweptLoraRow): Map<string, Expected> {
  const out = new Map<string, Expected>();
  const data = row.gen_out_data ?? {};
  if (row.hidden === true) {
    const { extension } = blobPathOf(row);
    for (const ext of new Set([extension, "safetensors"])) {
      out.set(`users/${row.user_id}/loras/${row.id}.${ext}`, { row, size: -1, etag: "" });
    }
    out.set(previewPath(row.user_id, row.id), { row, size: -1, etag: "" });
    return out;
  }
  const size = typeof data.size_bytes === "number" ? data.size_bytes : -1;
  out.set(blobPathOf(row).blobPath, { row, size, etag: data.blob_etag ?? "" });
  if (data.converted) {
    out.set(data.converted.blob_path, { row, size: data.converted.size_bytes, etag: data.converted.etag ?? "" });
  }
  if (data.preview) out.set(previewPath(row.user_id, row.id), { row, size: data.preview.size_bytes, etag: "" });
  return out;
}

class SweepRun {
  private readonly report: StorageConsistencyReport;
  private readonly startedAt: Date;
  private readonly findings: StorageFinding[] = [];
  private orphans: Orphan[] = [];

  constructor(
    private readonly ctx: AppContext,
    private readonly opts: SweepOptions,
  ) {
    this.startedAt = ctx.clock.now();
    this.report = create(StorageConsistencyReportSchema, {
      runId: ctx.newId(),
      trigger: opts.trigger,
      dryRun: opts.dryRun,
      startTime: timestampFromDate(this.startedAt),
    });
  }

  /** users/ against flat_file, one user at a time: the listing and the users with rows, merged in uuid order. */
  async sweepUsers(): Promise<void> {
    const groups = this.blobsByUser();
    const users = this.usersWithRows();
    let a = await groups.next();
    let b = await users.next();
    while (!a.done || !b.done) {
      if (!a.done && (b.done || a.value.userId < b.value)) {
        await this.checkUser(a.value.userId, a.value.blobs);
        a = await groups.next();
      } else if (!b.done && (a.done || b.value < a.value.userId)) {
        await this.checkUser(b.value, []);
        b = await users.next();
      } else if (!a.done && !b.done) {
        await this.checkUser(a.value.userId, a.value.blobs);
        a = await groups.next();
        b = await users.next();
      }
    }
    await this.act();
  }

  /** staging/ against the upload sessions, a page at a time. */
  async sweepStaging(): Promise<void> {
    for await (const page of this.pages(BlobArea.STAGING, "")) {
      this.report.stagingBlobsListed += BigInt(page.length);
      const staged = page.filter((b) => b.kind === ListedBlobKind.STAGED);
      for (const b of page) if (b.kind !== ListedBlobKind.STAGED) this.unrecognised(b);
      const sessions = new Map(
        (
          await sessionsByIds(
            this.ctx.db,
            staged.map((b) => b.uploadId),
          )
        ).map((s) => [s.id, s]),
      );
      const now = this.ctx.clock.now().getTime();
      for (const blob of staged) {
        const session = sessions.get(blob.uploadId);
        const live = session?.state === "pending" && session.expires_at.getTime() > now;
        if (live) continue;
        const lastModified = timestampDate(blob.lastModified!).getTime();
        const age = now - lastModified;
        // No URL outlives its session; without a session row, none outlives a session begun before the blob was written.
        const urlsExpireAt =
          session?.expires_at.getTime() ?? lastModified + this.ctx.cfg.upload.sessionTtlSeconds * 1000;
        const sealed = blob.metadata.sealed === "true" && blob.sizeBytes === 0n;
        const inGrace = age < this.ctx.cfg.storageSweep.orphanGraceMs;
        if (now >= urlsExpireAt && !inGrace) {
          this.orphans.push({ blob, reason: StorageFindingReason.STAGING_ORPHAN, seal: false });
        } else if (!sealed && (session || !inGrace)) {
          this.orphans.push({ blob, reason: StorageFindingReason.STAGING_ORPHAN, seal: true });
        } else if (sealed) {
          this.report.sealedPlaceholders++;
        } else {
          this.finding(StorageFindingReason.STAGING_ORPHAN, StorageFindingAction.KEPT_IN_GRACE, blob);
        }
      }
      if (this.orphans.length >= ACT_BATCH) await this.act();
    }
    await this.act();
  }

  finish(): StorageConsistencyReport {
    this.report.finishTime = timestampFromDate(this.ctx.clock.now());
    this.report.findings = this.findings;
    return this.report;
  }

  /** The listing of users/, one user's blobs at a time (they are contiguous in name order). */
  private async *blobsByUser(): AsyncGenerator<{ userId: string; blobs: ListedBlob[] }> {
    let current: { userId: string; blobs: ListedBlob[] } | undefined;
    for await (const page of this.pages(BlobArea.USERS, "")) {
      this.report.userBlobsListed += BigInt(page.length);
      for (const blob of page) {
        if (!blob.userId) {
          this.unrecognised(blob);
          continue;
        }
        if (current && current.userId !== blob.userId) {
          yield current;
          current = undefined;
        }
        (current ??= { userId: blob.userId, blobs: [] }).blobs.push(blob);
      }
    }
    if (current) yield current;
  }

  private async *usersWithRows(): AsyncGenerator<string> {
    let after: string | undefined;
    for (;;) {
      const users = await usersWithVisibleLoras(this.ctx.db, after, 500);
      yield* users;
      if (users.length < 500) return;
      after = users[users.length - 1];
    }
  }

  private async *pages(area: BlobArea, userId: string): AsyncGenerator<ListedBlob[]> {
    let pageToken = "";
    do {
      const page = await viaGateway(this.ctx.logger, "ListBlobs", () =>
        this.ctx.blobGateway.listBlobs(
          { area, userId, pageSize: PAGE, pageToken },
          { timeoutMs: Math.max(LIST_TIMEOUT_MS, this.ctx.cfg.blobGatewayTimeoutMs) },
        ),
      );
      yield page.blobs;
      pageToken = page.nextPageToken;
    } while (pageToken);
  }

  /** One user's rows against their blobs. */
  private async checkUser(userId: string, blobs: ListedBlob[]): Promise<void> {
    const rows = await liveLoraRowsOfUser(this.ctx.db, userId);
    this.report.rowsChecked += BigInt(rows.filter((r) => r.hidden !== true).length);
    const expected = new Map<string, Expected>();
    for (const row of rows) for (const [path, e] of pointedAt(row)) expected.set(path, e);
    const now = this.ctx.clock.now().getTime();
    const seen = new Set<string>();
    for (const blob of blobs) {
      if (blob.kind === ListedBlobKind.UNSPECIFIED) {
        this.unrecognised(blob);
        continue;
      }
      const e = expected.get(blob.blobPath);
      if (e) {
        seen.add(blob.blobPath);
        this.compare(e, blob);
      } else if (now - timestampDate(blob.lastModified!).getTime() < this.ctx.cfg.storageSweep.orphanGraceMs) {
        this.finding(StorageFindingReason.ORPHAN_BLOB, StorageFindingAction.KEPT_IN_GRACE, blob);
      } else {
        this.orphans.push({ blob, reason: StorageFindingReason.ORPHAN_BLOB, seal: false });
      }
    }
    const missing = [...expected].filter(([path, e]) => !seen.has(path) && e.row.hidden !== true);
    if (missing.length > 0) await this.confirmMissing(userId, missing);
    if (this.orphans.length >= ACT_BATCH) await this.act();
  }

  /**
   * A row completed after its user's blobs were listed may have a blob the
   * listing did not show: the user's blobs are listed again before a blob
   * is reported missing.
   */
  private async confirmMissing(userId: string, missing: [string, Expected][]): Promise<void> {
    const now = new Map<string, ListedBlob>();
    for await (const page of this.pages(BlobArea.USERS, userId)) for (const b of page) now.set(b.blobPath, b);
    for (const [path, e] of missing) {
      const blob = now.get(path);
      if (blob) {
        this.compare(e, blob);
        continue;
      }
      this.report.missingBlobs++;
      this.push(
        create(StorageFindingSchema, {
          reason: StorageFindingReason.BLOB_MISSING,
          action: StorageFindingAction.REPORTED,
          blobPath: path,
          userId,
          loraId: e.row.id,
          expectedSizeBytes: BigInt(e.size),
          actualSizeBytes: -1n,
          expectedEtag: e.etag,
        }),
      );
    }
  }

  private compare(e: Expected, blob: ListedBlob): void {
    const reason =
      e.size >= 0 && blob.sizeBytes !== BigInt(e.size)
        ? StorageFindingReason.SIZE_MISMATCH
        : e.etag && blob.etag !== e.etag
          ? StorageFindingReason.ETAG_MISMATCH
          : undefined;
    if (reason === undefined) return;
    if (reason === StorageFindingReason.SIZE_MISMATCH) this.report.sizeMismatches++;
    else this.report.etagMismatches++;
    this.push(
      create(StorageFindingSchema, {
        ...this.blobFields(blob),
        reason,
        action: StorageFindingAction.REPORTED,
        loraId: e.row.id,
        expectedSizeBytes: BigInt(e.size),
        expectedEtag: e.etag,
      }),
    );
  }

  /**
   * Seals or deletes the orphans found so far, each checked against the
   * database once more first: a row or live session that points at a
   * blob now keeps it, whatever the listing showed.
   */
  private async act(): Promise<void> {
    const batch = this.orphans;
    this.orphans = [];
    if (batch.length === 0) return;
    await this.opts.beforeActing?.(
      batch.map((o) => ({ blobPath: o.blob.blobPath, loraId: o.blob.loraId, uploadId: o.blob.uploadId })),
    );
    const stillReferenced = await this.referencedNow(batch.map((o) => o.blob));
    for (const o of batch) {
      if (o.reason === StorageFindingReason.ORPHAN_BLOB) this.report.orphanBlobs++;
      else this.report.stagingOrphans++;
      let action: StorageFindingAction;
      if (stillReferenced.has(o.blob.blobPath)) {
        action = StorageFindingAction.KEPT_REFERENCED;
      } else if (this.opts.dryRun) {
        action = StorageFindingAction.REPORTED;
      } else if (o.seal) {
        await viaGateway(this.ctx.logger, "SealUpload", () =>
          this.ctx.blobGateway.sealUpload({
            upload: stagedUpload({ id: o.blob.uploadId, user_id: o.blob.userId, extension: o.blob.extension }),
          }),
        );
        action = StorageFindingAction.SEALED;
      } else {
        const { deleted } = await viaGateway(this.ctx.logger, "DeleteListedBlob", () =>
          this.ctx.blobGateway.deleteListedBlob({ blobPath: o.blob.blobPath, etag: o.blob.etag }),
        );
        action = deleted ? StorageFindingAction.DELETED : StorageFindingAction.KEPT_REFERENCED;
      }
      this.count(action, o.seal || o.reason === StorageFindingReason.STAGING_ORPHAN ? "staging" : "users");
      this.push(create(StorageFindingSchema, { ...this.blobFields(o.blob), reason: o.reason, action }));
    }
  }

  /** The blobs of the batch a live row or live session points at, read from the database now. */
  private async referencedNow(blobs: ListedBlob[]): Promise<Set<string>> {
    const out = new Set<string>();
    const userBlobs = blobs.filter((b) => b.kind !== ListedBlobKind.STAGED);
    const rows = await liveLoraRowsByIds(this.ctx.db, [...new Set(userBlobs.map((b) => b.loraId))]);
    const pointed = new Set(rows.flatMap((r) => [...pointedAt(r).keys()]));
    for (const b of userBlobs) if (pointed.has(b.blobPath)) out.add(b.blobPath);
    const staged = blobs.filter((b) => b.kind === ListedBlobKind.STAGED);
    const now = this.ctx.clock.now().getTime();
    for (const s of await sessionsByIds(
      this.ctx.db,
      staged.map((b) => b.uploadId),
    )) {
      if (s.state === "pending" && s.expires_at.getTime() > now) {
        for (const b of staged) if (b.uploadId === s.id) out.add(b.blobPath);
      }
    }
    return out;
  }

  private count(action: StorageFindingAction, area: "users" | "staging"): void {
    switch (action) {
      case StorageFindingAction.DELETED:
        this.report.deletedBlobs++;
        this.ctx.metrics.storageSweepActions.add(1, { action: "deleted", area });
        break;
      case StorageFindingAction.SEALED:
        this.report.sealedBlobs++;
        this.ctx.metrics.storageSweepActions.add(1, { action: "sealed", area });
        break;
      case StorageFindingAction.KEPT_REFERENCED:
        this.report.keptReferenced++;
        break;
      default:
        break;
    }
  }

  private unrecognised(blob: ListedBlob): void {
    this.report.unrecognisedBlobs++;
    this.push(
      create(StorageFindingSchema, {
        ...this.blobFields(blob),
        reason: StorageFindingReason.UNRECOGNISED_BLOB,
        action: StorageFindingAction.REPORTED,
      }),
    );
  }

  private finding(reason: StorageFindingReason, action: StorageFindingAction, blob: ListedBlob): void {
    if (reason === StorageFindingReason.ORPHAN_BLOB) this.report.orphanBlobs++;
    else this.report.stagingOrphans++;
    if (action === StorageFindingAction.KEPT_IN_GRACE) this.report.keptInGrace++;
    this.push(create(StorageFindingSchema, { ...this.blobFields(blob), reason, action }));
  }

  private blobFields(blob: ListedBlob) {
    return {
      blobPath: blob.blobPath,
      userId: blob.userId,
      loraId: blob.loraId,
      uploadId: blob.uploadId,
      expectedSizeBytes: -1n,
      actualSizeBytes: blob.sizeBytes,
      actualEtag: blob.etag,
      lastModified: blob.lastModified as Timestamp | undefined,
    };
  }

  private push(f: StorageFinding): void {
    if (this.findings.length < SAMPLE) this.findings.push(f);
    else this.report.findingsTruncated = true;
  }
}

import { performance } from "node:perf_hooks";
import { create } from "@bufbuild/protobuf";
import {
  type EnsuredLora,
  EnsuredLoraSchema,
  type ItemError,
  LoraPhase,
  type LoraProgress,
  LoraProgressSchema,
  reasonName,
  type ResolvedLora,
} from "@emprops/contracts";
import { type Clock, tracer } from "@emprops/platform";
import pLimit from "p-limit";
import { recordEvent } from "../db/cache-events.js";
import { findLoraFile, type LoraFileRow, markValidated } from "../db/lora-files.js";
import { touchModel } from "../db/models.js";
import type { Db } from "../db/open-database.js";
import { toPythonIso } from "../db/python-time.js";
import { addUsages, type NewUsage } from "../db/usage-outbox.js";
import { writeTransaction } from "../db/write-transaction.js";
import type { Metrics } from "../telemetry.js";
import { relativeToLoraDir } from "./cache-layout.js";
import { isIntact } from "./cached-copy.js";
import type { FetchedLora, LoraFetcher } from "./fetch-lora.js";
import { downloadItemError, errorResult, internalItem, notFoundItem, registryFailure } from "./item-errors.js";
import { type LoraKey, keyString, referenceOf } from "./lora-key.js";
import type { Pins } from "./pins.js";
import { isDeleted } from "./register.js";
import { type Resolution, type ResolveDeps, resolveAll, revalidation } from "./resolve.js";
import type { SpaceManager } from "./space-manager.js";

export interface EnsureDeps extends ResolveDeps {
  db: Db;
  loraDir: string;
  clock: Clock;
  metrics: Metrics;
  /** A hit not confirmed by the registry for this long is checked again. */
  revalidateAfterMs: number;
  /** How long a hit waits for that check before the cached copy is served unchecked. */
  revalidateBudgetMs: number;
  /** LoRAs of one request downloaded at once. */
  concurrency: number;
  pins: Pins;
  space: SpaceManager;
  fetcher: LoraFetcher;
}

/** One job's request, validated. */
export interface EnsureInput {
  jobId: string;
  /** The job's user ("" when the request names only shared LoRAs). */
  userId: string;
  workflowId: string;
  workflowName: string;
  keys: LoraKey[];
  /** What is left of the caller's deadline when the request arrived (ms); undefined: none. */
  timeoutMs?: number;
  /** Told each reference's progress (EnsureLorasWithProgress); must not throw. */
  onProgress?: (progress: LoraProgress) => void;
}

/** The positions in a batch that name one reference. */
interface Group {
  key: LoraKey;
  indices: number[];
}

interface CachedGroup extends Group {
  row: LoraFileRow;
}

interface FetchGroup extends Group {
  lora: ResolvedLora;
}

/** Makes every referenced LoRA present; each reference succeeds or fails on its own. */
export function ensureBatch(deps: EnsureDeps, input: EnsureInput): Promise<EnsuredLora[]> {
  return tracer().startActiveSpan("machine-cache.ensure", async (span) => {
    const batch = new Batch(deps, input);
    try {
      span.setAttributes({ "job.id": input.jobId, "lora.refs": input.keys.length });
      const answered = await batch.run();
      span.setAttributes({ "lora.hits": answered.filter((r) => r.cacheHit).length });
      return answered;
    } finally {
      batch.unpin();
      span.end();
    }
  });
}

/**
 * One EnsureLoras: classifies each distinct reference as a hit, a copy to
 * check again (stale) or a miss, asks the registry once about the stale
 * and missing ones, answers the hits, fetches the rest, and records each
 * use with its answer.
 */
class Batch {
  private readonly started = performance.now();
  private readonly results: (EnsuredLora | undefined)[];
  private readonly unpins: (() => void)[] = [];
  /** The last progress told of each reference (by keyString), whose bytes later phases keep. */
  private readonly told = new Map<string, LoraProgress>();

  constructor(
    private readonly deps: EnsureDeps,
    private readonly input: EnsureInput,
  ) {
    this.results = new Array<EnsuredLora | undefined>(input.keys.length);
  }

  async run(): Promise<EnsuredLora[]> {
    const { hits, stale, misses } = await this.classify();
    const toFetch: FetchGroup[] = [];
    for (const g of [...stale, ...misses]) this.tell(g, LoraPhase.RESOLVING);
    if (stale.length > 0 || misses.length > 0) await this.resolve(stale, misses, hits, toFetch);
    await this.answerHits(hits);
    await this.fetchAll(toFetch.sort((a, b) => (a.indices[0] as number) - (b.indices[0] as number)));
    return this.results.map((r, i) => r ?? errorResult(this.input.keys[i] as LoraKey, internalItem("no outcome"), 0));
  }

  unpin(): void {
    for (const unpin of this.unpins) unpin();
  }

  private async classify(): Promise<{ hits: CachedGroup[]; stale: CachedGroup[]; misses: Group[] }> {
    const { db, pins, space, clock, revalidateAfterMs } = this.deps;
    const groups = new Map<string, Group>();
    for (const [i, key] of this.input.keys.entries()) {
      const group = groups.get(keyString(key)) ?? { key, indices: [] };
      group.indices.push(i);
      groups.set(keyString(key), group);
    }
    // Pinned inside the space lock: no eviction decision can be half-way through these files.
    const found = await space.exclusiveSync(() =>
      [...groups.values()].map((group) => {
        const row = findLoraFile(db, group.key);
        if (row) this.unpins.push(pins.pin([row.path]));
        return { group, row };
      }),
    );
    const hits: CachedGroup[] = [];
    const stale: CachedGroup[] = [];
    const misses: Group[] = [];
    const intact = found.map(({ row }) => row && isIntact(db, row));
    const nowMs = clock.now().getTime();
    for (const [k, { group, row }] of found.entries()) {
      if (!row || !intact[k]) misses.push(group);
      else if (nowMs - row.validated_at_ms >= revalidateAfterMs) stale.push({ ...group, row });
      else hits.push({ ...group, row });
    }
    return { hits, stale, misses };
  }

  /**
   * One registry call: the stale copies' verdicts and the misses'
   * resolutions, within the caller's deadline. Stale copies wait for it at
   * most the revalidation budget; then they are served unchecked (a late
   * answer still evicts a copy found deleted or changed) while the misses
   * wait on.
   */
  private async resolve(stale: CachedGroup[], misses: Group[], hits: CachedGroup[], toFetch: FetchGroup[]) {
    const { logger, revalidateBudgetMs } = this.deps;
    const keys = [...stale, ...misses].map((g) => g.key);
    const call = resolveAll(this.deps, this.input, keys, misses.length > 0, { timeoutMs: this.remainingMs() }).then(
      (resolutions) => ({ resolutions }),
      (err: unknown) => ({ err }),
    );
    let answer: Awaited<typeof call> | undefined;
    if (stale.length > 0) {
      let budget: NodeJS.Timeout | undefined;
      answer = await Promise.race([
        call,
        new Promise<undefined>((resolve) => (budget = setTimeout(() => resolve(undefined), revalidateBudgetMs))),
      ]);
      clearTimeout(budget);
      if (!answer) {
        await this.serveUnchecked(stale, hits, "late", "the registry did not answer within the revalidation budget");
        void call.then((late) => this.lateVerdicts(stale, late));
        if (misses.length === 0) return;
      }
    }
    const checkedStale = answer ? stale : [];
    answer ??= await call;
    if ("err" in answer) {
      const { err } = answer;
      await this.serveUnchecked(checkedStale, hits, "unavailable", "registry unreachable", err);
      if (misses.length > 0) {
        logger.warn({ err }, "the registry did not resolve uncached LoRAs");
        for (const g of misses) await this.answerError(g, registryFailure(err));
      }
      return;
    }
    const { resolutions } = answer;
    for (const [k, g] of checkedStale.entries()) await this.revalidate(g, resolutions[k] as Resolution, hits, toFetch);
    for (const [k, g] of misses.entries()) {
      const resolution = resolutions[stale.length + k] as Resolution;
      if (resolution.case === "lora") toFetch.push({ ...g, lora: resolution.value });
      else await this.answerError(g, resolution.value);
    }
  }

  /**
   * Copies the registry could not check (in time) are served as they are:
   * each was valid when last checked, and deletions also arrive through NATS.
   * A copy whose deletion did arrive (a tombstone) is evicted and NOT_FOUND.
   */
  private async serveUnchecked(
    stale: CachedGroup[],
    hits: CachedGroup[],
    outcome: "late" | "unavailable",
    why: string,
    err?: unknown,
  ): Promise<void> {
    if (stale.length === 0) return;
    const { db, metrics, logger, space } = this.deps;
    for (const g of stale) {
      if (isDeleted(db, g.key)) {
        metrics.revalidations.add(1, { outcome: "gone" });
        await space.evict(g.row, "invalidation", { tombstone: true });
        await this.answerError(g, notFoundItem(g.key), g.row.path);
      } else {
        metrics.revalidations.add(1, { outcome });
        hits.push(g);
      }
    }
    logger.warn({ err, refs: stale.length, outcome }, `${why}; serving cached LoRAs unchecked`);
  }

  /** The registry's answer about copies already served unchecked: deleted or changed ones go now. */
  private async lateVerdicts(stale: CachedGroup[], late: { resolutions: Resolution[] } | { err: unknown }) {
    if ("err" in late) return;
    const { db, clock, logger, space } = this.deps;
    try {
      for (const [k, g] of stale.entries()) {
        const checked = revalidation(g.row, late.resolutions[k] as Resolution);
        if (checked.verdict === "valid") {
          await writeTransaction(db, () => markValidated(db, g.row.path, clock.now().getTime()));
        } else if (checked.verdict === "gone" || checked.verdict === "changed") {
          await space.evict(g.row, "invalidation", { late_revalidation: checked.verdict });
        }
      }
    } catch (err) {
      logger.warn({ err }, "a late registry answer about cached LoRAs could not be applied");
    }
  }

  /** The caller's deadline left for a registry call (undefined: none). */
  private remainingMs(): number | undefined {
    const { timeoutMs } = this.input;
    return timeoutMs === undefined ? undefined : timeoutMs - (performance.now() - this.started);
  }

  private async revalidate(g: CachedGroup, resolution: Resolution, hits: CachedGroup[], toFetch: FetchGroup[]) {
    const { db, clock, metrics, logger, space } = this.deps;
    const checked = revalidation(g.row, resolution);
    metrics.revalidations.add(1, { outcome: checked.verdict });
    switch (checked.verdict) {
      case "valid":
        await writeTransaction(db, () => markValidated(db, g.row.path, clock.now().getTime()));
        hits.push(g);
        return;
      case "changed":
        await space.evict(g.row, "invalidation", { changed: true });
        toFetch.push({ key: g.key, indices: g.indices, lora: checked.lora });
        return;
      case "gone":
        await space.evict(g.row, "invalidation", { missed_event: true });
        await this.answerError(g, checked.error, g.row.path);
        return;
      case "unavailable":
        logger.warn({ path: g.row.path, error: checked.error }, "registry could not check a cached LoRA; serving it");
        hits.push(g);
    }
  }

  private async answerHits(hits: CachedGroup[]): Promise<void> {
    if (hits.length === 0) return;
    await this.answerPresent(
      hits.map(({ row, ...g }) => {
        const { path, size_bytes: sizeBytes, sha256 } = row;
        return { g, file: { path, sizeBytes, sha256, bytesDownloaded: 0, attempts: 0, resumed: false, present: true } };
      }),
    );
  }

  private async fetchAll(groups: FetchGroup[]): Promise<void> {
    const { fetcher, pins } = this.deps;
    const limit = pLimit(this.deps.concurrency);
    const who = { jobId: this.input.jobId, userId: this.input.userId };
    await Promise.all(
      groups.map(async (g) => {
        this.unpins.push(pins.pin([fetcher.targetPath(g.key, g.lora)]));
        let file: FetchedLora;
        try {
          file = await limit(() =>
            fetcher.fetch(
              g.key,
              g.lora,
              who,
              this.input.onProgress &&
                ((p, joined) =>
                  this.tell(g, p.phase === "verifying" ? LoraPhase.VERIFYING : LoraPhase.DOWNLOADING, {
                    bytesDone: BigInt(p.bytesDone),
                    totalBytes: BigInt(p.totalBytes),
                    attempt: p.attempt,
                    joined,
                  })),
            ),
          );
        } catch (err) {
          await this.answerError(g, downloadItemError(err));
          return;
        }
        await this.answerPresent([{ g, file }]);
      }),
    );
  }

  /**
   * A hit when the file was present (`present`), a miss when it was fetched:
   * one answer per position. The use (last_used, use_count), the hit or miss
   * events and the usage row for the registry are written in one transaction.
   */
  private async answerPresent(answers: { g: Group; file: FetchedLora }[]): Promise<void> {
    const { db, clock, metrics } = this.deps;
    const now = clock.now();
    const atMs = now.getTime();
    const usages = answers.flatMap(({ g }) => this.usageOf(g.key, atMs));
    await writeTransaction(db, () => {
      for (const { g, file } of answers) {
        touchModel(db, file.path, toPythonIso(now));
        const kind = file.present ? "hit" : "miss";
        for (const _ of g.indices) recordEvent(db, { kind, atMs, path: file.path });
      }
      addUsages(db, usages);
    });
    for (const { g, file } of answers) {
      for (const [n, i] of g.indices.entries()) {
        metrics.refs.add(1, { outcome: file.present ? "hit" : "miss" });
        // Bytes and attempts belong to the first reference; duplicates rode along.
        const first = n === 0;
        this.results[i] = create(EnsuredLoraSchema, {
          ref: referenceOf(this.input.keys[i] as LoraKey),
          path: relativeToLoraDir(this.deps.loraDir, file.path) ?? "",
          absolutePath: file.path,
          cacheHit: file.present,
          sizeBytes: BigInt(file.sizeBytes),
          bytesDownloaded: BigInt(first ? file.bytesDownloaded : 0),
          attempts: first ? file.attempts : 0,
          resumed: first && file.resumed,
          sha256: file.sha256,
          elapsedMs: this.elapsed(),
        });
      }
      const size = BigInt(file.sizeBytes);
      this.tell(g, LoraPhase.READY, { bytesDone: size, totalBytes: size });
    }
  }

  /** Every position of the reference fails with `error`: a miss in the statistics. */
  private async answerError(g: Group, error: ItemError, path?: string): Promise<void> {
    const { db, clock, metrics } = this.deps;
    const atMs = clock.now().getTime();
    await writeTransaction(db, () => {
      for (const _ of g.indices) recordEvent(db, { kind: "miss", atMs, path });
    });
    for (const i of g.indices) {
      metrics.refs.add(1, { outcome: "error", reason: reasonName(error.reason) });
      this.results[i] = errorResult(g.key, error, this.elapsed());
    }
    this.tell(g, LoraPhase.ERROR, { error });
  }

  /** Tells the caller where a reference is now; fields not given keep their last value. */
  private tell(
    g: Group,
    phase: LoraPhase,
    fields: Partial<Pick<LoraProgress, "bytesDone" | "totalBytes" | "attempt" | "joined" | "error">> = {},
  ): void {
    const { onProgress } = this.input;
    if (!onProgress) return;
    const id = keyString(g.key);
    const last = this.told.get(id);
    const progress = create(LoraProgressSchema, {
      ref: referenceOf(g.key),
      indices: g.indices,
      phase,
      bytesDone: last?.bytesDone ?? 0n,
      totalBytes: last?.totalBytes ?? 0n,
      attempt: last?.attempt ?? 0,
      joined: last?.joined ?? false,
      ...fields,
    });
    this.told.set(id, progress);
    onProgress(progress);
  }

  /** The usage of a user LoRA by this job, for the registry's usage counts (one per distinct reference). */
  private usageOf(key: LoraKey, atMs: number): NewUsage[] {
    if (key.source !== "user") return [];
    const { input } = this;
    return [
      {
        lora_id: key.identifier,
        user_id: key.userId,
        job_id: input.jobId,
        workflow_id: input.workflowId,
        workflow_name: input.workflowName,
        used_at_ms: atMs,
      },
    ];
  }

  private elapsed(): number {
    return performance.now() - this.started;
  }
}

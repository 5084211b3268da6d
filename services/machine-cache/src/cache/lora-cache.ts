import fs from "node:fs/promises";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { create } from "@bufbuild/protobuf";
import { type Client, Code, ConnectError } from "@connectrpc/connect";
import {
  type EnsuredLora,
  EnsuredLoraSchema,
  ErrorReason,
  type ItemError,
  type LoraResolverService,
  type ResolvedLora,
  reasonName,
} from "@emprops/contracts";
import {
  type Clock,
  fromItemError,
  type Logger,
  recordSpanError,
  RepeatedFailures,
  rpcError,
  toItemError,
  tracer,
} from "@emprops/platform";
import pLimit from "p-limit";
import { AbortError } from "p-retry";
import type { Dispatcher } from "undici";
import type { DownloadConfig } from "../config.js";
import { recordEvent } from "../db/cache-events.js";
import { findLoraFile, findLoraFileByPath, type LoraFileRow, markValidated, upsertLoraFile } from "../db/lora-files.js";
import { getModel, registerModel, SHARED_LORA, touchModel, USER_LORA } from "../db/models.js";
import type { Db } from "../db/open-database.js";
import { toPythonIso } from "../db/python-time.js";
import { isTombstoned } from "../db/tombstones.js";
import { addUsages, type NewUsage } from "../db/usage-outbox.js";
import { DownloadError, downloadFile } from "../download/download-file.js";
import { SingleFlight } from "../download/singleflight.js";
import { type Metrics, sizeBucket } from "../telemetry.js";
import { absoluteInLoraDir, relativeToLoraDir, sharedLoraRelPath, userLoraRelPath } from "./cache-layout.js";
import { Evictor } from "./evictor.js";
import { extensionOf, type LoraKey, keyString, referenceOf } from "./lora-key.js";
import { Pins } from "./pins.js";
import { SpaceManager } from "./space-manager.js";

export interface LoraCacheDeps {
  db: Db;
  loraDir: string;
  machineId: string;
  download: DownloadConfig;
  revalidateAfterMs: number;
  warmMaxEvictPercent: number;
  resolver: Client<typeof LoraResolverService>;
  dispatcher: Dispatcher;
  clock: Clock;
  logger: Logger;
  metrics: Metrics;
}

/** One job's request, validated. */
export interface EnsureInput {
  jobId: string;
  /** The job's user ("" when the request names only shared LoRAs). */
  userId: string;
  workflowId: string;
  workflowName: string;
  keys: LoraKey[];
}

/** A file made present by fetch(). */
export interface FetchOutcome {
  path: string;
  sizeBytes: number;
  sha256: string;
  bytesDownloaded: number;
  attempts: number;
  resumed: boolean;
  /** Another request had just finished it: nothing was downloaded. */
  present: boolean;
  /** This caller waited for a download another caller started. */
  joined: boolean;
}

/** Who a fetch is for: the job (for the registry's access check and audit) and whether it is warming. */
export interface FetchContext {
  jobId: string;
  userId: string;
  forWarm?: boolean;
}

/**
 * The node's LoRA cache: answers hits from SQLite and disk, resolves misses
 * through the registry (its access check keyed by the job's user), makes
 * room, downloads each file once however many callers wait for it, and
 * registers it in model_cache.db.
 */
export class LoraCache {
  readonly pins = new Pins();
  readonly downloads = new SingleFlight<Omit<FetchOutcome, "joined">>();
  readonly evictor: Evictor;
  readonly space: SpaceManager;
  private readonly stopping = new AbortController();
  /** Consecutive download failures per LoRA: a warning and a gauge for alerts. */
  private readonly failures: RepeatedFailures;
  private activeBatches = 0;
  private idleWaiters: (() => void)[] = [];

  constructor(private readonly deps: LoraCacheDeps) {
    this.failures = new RepeatedFailures({ name: "machine_cache.download", what: "download", logger: deps.logger });
    this.evictor = new Evictor(deps);
    this.space = new SpaceManager({
      db: deps.db,
      loraDir: deps.loraDir,
      evictor: this.evictor,
      clock: deps.clock,
      logger: deps.logger,
      busy: (p) => this.pins.has(p) || this.downloads.has(p),
      warmMaxEvictPercent: deps.warmMaxEvictPercent,
    });
  }

  /** Makes every referenced LoRA present; each reference succeeds or fails on its own. */
  ensure(input: EnsureInput): Promise<EnsuredLora[]> {
    return tracer().startActiveSpan("machine-cache.ensure", async (span) => {
      const started = performance.now();
      const elapsed = () => performance.now() - started;
      this.activeBatches++;
      const unpins: (() => void)[] = [];
      try {
        span.setAttributes({ "job.id": input.jobId, "lora.refs": input.keys.length });
        const results = new Array<EnsuredLora | undefined>(input.keys.length);
        // Pinned inside the space lock: no eviction decision can be half-way through these files.
        const local = await this.space.exclusive(async () =>
          input.keys.map((key) => {
            const row = findLoraFile(this.deps.db, key);
            if (row) unpins.push(this.pins.pin([row.path]));
            return row;
          }),
        );
        const hits: { i: number; row: LoraFileRow }[] = [];
        const stale: { i: number; row: LoraFileRow }[] = [];
        const misses: number[] = [];
        const nowMs = this.deps.clock.now().getTime();
        await Promise.all(
          local.map(async (row, i) => {
            if (!row || !(await this.intact(row))) misses.push(i);
            else if (nowMs - row.validated_at_ms >= this.deps.revalidateAfterMs) stale.push({ i, row });
            else hits.push({ i, row });
          }),
        );
        if (stale.length > 0) await this.revalidate(input, stale, hits, misses, results, elapsed);
        this.answerHits(input, hits, results, elapsed);
        if (misses.length > 0)
          await this.fetchMisses(
            input,
            misses.sort((a, b) => a - b),
            results,
            unpins,
            elapsed,
          );
        const answered = results.map((r, i) => r ?? this.failure(input.keys[i] as LoraKey, internal("no outcome")));
        this.recordUsage(input, answered);
        span.setAttributes({ "lora.hits": answered.filter((r) => r.cacheHit).length });
        return answered;
      } finally {
        for (const unpin of unpins) unpin();
        this.activeBatches--;
        if (this.activeBatches === 0) for (const wake of this.idleWaiters.splice(0)) wake();
        span.end();
      }
    });
  }

  /** The cached copy of a reference when its file is intact; no network call. */
  async cachedCopy(key: LoraKey): Promise<LoraFileRow | undefined> {
    const row = findLoraFile(this.deps.db, key);
    return row && (await this.intact(row)) ? row : undefined;
  }

  /**
   * Makes one resolved LoRA present: one download per file however many
   * callers ask at once.
   */
  async fetch(key: LoraKey, lora: ResolvedLora, ctx: FetchContext): Promise<FetchOutcome> {
    const target = this.targetPath(key, lora);
    const { promise, joined } = this.downloads.run(target, () => this.download(key, lora, target, ctx));
    const outcome = await promise;
    return joined ? { ...outcome, bytesDownloaded: 0, attempts: 0, resumed: false, joined } : { ...outcome, joined };
  }

  /** Resolves when no EnsureLoras is in progress (warming runs then). */
  whenIdle(): Promise<void> {
    if (this.activeBatches === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Cancels downloads in flight (their partial files stay for a resume) and waits for them. */
  async stop(): Promise<void> {
    this.stopping.abort();
    await this.downloads.settled();
  }

  private async revalidate(
    input: EnsureInput,
    stale: { i: number; row: LoraFileRow }[],
    hits: { i: number; row: LoraFileRow }[],
    misses: number[],
    results: (EnsuredLora | undefined)[],
    elapsed: () => number,
  ): Promise<void> {
    const { resolver, metrics, logger, db, clock } = this.deps;
    let answer;
    try {
      answer = await resolver.resolveLoras({
        userId: input.userId,
        jobId: input.jobId,
        machineId: this.deps.machineId,
        refs: stale.map((s) => referenceOf(input.keys[s.i] as LoraKey)),
        skipDownloadUrls: true,
      });
    } catch (err) {
      // The copy on disk was valid when last checked, and deletions also arrive through NATS: serve it.
      metrics.revalidations.add(stale.length, { outcome: "unavailable" });
      logger.warn({ err, refs: stale.length }, "registry unreachable; serving cached LoRAs unchecked");
      hits.push(...stale);
      return;
    }
    for (const [k, s] of stale.entries()) {
      const outcome = answer.results[k]?.outcome;
      if (outcome?.case === "lora") {
        const lora = outcome.value;
        const same =
          Number(lora.sizeBytes) === s.row.size_bytes && (!lora.sha256 || lora.sha256.toLowerCase() === s.row.sha256);
        if (same) {
          markValidated(db, s.row.path, clock.now().getTime());
          metrics.revalidations.add(1, { outcome: "valid" });
          hits.push(s);
        } else {
          metrics.revalidations.add(1, { outcome: "changed" });
          await this.space.exclusive(() => this.evictor.evict(s.row, "invalidation", { changed: true }));
          misses.push(s.i);
        }
      } else if (outcome?.case === "error" && outcome.value.reason === ErrorReason.LORA_NOT_FOUND) {
        metrics.revalidations.add(1, { outcome: "gone" });
        await this.space.exclusive(() => this.evictor.evict(s.row, "invalidation", { missed_event: true }));
        recordEvent(db, { kind: "miss", atMs: clock.now().getTime(), path: s.row.path });
        results[s.i] = this.failure(input.keys[s.i] as LoraKey, outcome.value, elapsed());
      } else {
        metrics.revalidations.add(1, { outcome: "unavailable" });
        logger.warn({ path: s.row.path, error: outcome?.value }, "registry could not check a cached LoRA; serving it");
        hits.push(s);
      }
    }
  }

  private answerHits(
    input: EnsureInput,
    hits: { i: number; row: LoraFileRow }[],
    results: (EnsuredLora | undefined)[],
    elapsed: () => number,
  ): void {
    if (hits.length === 0) return;
    const { db, clock, metrics } = this.deps;
    const now = clock.now();
    const touched = new Set<string>();
    db.transaction(() => {
      for (const { row } of hits) {
        recordEvent(db, { kind: "hit", atMs: now.getTime(), path: row.path });
        if (!touched.has(row.path)) touchModel(db, row.path, toPythonIso(now));
        touched.add(row.path);
      }
    }).immediate();
    for (const { i, row } of hits) {
      metrics.refs.add(1, { outcome: "hit" });
      results[i] = create(EnsuredLoraSchema, {
        ref: referenceOf(input.keys[i] as LoraKey),
        path: this.relative(row.path),
        cacheHit: true,
        sizeBytes: BigInt(row.size_bytes),
        sha256: row.sha256,
        elapsedMs: elapsed(),
      });
    }
  }

  private async fetchMisses(
    input: EnsureInput,
    misses: number[],
    results: (EnsuredLora | undefined)[],
    unpins: (() => void)[],
    elapsed: () => number,
  ): Promise<void> {
    const { resolver, logger } = this.deps;
    const distinct = new Map<string, { key: LoraKey; indices: number[] }>();
    for (const i of misses) {
      const key = input.keys[i] as LoraKey;
      const entry = distinct.get(keyString(key)) ?? { key, indices: [] };
      entry.indices.push(i);
      distinct.set(keyString(key), entry);
    }
    const groups = [...distinct.values()];
    let answer;
    try {
      answer = await resolver.resolveLoras({
        userId: input.userId,
        jobId: input.jobId,
        machineId: this.deps.machineId,
        refs: groups.map((g) => referenceOf(g.key)),
      });
    } catch (err) {
      logger.warn({ err }, "the registry did not resolve uncached LoRAs");
      for (const g of groups) this.fail(g, registryFailure(err), results, elapsed);
      return;
    }
    const limit = pLimit(this.deps.download.concurrency);
    await Promise.all(
      groups.map(async (g, k) => {
        const outcome = answer.results[k]?.outcome;
        if (outcome?.case !== "lora") {
          this.fail(
            g,
            outcome?.case === "error" ? outcome.value : internal("the registry gave no result"),
            results,
            elapsed,
          );
          return;
        }
        const lora = outcome.value;
        if (
          g.key.source === "user" &&
          (lora.userId.toLowerCase() !== g.key.userId || lora.loraId !== g.key.identifier)
        ) {
          logger.error(
            { asked: g.key, got: { user_id: lora.userId, lora_id: lora.loraId } },
            "registry answered another LoRA",
          );
          this.fail(g, notFoundItem(g.key), results, elapsed);
          return;
        }
        unpins.push(this.pins.pin([this.targetPath(g.key, lora)]));
        try {
          const got = await limit(() => this.fetch(g.key, lora, { jobId: input.jobId, userId: input.userId }));
          this.succeed(input, g, got, results, elapsed);
        } catch (err) {
          this.fail(g, downloadItemError(err), results, elapsed);
        }
      }),
    );
  }

  private succeed(
    input: EnsureInput,
    g: { key: LoraKey; indices: number[] },
    got: FetchOutcome,
    results: (EnsuredLora | undefined)[],
    elapsed: () => number,
  ): void {
    const { db, clock, metrics } = this.deps;
    const now = clock.now();
    db.transaction(() => {
      touchModel(db, got.path, toPythonIso(now));
      for (const _ of g.indices) {
        recordEvent(db, { kind: got.present ? "hit" : "miss", atMs: now.getTime(), path: got.path });
      }
    }).immediate();
    for (const [n, i] of g.indices.entries()) {
      metrics.refs.add(1, { outcome: got.present ? "hit" : "miss" });
      // Bytes and attempts belong to the first reference; duplicates rode along.
      const first = n === 0;
      results[i] = create(EnsuredLoraSchema, {
        ref: referenceOf(input.keys[i] as LoraKey),
        path: this.relative(got.path),
        cacheHit: got.present,
        sizeBytes: BigInt(got.sizeBytes),
        bytesDownloaded: BigInt(first ? got.bytesDownloaded : 0),
        attempts: first ? got.attempts : 0,
        resumed: first && got.resumed,
        sha256: got.sha256,
        elapsedMs: elapsed(),
      });
    }
  }

  private fail(
    g: { key: LoraKey; indices: number[] },
    error: ItemError,
    results: (EnsuredLora | undefined)[],
    elapsed: () => number,
  ): void {
    const { db, clock, metrics } = this.deps;
    for (const i of g.indices) {
      recordEvent(db, { kind: "miss", atMs: clock.now().getTime() });
      metrics.refs.add(1, { outcome: "error", reason: reasonName(error.reason) });
      results[i] = this.failure(g.key, error, elapsed());
    }
  }

  private failure(key: LoraKey, error: ItemError, elapsedMs = 0): EnsuredLora {
    return create(EnsuredLoraSchema, { ref: referenceOf(key), error, elapsedMs });
  }

  /** One usage per user LoRA and job, for the registry's usage counts. */
  private recordUsage(input: EnsureInput, answered: EnsuredLora[]): void {
    const seen = new Set<string>();
    const usages: NewUsage[] = [];
    const at = this.deps.clock.now().getTime();
    for (const [i, r] of answered.entries()) {
      const key = input.keys[i] as LoraKey;
      if (r.error || key.source !== "user" || seen.has(keyString(key))) continue;
      seen.add(keyString(key));
      usages.push({
        lora_id: key.identifier,
        user_id: key.userId,
        job_id: input.jobId,
        workflow_id: input.workflowId,
        workflow_name: input.workflowName,
        used_at_ms: at,
      });
    }
    if (usages.length > 0) addUsages(this.deps.db, usages);
  }

  private download(
    key: LoraKey,
    lora: ResolvedLora,
    target: string,
    ctx: FetchContext,
  ): Promise<Omit<FetchOutcome, "joined">> {
    const { db, clock, logger, metrics } = this.deps;
    return tracer().startActiveSpan("machine-cache.download", async (span) => {
      const started = performance.now();
      const sizeBytes = Number(lora.sizeBytes);
      const labels = { "lora.source": key.source, "lora.size_bucket": sizeBucket(sizeBytes) };
      span.setAttributes({
        "lora.path": target,
        "lora.size_bytes": sizeBytes,
        "lora.warm": !!ctx.forWarm,
        "lora.source": key.source,
        "lora.identifier": key.identifier,
      });
      try {
        const ready = await this.presentCopy(key, lora, target);
        if (ready) return ready;
        if (key.source === "user" && isTombstoned(db, key.userId, key.identifier)) throw notFound(key);
        const reservation = await this.space.reserve({
          path: target,
          sizeBytes,
          userLora: key.source === "user",
          maxEvictBytes: ctx.forWarm ? this.space.warmEvictBudget() : undefined,
        });
        try {
          const result = await downloadFile(
            {
              finalPath: target,
              sizeBytes,
              sha256: lora.sha256.toLowerCase(),
              url: (refresh) => (refresh ? this.freshUrl(key, ctx) : Promise.resolve(lora.downloadUrl)),
              signal: this.stopping.signal,
            },
            this.deps.download,
            { dispatcher: this.deps.dispatcher, logger },
          );
          const now = clock.now();
          // Checked in the registering transaction: a deletion either precedes it (discard) or evicts the row.
          const deleted = db
            .transaction(() => {
              if (key.source === "user" && isTombstoned(db, key.userId, key.identifier)) return true;
              registerModel(db, {
                path: target,
                modelType: key.source === "user" ? USER_LORA : SHARED_LORA,
                filename: path.basename(target),
                sizeBytes,
                now: toPythonIso(now),
                useCount: 0,
              });
              upsertLoraFile(db, {
                path: target,
                source: key.source,
                identifier: key.identifier,
                user_id: key.userId,
                file_name: lora.fileName,
                sha256: result.sha256,
                size_bytes: sizeBytes,
                validated_at_ms: now.getTime(),
              });
              recordEvent(db, { kind: "download", atMs: now.getTime(), bytes: result.bytesDownloaded, path: target });
              return false;
            })
            .immediate();
          if (deleted) {
            await fs.rm(target, { force: true });
            throw notFound(key);
          }
          const ms = performance.now() - started;
          metrics.downloads.add(1, { outcome: "ok", ...labels });
          metrics.downloadedBytes.add(result.bytesDownloaded, { "lora.source": key.source });
          metrics.downloadDuration.record(ms, labels);
          this.failures.succeeded(keyString(key));
          span.setAttributes({
            "lora.outcome": "ok",
            "lora.bytes_downloaded": result.bytesDownloaded,
            "lora.attempts": result.attempts,
            "lora.resumed": result.resumed,
            "lora.duration_ms": Math.round(ms),
          });
          logger.info(
            {
              path: this.relative(target),
              size_bytes: sizeBytes,
              bytes_downloaded: result.bytesDownloaded,
              attempts: result.attempts,
              resumed: result.resumed,
              ms: Math.round(ms),
              warm: !!ctx.forWarm,
            },
            "downloaded LoRA",
          );
          return {
            path: target,
            sizeBytes,
            sha256: result.sha256,
            bytesDownloaded: result.bytesDownloaded,
            attempts: result.attempts,
            resumed: result.resumed,
            present: false,
          };
        } finally {
          reservation.release();
        }
      } catch (err) {
        const outcome = err instanceof DownloadError ? err.kind : reasonOf(err);
        metrics.downloads.add(1, { outcome, ...labels });
        span.setAttributes({
          "lora.outcome": outcome,
          "lora.duration_ms": Math.round(performance.now() - started),
          ...(err instanceof DownloadError ? { "lora.attempts": err.attempts } : {}),
        });
        // A file that cannot be fetched (not a missing LoRA, a full disk or a shutdown) is what operators chase.
        if (err instanceof DownloadError && err.kind !== "aborted" && err.kind !== "not_found") {
          this.failures.failed(keyString(key), { ...labels, reason: err.kind }, err);
          recordSpanError(span, err);
        }
        throw err;
      } finally {
        span.end();
      }
    });
  }

  /**
   * The target when another request finished it just before this flight
   * started; a broken or outdated copy of the same reference is removed.
   */
  private async presentCopy(
    key: LoraKey,
    lora: ResolvedLora,
    target: string,
  ): Promise<Omit<FetchOutcome, "joined"> | undefined> {
    const { db } = this.deps;
    const atTarget = findLoraFileByPath(db, target);
    const sha = lora.sha256.toLowerCase();
    if (atTarget && (await this.intact(atTarget)) && (!sha || atTarget.sha256 === sha)) {
      return {
        path: target,
        sizeBytes: atTarget.size_bytes,
        sha256: atTarget.sha256,
        bytesDownloaded: 0,
        attempts: 0,
        resumed: false,
        present: true,
      };
    }
    const stale = [atTarget, findLoraFile(db, key)].filter((r): r is LoraFileRow => !!r);
    for (const row of new Map(stale.map((r) => [r.path, r])).values()) {
      await this.space.exclusive(() =>
        this.evictor.evict(
          { path: row.path, size_bytes: getModel(db, row.path)?.size_bytes ?? row.size_bytes },
          "reconcile",
          { replaced_by: target },
        ),
      );
    }
    // A models row the node package made for this path without ours is replaced on registration.
    return undefined;
  }

  /** A fresh read URL after the last one was refused; a LoRA deleted meanwhile stops the download. */
  private async freshUrl(key: LoraKey, ctx: FetchContext): Promise<string> {
    const answer = await this.deps.resolver.resolveLoras({
      userId: key.source === "user" ? key.userId : ctx.userId,
      jobId: ctx.jobId,
      machineId: this.deps.machineId,
      refs: [referenceOf(key)],
    });
    const outcome = answer.results[0]?.outcome;
    if (outcome?.case === "lora" && outcome.value.downloadUrl) return outcome.value.downloadUrl;
    if (outcome?.case === "error") throw new AbortError(fromItemError(outcome.value));
    throw new Error("the registry returned no read URL");
  }

  /** The row, its models row and a file of the recorded size are all there. */
  private async intact(row: LoraFileRow): Promise<boolean> {
    if (!getModel(this.deps.db, row.path)) return false;
    try {
      const stat = await fs.stat(row.path);
      return stat.isFile() && stat.size === row.size_bytes;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
      throw err;
    }
  }

  targetPath(key: LoraKey, lora: ResolvedLora): string {
    const rel =
      key.source === "user"
        ? userLoraRelPath(key.userId, key.identifier, lora.fileName, extensionOf(lora.format))
        : sharedLoraRelPath(key.identifier);
    return absoluteInLoraDir(this.deps.loraDir, rel);
  }

  private relative(absolute: string): string {
    return relativeToLoraDir(this.deps.loraDir, absolute) ?? absolute;
  }
}

/** Codes that mean the registry could not be reached or failed, rather than refused the request. */
const UNREACHABLE = new Set([Code.Unavailable, Code.DeadlineExceeded, Code.Canceled, Code.Unknown, Code.Internal]);

/** A whole ResolveLoras call failed: unreachable becomes DEPENDENCY_UNAVAILABLE, a refusal keeps its reason. */
function registryFailure(err: unknown): ItemError {
  const ce = ConnectError.from(err);
  if (!UNREACHABLE.has(ce.code)) return toItemError(ce);
  return toItemError(
    rpcError(
      Code.Unavailable,
      ErrorReason.DEPENDENCY_UNAVAILABLE,
      `the LoRA registry is not reachable: ${ce.rawMessage}`,
    ),
  );
}

function notFound(key: LoraKey): ConnectError {
  return rpcError(Code.NotFound, ErrorReason.LORA_NOT_FOUND, `LoRA ${key.identifier} not found or access denied`, {
    lora_identifier: key.identifier,
  });
}

function notFoundItem(key: LoraKey): ItemError {
  return toItemError(notFound(key));
}

function internal(message: string): ItemError {
  return toItemError(rpcError(Code.Internal, ErrorReason.UNSPECIFIED, message));
}

function reasonOf(err: unknown): string {
  return err instanceof ConnectError ? Code[err.code] : "error";
}

/** The per-reference error of a failed fetch: the reasons the specification's messages name. */
export function downloadItemError(err: unknown): ItemError {
  if (err instanceof DownloadError) {
    if (err.cause instanceof ConnectError) return toItemError(err.cause);
    const attempts = { attempts: err.attempts };
    switch (err.kind) {
      case "not_found":
        return toItemError(rpcError(Code.NotFound, ErrorReason.BLOB_NOT_FOUND, err.message, attempts));
      case "checksum":
        return toItemError(
          rpcError(
            Code.DataLoss,
            ErrorReason.CHECKSUM_MISMATCH,
            `${err.message} (after ${err.attempts} attempts)`,
            attempts,
          ),
        );
      case "aborted":
        return toItemError(rpcError(Code.Unavailable, ErrorReason.DOWNLOAD_FAILED, err.message, attempts));
      default:
        return toItemError(rpcError(Code.Unavailable, ErrorReason.DOWNLOAD_FAILED, err.message, attempts));
    }
  }
  return toItemError(err);
}

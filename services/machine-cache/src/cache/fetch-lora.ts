import { performance } from "node:perf_hooks";
import type { ResolvedLora } from "@emprops/contracts";
import { type Clock, fromItemError, recordSpanError, RepeatedFailures, tracer } from "@emprops/platform";
import { AbortError } from "p-retry";
import type { Dispatcher } from "undici";
import type { DownloadConfig } from "../config.js";
import { findLoraFile, findLoraFileByPath, type LoraFileRow } from "../db/lora-files.js";
import { getModel } from "../db/models.js";
import type { Db } from "../db/open-database.js";
import { DownloadError, type DownloadResult, downloadFile, type PeerSource } from "../download/download-file.js";
import { PEER_PATH } from "../peer/peer-server.js";
import type { HashPool } from "../download/hash-pool.js";
import { type DownloadProgress, ProgressFanOut } from "../download/progress.js";
import type { SingleFlight } from "../download/singleflight.js";
import { type Metrics, sizeBucket } from "../telemetry.js";
import { absoluteInLoraDir, relativeToLoraDir, sharedLoraRelPath, userLoraRelPath } from "./cache-layout.js";
import { isIntact } from "./cached-copy.js";
import { downloadOutcomeOf, notFound } from "./item-errors.js";
import { extensionOf, type LoraKey, keyString } from "./lora-key.js";
import type { HoldingsRecorder } from "../reporting/holdings-publisher.js";
import { isDeleted, registerDownloaded } from "./register.js";
import { fromSameContent } from "./same-content.js";
import { type Requester, type ResolveDeps, resolveOne } from "./resolve.js";
import type { SpaceManager } from "./space-manager.js";

/** A file made present by one flight. */
export interface FetchedLora {
  /** Absolute path. */
  path: string;
  sizeBytes: number;
  sha256: string;
  bytesDownloaded: number;
  attempts: number;
  resumed: boolean;
  /** Another request had just finished it: nothing was downloaded. */
  present: boolean;
}

/** What one caller of fetch() gets. */
export interface FetchOutcome extends FetchedLora {
  /** This caller waited for a download another caller started. */
  joined: boolean;
}

/** Who a fetch is for (the registry's access check and audit) and whether it is warming. */
export interface FetchContext extends Requester {
  forWarm?: boolean;
}

export interface LoraFetcherDeps extends ResolveDeps {
  db: Db;
  loraDir: string;
  /** Where user LoRAs are cached. */
  userLoraDir: string;
  /** Mode of a user LoRA's file once downloaded. */
  userLoraFileMode: number;
  download: DownloadConfig;
  dispatcher: Dispatcher;
  /** The threads that hash downloads while they arrive. */
  hashes: HashPool;
  clock: Clock;
  metrics: Metrics;
  space: SpaceManager;
  /** One flight per target path; the space manager leaves their files alone. */
  downloads: SingleFlight<FetchedLora>;
  /** Told of every registered download. */
  holdings: HoldingsRecorder;
  /** Fetch from the peers a resolution offers before its blob URL. */
  peerFetch: boolean;
}

/** The peers ResolveLoras offered for this file, as download sources. */
function peerSources(lora: ResolvedLora): PeerSource[] {
  return lora.peers.map((p) => ({
    machineId: p.machineId,
    url: `http://${p.address}${PEER_PATH}${lora.sha256.toLowerCase()}`,
    headers: { authorization: `Bearer ${p.token}` },
  }));
}

/**
 * Makes resolved LoRAs present: one flight per file however many callers
 * ask at once; the flight reserves its bytes (evicting if needed), downloads
 * and verifies, and registers the file.
 */
export class LoraFetcher {
  private readonly stopping = new AbortController();
  /** Consecutive download failures per LoRA: a warning and a gauge for alerts. */
  private readonly failures: RepeatedFailures;
  /** The progress of each flight, by target path, for every caller waiting on it. */
  private readonly progress = new Map<string, ProgressFanOut>();

  constructor(private readonly deps: LoraFetcherDeps) {
    this.failures = new RepeatedFailures({ name: "machine_cache.download", what: "download", logger: deps.logger });
  }

  /** `onProgress` hears the flight's progress (thinned out), whether this caller started it or joined it. */
  async fetch(
    key: LoraKey,
    lora: ResolvedLora,
    ctx: FetchContext,
    onProgress?: (progress: DownloadProgress, joined: boolean) => void,
  ): Promise<FetchOutcome> {
    const target = this.targetPath(key, lora);
    const { promise, joined } = this.deps.downloads.run(target, () => {
      // Set before run() returns (a flight starts synchronously), so its first caller hears every update too.
      const fanOut = new ProgressFanOut();
      this.progress.set(target, fanOut);
      return this.flight(key, lora, target, ctx, fanOut).finally(() => this.progress.delete(target));
    });
    const unsubscribe = onProgress && this.progress.get(target)?.subscribe((p) => onProgress(p, joined));
    try {
      const outcome = await promise;
      return joined ? { ...outcome, bytesDownloaded: 0, attempts: 0, resumed: false, joined } : { ...outcome, joined };
    } finally {
      unsubscribe?.();
    }
  }

  /** Where a resolved LoRA lives (absolute): the user LoRA directory, or models/loras/shared. */
  targetPath(key: LoraKey, lora: ResolvedLora): string {
    return key.source === "user"
      ? absoluteInLoraDir(
          this.deps.userLoraDir,
          userLoraRelPath(key.userId, key.identifier, lora.fileName, extensionOf(lora.format)),
        )
      : absoluteInLoraDir(this.deps.loraDir, sharedLoraRelPath(key.identifier));
  }

  /** Cancels downloads in flight (their partial files stay for a resume) and waits for them. */
  async stop(): Promise<void> {
    this.stopping.abort();
    await this.deps.downloads.settled();
    await this.deps.hashes.close();
  }

  private flight(
    key: LoraKey,
    lora: ResolvedLora,
    target: string,
    ctx: FetchContext,
    progress: ProgressFanOut,
  ): Promise<FetchedLora> {
    const { db, space, clock } = this.deps;
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
        if (isDeleted(db, key)) throw notFound(key);
        // The same bytes cached under another path (another user's, a shared LoRA's): linked, not downloaded.
        const same = await fromSameContent(this.deps, key, lora, target, { forWarm: ctx.forWarm });
        if (same) {
          span.setAttributes({ "lora.outcome": "same_content" });
          return same;
        }
        const reservation = await space.reserve({
          path: target,
          sizeBytes,
          userLora: key.source === "user",
          maxEvictBytes: ctx.forWarm ? space.warmEvictBudget() : undefined,
        });
        try {
          const result = await downloadFile(
            {
              finalPath: target,
              sizeBytes,
              sha256: lora.sha256.toLowerCase(),
              // A LoRA resolved without a read URL (a cached copy found changed) gets one now.
              url: (refresh) =>
                refresh || !lora.downloadUrl ? this.freshUrl(key, ctx) : Promise.resolve(lora.downloadUrl),
              peers: this.deps.peerFetch ? peerSources(lora) : [],
              onPeerFailure: (peer, reason, err) => {
                this.deps.metrics.peerFailures.add(1, { reason });
                this.deps.logger.warn(
                  { err, peer: peer.machineId, reason, path: target },
                  "peer left for the next source",
                );
              },
              signal: this.stopping.signal,
              onProgress: (p) => progress.update(p),
            },
            this.deps.download,
            { dispatcher: this.deps.dispatcher, logger: this.deps.logger, hashes: this.deps.hashes },
          );
          await registerDownloaded(
            db,
            {
              key,
              path: target,
              fileName: lora.fileName,
              sizeBytes,
              sha256: result.sha256,
              bytesDownloaded: result.bytesDownloaded,
              mode: key.source === "user" ? this.deps.userLoraFileMode : undefined,
            },
            clock.now(),
            this.deps.holdings,
          );
          const ms = performance.now() - started;
          this.recordDownload(key, target, sizeBytes, result, ms, labels, !!ctx.forWarm);
          span.setAttributes({
            "lora.outcome": "ok",
            "lora.bytes_downloaded": result.bytesDownloaded,
            "lora.bytes_from_peers": result.bytesFromPeers,
            "lora.attempts": result.attempts,
            "lora.resumed": result.resumed,
            "lora.duration_ms": Math.round(ms),
          });
          const { sha256, bytesDownloaded, attempts, resumed } = result;
          return { path: target, sizeBytes, sha256, bytesDownloaded, attempts, resumed, present: false };
        } finally {
          reservation.release();
        }
      } catch (err) {
        const outcome = downloadOutcomeOf(err);
        this.deps.metrics.downloads.add(1, { outcome, ...labels });
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

  private recordDownload(
    key: LoraKey,
    target: string,
    sizeBytes: number,
    result: DownloadResult,
    ms: number,
    labels: Record<string, string>,
    warm: boolean,
  ): void {
    const { metrics, logger, loraDir } = this.deps;
    metrics.downloads.add(1, { outcome: "ok", ...labels });
    metrics.downloadedBytes.add(result.bytesFromPeers, { "lora.source": key.source, "download.source": "peer" });
    metrics.downloadedBytes.add(result.bytesDownloaded - result.bytesFromPeers, {
      "lora.source": key.source,
      "download.source": "blob",
    });
    metrics.downloadDuration.record(ms, labels);
    this.failures.succeeded(keyString(key));
    logger.info(
      {
        path: relativeToLoraDir(loraDir, target) ?? target,
        size_bytes: sizeBytes,
        bytes_downloaded: result.bytesDownloaded,
        bytes_from_peers: result.bytesFromPeers,
        attempts: result.attempts,
        resumed: result.resumed,
        connections: result.connections,
        part_bytes: result.partBytes,
        ms: Math.round(ms),
        warm,
      },
      "downloaded LoRA",
    );
  }

  /**
   * The target when another request finished it just before this flight
   * started; a broken or outdated copy of the same reference is removed.
   */
  private async presentCopy(key: LoraKey, lora: ResolvedLora, target: string): Promise<FetchedLora | undefined> {
    const { db, space } = this.deps;
    const atTarget = findLoraFileByPath(db, target);
    const sha = lora.sha256.toLowerCase();
    if (atTarget && isIntact(db, atTarget) && atTarget.sha256 === sha) {
      const { size_bytes: sizeBytes, sha256 } = atTarget;
      return { path: target, sizeBytes, sha256, bytesDownloaded: 0, attempts: 0, resumed: false, present: true };
    }
    const stale = [atTarget, findLoraFile(db, key)].filter((r): r is LoraFileRow => !!r);
    for (const row of new Map(stale.map((r) => [r.path, r])).values()) {
      const sizeBytes = getModel(db, row.path)?.size_bytes ?? row.size_bytes;
      await space.evict({ path: row.path, size_bytes: sizeBytes }, "reconcile", { replaced_by: target });
    }
    // A models row the node package made for this path without ours is replaced on registration.
    return undefined;
  }

  /** A fresh read URL after the last one was refused; a LoRA deleted meanwhile stops the download. */
  private async freshUrl(key: LoraKey, ctx: FetchContext): Promise<string> {
    const who = { jobId: ctx.jobId, userId: key.source === "user" ? key.userId : ctx.userId };
    const resolution = await resolveOne(this.deps, who, key);
    if (resolution.case === "lora" && resolution.value.downloadUrl) return resolution.value.downloadUrl;
    if (resolution.case === "error") throw new AbortError(fromItemError(resolution.value));
    throw new Error("the registry returned no read URL");
  }
}

import fs from "node:fs/promises";
import path from "node:path";
import type { Logger } from "@emprops/platform";
import pRetry, { AbortError } from "p-retry";
import type { Dispatcher } from "undici";
import { PARTIAL_SUFFIX, SIDECAR_SUFFIX } from "../cache/cache-layout.js";
import type { HashPool } from "./hash-pool.js";
import {
  contiguousBytes,
  doneBytes,
  loadPartialState,
  type Part,
  planParts,
  savePartialState,
} from "./partial-state.js";
import { BlobSizeError, fetchRange, HttpStatusError } from "./range-fetch.js";
import type { DownloadProgress } from "./progress.js";
import { type Run, RunPlan } from "./run-plan.js";
import { syncDirectory } from "./sync-directory.js";

export interface DownloadSettings {
  /** Files at least this large are fetched in ranged parts. */
  parallelThresholdBytes: number;
  partSizeBytes: number;
  /** Ranged requests of one file in flight at the same time (connections). */
  partsPerFile: number;
  /** Attempts per file before DOWNLOAD_FAILED (a checksum mismatch counts as one). */
  maxAttempts: number;
  /** First and largest backoff between attempts (exponential, with jitter). */
  retryMinMs: number;
  retryMaxMs: number;
  /** A response that sends nothing for this long is cut and retried. */
  stallTimeoutMs: number;
  /** A peer that sends nothing for this long is left for the next source (default stallTimeoutMs). */
  peerStallTimeoutMs?: number;
  /** Ranged requests of one file in flight to a peer (default partsPerFile; a LAN link needs few). */
  peerConnections?: number;
}

/**
 * Another machine of the pool serving the same file: tried, in order,
 * before the blob URL. Any failure of a peer (a refusal, a stall, a cut, a
 * wrong size) moves on to the next source at once, keeping the bytes that
 * arrived; bytes that fail the sha256 are all discarded and fetched again
 * from the blob alone.
 */
export interface PeerSource {
  /** The serving machine, for logs and telemetry. */
  machineId: string;
  url: string;
  headers: Record<string, string>;
}

/** Why a peer was left for the next source. */
export type PeerFailure = "refused" | "busy" | "not_held" | "slow" | "vanished" | "wrong_size" | "corrupt";

export interface DownloadRequest {
  finalPath: string;
  sizeBytes: number;
  /** Expected lower-case hex sha256; "" when the source has none (the digest is still computed). */
  sha256: string;
  /** A signed read URL; `refresh` is true after the previous one was refused (expired). */
  url: (refresh: boolean) => Promise<string>;
  /** Tried before the blob URL. */
  peers?: PeerSource[];
  /** Told of each peer left for the next source. */
  onPeerFailure?: (peer: PeerSource, reason: PeerFailure, err: unknown) => void;
  signal?: AbortSignal;
  /** Told at the start of each attempt, after each write, and when every byte is there (unthrottled). */
  onProgress?: (progress: DownloadProgress) => void;
}

export interface DownloadResult {
  sha256: string;
  /** Bytes received over the network by this call. */
  bytesDownloaded: number;
  /** Of those, the bytes that came from peers (the rest came from the blob). */
  bytesFromPeers: number;
  attempts: number;
  /** True when bytes already on disk (from an earlier attempt or process) were kept. */
  resumed: boolean;
  /** Most ranged requests in flight at once. */
  connections: number;
  /** Size of the parts the file was planned in (resume granularity). */
  partBytes: number;
}

export type DownloadFailure = "not_found" | "checksum" | "failed" | "aborted";

export class DownloadError extends Error {
  constructor(
    readonly kind: DownloadFailure,
    message: string,
    readonly attempts: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "DownloadError";
  }
}

/** The bytes are not the blob's (size or sha256). */
class ChecksumError extends Error {}

/** The sidecar is rewritten at most this often while parts are in flight. */
const SIDECAR_INTERVAL_MS = 1_000;
/** Written bytes flushed to disk in the background, so the final fsync has little left to wait for. */
const SYNC_EVERY = 64 * 1024 * 1024;

/**
 * Downloads one blob to `finalPath`: ranged GETs in parallel (one stream for
 * small files), each covering a run of parts sized so that early requests
 * are long and the last ones short (few round trips, an even finish),
 * written as they arrive with positional writes into `finalPath.partial`
 * (each connection's next run on the same kept-alive connection); a sidecar records each part's progress so any later
 * attempt or process resumes; sha256 of the bytes in order is computed on a
 * hashing thread while they arrive; retries with exponential backoff and
 * jitter, a fresh URL after a 403; then fsync and an atomic rename. A
 * checksum mismatch discards the bytes and counts as a failed attempt.
 */
export async function downloadFile(
  req: DownloadRequest,
  settings: DownloadSettings,
  deps: { dispatcher: Dispatcher; logger: Logger; hashes: HashPool },
): Promise<DownloadResult> {
  const partialPath = req.finalPath + PARTIAL_SUFFIX;
  const sidecarPath = req.finalPath + SIDECAR_SUFFIX;
  await fs.mkdir(path.dirname(req.finalPath), { recursive: true });

  let parts = await resumableParts(partialPath, sidecarPath, req);
  const file = await fs.open(partialPath, parts ? "r+" : "w+");
  let closed = false;
  if (!parts) {
    await file.truncate(req.sizeBytes);
    parts = planParts(req.sizeBytes, settings.partSizeBytes, settings.parallelThresholdBytes);
  }
  const plan = parts;
  const hash = deps.hashes.begin(partialPath);
  let bytesDownloaded = 0;
  const peers = [...(req.peers ?? [])];
  /** Bytes received from peers, and the peers whose bytes are in the file. */
  let bytesFromPeers = 0;
  const contributors = new Set<PeerSource>();
  let attempts = 0;
  let resumed = false;
  let refreshUrl = false;
  let connections = 0;
  /** Bytes on disk of the current attempt's plan, kept up to date without walking the parts at each write. */
  let bytesDone = 0;
  const report = (phase: DownloadProgress["phase"]) =>
    req.onProgress?.({ phase, bytesDone, totalBytes: req.sizeBytes, attempt: attempts });

  let unsynced = 0;
  let syncing: Promise<void> | undefined;
  let syncFailure: unknown;
  const syncInBackground = () => {
    if (syncing || unsynced < SYNC_EVERY) return;
    unsynced = 0;
    syncing = file
      .datasync()
      .catch((err: unknown) => void (syncFailure ??= err))
      .finally(() => (syncing = undefined));
  };
  let lastSidecar = 0;
  let saving: Promise<void> | undefined;
  const saveSidecar = () =>
    savePartialState(sidecarPath, { version: 1, sizeBytes: req.sizeBytes, sha256: req.sha256, parts: plan });
  const saveSidecarNow = async () => {
    await saving;
    await saveSidecar();
  };
  /** At most one sidecar write at a time, at most once a second, while bytes arrive. */
  const saveSidecarSoon = () => {
    const now = Date.now();
    if (saving || now - lastSidecar < SIDECAR_INTERVAL_MS) return;
    lastSidecar = now;
    saving = saveSidecar()
      .catch((err: unknown) => deps.logger.warn({ err, path: sidecarPath }, "could not save download progress"))
      .finally(() => (saving = undefined));
  };
  // Bytes kept from an earlier process are hashed while the rest arrives.
  hash.advance(contiguousBytes(plan));

  const fetchRun = async (url: URL, peer: PeerSource | undefined, run: Run): Promise<void> => {
    let at = run.from;
    let k = 0;
    await fetchRange(deps.dispatcher, {
      url,
      from: run.from,
      to: run.to,
      blobSize: req.sizeBytes,
      fd: file.fd,
      signal: req.signal,
      stallTimeoutMs: peer ? (settings.peerStallTimeoutMs ?? settings.stallTimeoutMs) : settings.stallTimeoutMs,
      headers: peer?.headers,
      onWritten: (upTo) => {
        bytesDownloaded += upTo - at;
        if (peer) {
          bytesFromPeers += upTo - at;
          contributors.add(peer);
        }
        unsynced += upTo - at;
        bytesDone += upTo - at;
        at = upTo;
        // The parts this run covers, in order: each is done up to `upTo`.
        while (k < run.parts.length) {
          const p = run.parts[k] as Part;
          p.done = Math.max(p.done, Math.min(p.end, upTo) - p.start);
          if (upTo < p.end) break;
          k++;
        }
        hash.advance(contiguousBytes(plan));
        syncInBackground();
        saveSidecarSoon();
        report("downloading");
      },
    });
  };

  const attempt = async (): Promise<string> => {
    attempts++;
    bytesDone = doneBytes(plan);
    if (bytesDone > 0) resumed = true;
    report("downloading");
    // Peers first, each until it fails; then the blob URL. Every source resumes where the last one stopped.
    for (let runs = new RunPlan(plan); runs.pending > 0; runs = new RunPlan(plan)) {
      const peer = req.signal?.aborted ? undefined : peers[0];
      const url = new URL(peer ? peer.url : await req.url(refreshUrl));
      if (!peer) refreshUrl = false;
      let failure: unknown;
      const slots = Math.min((peer && settings.peerConnections) || settings.partsPerFile, runs.pending);
      connections = Math.max(connections, slots);
      const slot = async () => {
        for (let run = runs.take(slots); run && failure === undefined; run = runs.take(slots)) {
          try {
            await fetchRun(url, peer, run);
          } catch (err) {
            failure ??= err;
          }
        }
      };
      await Promise.all(Array.from({ length: slots }, slot));
      await saveSidecarNow();
      if (failure === undefined) break;
      if (!peer || req.signal?.aborted) throw classify(failure, attempts, () => (refreshUrl = true));
      peers.shift();
      req.onPeerFailure?.(peer, peerFailureOf(failure), failure);
      if (doneBytes(plan) > 0) resumed = true;
    }
    report("verifying");
    const digest = await hash.digest(req.sizeBytes);
    if (req.sha256 && digest !== req.sha256) {
      for (const p of plan) p.done = 0;
      await hash.reset();
      await fs.rm(sidecarPath, { force: true });
      // A peer's bytes were among them: no peer is trusted again for this file, the blob sends it all.
      if (contributors.size > 0) {
        peers.length = 0;
        for (const peer of contributors) req.onPeerFailure?.(peer, "corrupt", undefined);
        contributors.clear();
      }
      throw new ChecksumError(`sha256 ${digest} differs from the expected ${req.sha256}`);
    }
    return digest;
  };

  try {
    const digest = await pRetry(attempt, {
      retries: settings.maxAttempts - 1,
      factor: 2,
      minTimeout: settings.retryMinMs,
      maxTimeout: settings.retryMaxMs,
      randomize: true,
      signal: req.signal,
      onFailedAttempt: ({ error, attemptNumber, retriesLeft }) => {
        deps.logger.warn(
          { err: error, path: req.finalPath, attempt: attemptNumber, retries_left: retriesLeft },
          "LoRA download attempt failed",
        );
      },
    });
    await syncing;
    if (syncFailure) throw syncFailure;
    await file.sync();
    await file.close();
    closed = true;
    await fs.rename(partialPath, req.finalPath);
    await syncDirectory(path.dirname(req.finalPath));
    await fs.rm(sidecarPath, { force: true });
    return {
      sha256: digest,
      bytesDownloaded,
      bytesFromPeers,
      attempts,
      resumed,
      connections,
      partBytes: settings.partSizeBytes,
    };
  } catch (err) {
    await syncing;
    await saving;
    if (!closed) await file.close().catch(() => {});
    const failure = toDownloadError(err, attempts, req.signal);
    // Bytes that failed verification are worthless; any other failure keeps them for a resume.
    if (failure.kind === "checksum" || failure.kind === "not_found") {
      await Promise.all([fs.rm(partialPath, { force: true }), fs.rm(sidecarPath, { force: true })]);
    }
    throw failure;
  } finally {
    hash.close();
  }
}

/** What a failed request means for the attempt: a missing blob ends the download, a 403 asks for a fresh URL. */
function classify(err: unknown, attempts: number, refreshUrl: () => void): unknown {
  if (err instanceof HttpStatusError) {
    if (err.status === 403) refreshUrl();
    if (err.status === 404 || err.status === 410) {
      return new AbortError(new DownloadError("not_found", "the blob is missing from storage", attempts));
    }
  }
  if (err instanceof BlobSizeError) return new ChecksumError(err.message);
  return err;
}

/** What a peer's failed request says about it. */
function peerFailureOf(err: unknown): PeerFailure {
  if (err instanceof HttpStatusError) {
    if (err.status === 429 || err.status === 503) return "busy";
    if (err.status === 404) return "not_held";
    return "refused";
  }
  if (err instanceof BlobSizeError) return "wrong_size";
  const code = (err as { code?: string } | undefined)?.code;
  if (code === "UND_ERR_BODY_TIMEOUT" || code === "UND_ERR_HEADERS_TIMEOUT") return "slow";
  return "vanished";
}

/** The parts recorded beside an existing partial file of the same size, or undefined to start afresh. */
async function resumableParts(partialPath: string, sidecarPath: string, req: DownloadRequest) {
  const parts = await loadPartialState(sidecarPath, req);
  if (!parts) return undefined;
  const stat = await fs.stat(partialPath).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return undefined;
    throw err;
  });
  return stat?.size === req.sizeBytes ? parts : undefined;
}

function toDownloadError(err: unknown, attempts: number, signal?: AbortSignal): DownloadError {
  if (err instanceof DownloadError) return new DownloadError(err.kind, err.message, attempts, { cause: err.cause });
  if (signal?.aborted) return new DownloadError("aborted", "the download was cancelled", attempts, { cause: err });
  if (err instanceof ChecksumError) return new DownloadError("checksum", err.message, attempts, { cause: err });
  const message = err instanceof Error ? err.message : String(err);
  return new DownloadError("failed", `download failed after ${attempts} attempts: ${message}`, attempts, {
    cause: err,
  });
}

import fs from "node:fs/promises";
import path from "node:path";
import type { Logger } from "@emprops/platform";
import pRetry, { AbortError } from "p-retry";
import { type Dispatcher, request } from "undici";
import { PARTIAL_SUFFIX, SIDECAR_SUFFIX } from "../cache/cache-layout.js";
import { InOrderHasher } from "./in-order-hasher.js";
import {
  contiguousBytes,
  doneBytes,
  loadPartialState,
  type Part,
  planParts,
  savePartialState,
} from "./partial-state.js";

export interface DownloadSettings {
  /** Files at least this large are fetched in ranged parts. */
  parallelThresholdBytes: number;
  partSizeBytes: number;
  /** Ranged parts of one file in flight at the same time. */
  partsPerFile: number;
  /** Attempts per file before DOWNLOAD_FAILED (a checksum mismatch counts as one). */
  maxAttempts: number;
  /** First and largest backoff between attempts (exponential, with jitter). */
  retryMinMs: number;
  retryMaxMs: number;
  /** A response that sends nothing for this long is cut and retried. */
  stallTimeoutMs: number;
}

export interface DownloadRequest {
  finalPath: string;
  sizeBytes: number;
  /** Expected lower-case hex sha256; "" when the source has none (the digest is still computed). */
  sha256: string;
  /** A signed read URL; `refresh` is true after the previous one was refused (expired). */
  url: (refresh: boolean) => Promise<string>;
  signal?: AbortSignal;
}

export interface DownloadResult {
  sha256: string;
  /** Bytes received over the network by this call. */
  bytesDownloaded: number;
  attempts: number;
  /** True when bytes already on disk (from an earlier attempt or process) were kept. */
  resumed: boolean;
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

class HttpStatusError extends Error {
  constructor(readonly status: number) {
    super(`blob storage answered HTTP ${status}`);
  }
}

class ChecksumError extends Error {}

/** Bytes gathered before one positional write. */
const WRITE_BATCH = 1024 * 1024;
/** The sidecar is rewritten at most this often while parts are in flight. */
const SIDECAR_INTERVAL_MS = 1_000;
/** Written bytes flushed to disk in the background, so the final fsync has little left to wait for. */
const SYNC_EVERY = 64 * 1024 * 1024;

/**
 * Downloads one blob to `finalPath`: ranged parts in parallel (one stream for
 * small files) written with positional writes into `finalPath.partial`, a
 * sidecar recording each part's progress so any later attempt or process
 * resumes, retries with exponential backoff and jitter, a fresh URL after a
 * 403, sha256 of the bytes in order while they arrive, then fsync and an
 * atomic rename. A checksum mismatch discards the bytes and counts as a
 * failed attempt.
 */
export async function downloadFile(
  req: DownloadRequest,
  settings: DownloadSettings,
  deps: { dispatcher: Dispatcher; logger: Logger },
): Promise<DownloadResult> {
  const partialPath = req.finalPath + PARTIAL_SUFFIX;
  const sidecarPath = req.finalPath + SIDECAR_SUFFIX;
  await fs.mkdir(path.dirname(req.finalPath), { recursive: true });

  let parts = await resumableParts(partialPath, sidecarPath, req);
  const file = await fs.open(partialPath, parts ? "r+" : "w+");
  let closed = false;
  const hasher = new InOrderHasher(file);
  let bytesDownloaded = 0;
  let attempts = 0;
  let resumed = false;
  let refreshUrl = false;
  let lastSidecar = 0;
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
  if (!parts) {
    await file.truncate(req.sizeBytes);
    parts = planParts(req.sizeBytes, settings.partSizeBytes, settings.parallelThresholdBytes);
  }
  const plan = parts;
  // Bytes kept from an earlier process are hashed while the rest arrives.
  hasher.advance(contiguousBytes(plan));
  const saveSidecar = () =>
    savePartialState(sidecarPath, { version: 1, sizeBytes: req.sizeBytes, sha256: req.sha256, parts: plan });

  const fetchPart = async (url: string, part: Part): Promise<void> => {
    const from = part.start + part.done;
    const res = await request(url, {
      method: "GET",
      headers: { range: `bytes=${from}-${part.end - 1}` },
      dispatcher: deps.dispatcher,
      signal: req.signal,
      headersTimeout: settings.stallTimeoutMs,
      bodyTimeout: settings.stallTimeoutMs,
    });
    if (res.statusCode !== 206 && !(res.statusCode === 200 && from === 0)) {
      await res.body.dump().catch(() => {});
      if (res.statusCode === 403) refreshUrl = true;
      if (res.statusCode === 404 || res.statusCode === 410) {
        throw new AbortError(new DownloadError("not_found", "the blob is missing from storage", attempts));
      }
      if (res.statusCode === 416)
        throw new ChecksumError(`the blob is smaller than the expected ${req.sizeBytes} bytes`);
      throw new HttpStatusError(res.statusCode);
    }
    const total = blobSize(res.statusCode, res.headers);
    if (total !== undefined && total !== req.sizeBytes) {
      await res.body.dump().catch(() => {});
      throw new ChecksumError(`the blob has ${total} bytes, expected ${req.sizeBytes}`);
    }
    let position = from;
    let batch: Buffer[] = [];
    let batched = 0;
    const flush = async () => {
      if (batched === 0) return;
      const buffers = batch;
      const length = batched;
      batch = [];
      batched = 0;
      await file.writev(buffers, position);
      position += length;
      part.done += length;
      bytesDownloaded += length;
      unsynced += length;
      syncInBackground();
      hasher.advance(contiguousBytes(plan));
      const now = Date.now();
      if (now - lastSidecar >= SIDECAR_INTERVAL_MS) {
        lastSidecar = now;
        await saveSidecar();
      }
    };
    try {
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        const room = part.end - position - batched;
        const piece = chunk.length > room ? chunk.subarray(0, room) : chunk;
        batch.push(piece);
        batched += piece.length;
        if (batched >= WRITE_BATCH) await flush();
        if (position + batched >= part.end) break;
      }
    } finally {
      // What arrived before a cut is kept: the next attempt asks only for the rest.
      await flush();
    }
    if (position < part.end) throw new Error(`the response ended after ${position - from} of ${part.end - from} bytes`);
  };

  const attempt = async (): Promise<string> => {
    attempts++;
    if (doneBytes(plan) > 0) resumed = true;
    const pending = plan.filter((p) => p.done < p.end - p.start);
    if (pending.length > 0) {
      const url = await req.url(refreshUrl);
      refreshUrl = false;
      let failure: unknown;
      let next = 0;
      const worker = async () => {
        while (failure === undefined && next < pending.length) {
          const part = pending[next++] as Part;
          try {
            await fetchPart(url, part);
          } catch (err) {
            failure ??= err;
          }
        }
      };
      await Promise.all(Array.from({ length: Math.min(settings.partsPerFile, pending.length) }, worker));
      await saveSidecar();
      if (failure !== undefined) throw failure;
    }
    const digest = await hasher.digest(req.sizeBytes);
    if (req.sha256 && digest !== req.sha256) {
      for (const p of plan) p.done = 0;
      await hasher.reset();
      await fs.rm(sidecarPath, { force: true });
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
    return { sha256: digest, bytesDownloaded, attempts, resumed };
  } catch (err) {
    await syncing;
    if (!closed) await file.close().catch(() => {});
    const failure = toDownloadError(err, attempts, req.signal);
    // Bytes that failed verification are worthless; any other failure keeps them for a resume.
    if (failure.kind === "checksum" || failure.kind === "not_found") {
      await Promise.all([fs.rm(partialPath, { force: true }), fs.rm(sidecarPath, { force: true })]);
    }
    throw failure;
  }
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

/** The blob's full size from Content-Range (206) or Content-Length (200). */
function blobSize(status: number, headers: Record<string, string | string[] | undefined>): number | undefined {
  if (status === 206) {
    const range = /\/(\d+)\s*$/.exec(String(headers["content-range"] ?? ""));
    return range ? Number(range[1]) : undefined;
  }
  const length = headers["content-length"];
  return length === undefined ? undefined : Number(length);
}

async function syncDirectory(dir: string): Promise<void> {
  const handle = await fs.open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
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

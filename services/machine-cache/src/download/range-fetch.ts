import fs from "node:fs";
import type { Dispatcher } from "undici";

/** Storage answered with a status that is not the bytes asked for. */
export class HttpStatusError extends Error {
  constructor(readonly status: number) {
    super(`the source answered HTTP ${status}`);
  }
}

/** The blob is not the size the registry said: a wrong file, not a network failure. */
export class BlobSizeError extends Error {}

/** Received bytes gathered before one positional write. */
export const WRITE_BATCH_BYTES = 1024 * 1024;
/** At most this many chunks in one write (well under IOV_MAX). */
const WRITE_BATCH_CHUNKS = 256;

/** Error bodies are read (so the connection stays usable) up to this size, then the connection is dropped. */
const ERROR_BODY_LIMIT = 64 * 1024;

export interface RangeRequest {
  url: URL;
  /** Bytes [from, to) of the blob, written at the same offsets of the file. */
  from: number;
  to: number;
  /** The blob's size (checked against Content-Range). */
  blobSize: number;
  fd: number;
  /** After each write reached the file, in order: everything before `upTo` is on disk. */
  onWritten(upTo: number): void;
  signal?: AbortSignal;
  stallTimeoutMs: number;
  /** Sent with the request (a peer's authorization). */
  headers?: Record<string, string>;
}

/** Chunks written together, at the file offset of the first. */
interface Batch {
  chunks: Buffer[];
  length: number;
  at: number;
}

/**
 * One ranged GET of a signed blob URL, streamed into the file with
 * positional writes: undici's dispatch handler hands over each socket chunk,
 * the chunks are gathered and written as they are with one writev per
 * megabyte (no copy in user space), one write at a time, in order. While
 * one batch is written and the next is full, the socket is paused (the disk
 * is slower than the network), so memory stays a few megabytes per
 * connection. Resolves when every byte of the range is on disk; rejects
 * with what went wrong once the bytes that did arrive are written and
 * reported (a retry asks only for the rest).
 */
export function fetchRange(dispatcher: Dispatcher, req: RangeRequest): Promise<void> {
  return new Promise((resolve, reject) => {
    const { from, to, fd } = req;
    /** File offset of the next byte that arrives. */
    let at = from;
    let filling: Batch = { chunks: [], length: 0, at: from };
    /** A full batch waiting for the one being written. */
    let full: Batch | undefined;
    let writing = false;
    let paused = false;
    let controller: Dispatcher.DispatchController | undefined;
    let failure: Error | undefined;
    /** The bytes in memory must not reach the file (a write failed, the blob is the wrong size). */
    let discard = false;
    let statusFailure: Error | undefined;
    let errorBodyBytes = 0;
    let ended = false;
    let settled = false;
    /** The answer is the whole blob (200), not the range. */
    let whole = false;

    const settle = () => {
      if (discard && !writing) {
        full = undefined;
        filling = { chunks: [], length: 0, at };
      }
      if (settled || !ended || writing || full || filling.length > 0) return;
      settled = true;
      req.signal?.removeEventListener("abort", onAbort);
      if (failure) reject(failure);
      else resolve();
    };
    /** Ends the request; what arrived is still written unless `discardBytes`. */
    const fail = (err: Error, discardBytes = true) => {
      failure ??= err;
      discard ||= discardBytes;
      if (controller && !controller.aborted && !ended) controller.abort(err);
    };
    const write = (batch: Batch) => {
      writing = true;
      fs.writev(fd, batch.chunks, batch.at, (err, written) => {
        writing = false;
        if (err) fail(err);
        else if (written !== batch.length) {
          fail(new Error(`short write: ${written} of ${batch.length} bytes at ${batch.at}`));
        } else req.onWritten(batch.at + batch.length);
        if (!discard) {
          const next = full;
          full = undefined;
          if (next) write(next);
          else if (ended) hand();
          if (paused && !ended) {
            paused = false;
            controller?.resume();
          }
        }
        settle();
      });
    };
    /** The batch being filled goes to the disk (or waits for the write in progress). */
    const hand = () => {
      if (filling.length === 0 || full || discard) return;
      const batch = filling;
      filling = { chunks: [], length: 0, at };
      if (writing) full = batch;
      else write(batch);
    };
    /** Takes a chunk (up to `to`); false when the socket must wait for the disk. */
    const place = (chunk: Buffer): boolean => {
      const n = Math.min(chunk.length, to - at);
      if (n <= 0) return true;
      filling.chunks.push(n === chunk.length ? chunk : chunk.subarray(0, n));
      filling.length += n;
      at += n;
      if (filling.length >= WRITE_BATCH_BYTES || filling.chunks.length >= WRITE_BATCH_CHUNKS) {
        if (full) return false;
        hand();
      }
      return true;
    };
    // Cancelled: what arrived is still written, for a later resume.
    const onAbort = () => fail(req.signal?.reason instanceof Error ? req.signal.reason : new Error("aborted"), false);
    if (req.signal?.aborted) return reject(req.signal.reason ?? new Error("aborted"));
    req.signal?.addEventListener("abort", onAbort, { once: true });

    dispatcher.dispatch(
      {
        origin: req.url.origin,
        path: req.url.pathname + req.url.search,
        method: "GET",
        headers: { ...req.headers, range: `bytes=${from}-${to - 1}` },
        headersTimeout: req.stallTimeoutMs,
        bodyTimeout: req.stallTimeoutMs,
      },
      {
        onRequestStart(c) {
          controller = c;
          if (failure) c.abort(failure);
        },
        onResponseStart(_c, status, headers) {
          whole = status === 200 && from === 0;
          if (status !== 206 && !whole) {
            statusFailure =
              status === 416
                ? new BlobSizeError(`the blob is smaller than the expected ${req.blobSize} bytes`)
                : new HttpStatusError(status);
            return;
          }
          const total = blobSize(status, headers);
          if (total !== undefined && total !== req.blobSize) {
            fail(new BlobSizeError(`the blob has ${total} bytes, expected ${req.blobSize}`));
          }
        },
        onResponseData(c, chunk) {
          if (statusFailure) {
            errorBodyBytes += chunk.length;
            if (errorBodyBytes > ERROR_BODY_LIMIT) fail(statusFailure);
            return;
          }
          if (failure) return;
          if (!place(chunk)) {
            paused = true;
            c.pause();
          }
          // A whole-blob answer (200) to a range that ends early: the rest is not needed. (A 206 ends by
          // itself, and its connection is reused.)
          if (whole && at >= to && to < req.blobSize && !ended) {
            ended = true;
            hand();
            c.abort(new Error("range complete"));
          }
        },
        onResponseEnd() {
          if (ended) return;
          ended = true;
          if (statusFailure) failure ??= statusFailure;
          else {
            const arrived = at - from;
            if (arrived < to - from) failure ??= new Error(`the response ended after ${arrived} of ${to - from} bytes`);
            hand();
          }
          settle();
        },
        onResponseError(_c, err) {
          if (ended) return settle(); // the early end of a whole-blob answer, or an abort after the end
          ended = true;
          failure ??= statusFailure ?? err;
          // What arrived before the failure is kept: the next attempt asks only for the rest.
          hand();
          settle();
        },
      },
    );
  });
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

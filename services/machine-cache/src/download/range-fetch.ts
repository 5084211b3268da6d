import fs from "node:fs";
import type { Dispatcher } from "undici";

/** Storage answered with a status that is not the bytes asked for. */
export class HttpStatusError extends Error {
  constructor(readonly status: number) {
    super(`blob storage answered HTTP ${status}`);
  }
}

/** The blob is not the size the registry said: a wrong file, not a network failure. */
export class BlobSizeError extends Error {}

/** Bytes gathered before one positional write. */
export const WRITE_BUFFER_BYTES = 1024 * 1024;

/** Error bodies are read (so the connection stays usable) up to this size, then the connection is dropped. */
const ERROR_BODY_LIMIT = 64 * 1024;

/**
 * The write buffers of one connection slot, reused by each of its requests,
 * so a download allocates nothing per byte: one is written to disk while the
 * other fills.
 */
export class WriteBuffers {
  readonly buffers: Buffer[] = [Buffer.allocUnsafe(WRITE_BUFFER_BYTES), Buffer.allocUnsafe(WRITE_BUFFER_BYTES)];
}

export interface RangeRequest {
  url: URL;
  /** Bytes [from, to) of the blob, written at the same offsets of the file. */
  from: number;
  to: number;
  /** The blob's size (checked against Content-Range). */
  blobSize: number;
  fd: number;
  buffers: WriteBuffers;
  /** After each write reached the file, in order: everything before `upTo` is on disk. */
  onWritten(upTo: number): void;
  signal?: AbortSignal;
  stallTimeoutMs: number;
}

/**
 * One ranged GET of a signed blob URL, streamed into the file with
 * positional writes: undici's dispatch handler hands over each socket chunk,
 * which is copied into a free write buffer; a full buffer is written (one
 * write at a time, in order) while the next fills. When no buffer is free
 * (the disk is slower than the network) the chunks wait as they are and the
 * socket is paused. Resolves when every byte of the range is on disk;
 * rejects with what went wrong once the bytes that did arrive are written
 * and reported (a retry asks only for the rest).
 */
export function fetchRange(dispatcher: Dispatcher, req: RangeRequest): Promise<void> {
  return new Promise((resolve, reject) => {
    const { from, to, fd } = req;
    const free = [...req.buffers.buffers];
    let fill: Buffer | undefined = free.pop();
    let filled = 0;
    /** File offset of the next byte placed in `fill`. */
    let at = from;
    /** Full buffers waiting for the disk, in file order. */
    const queue: { buffer: Buffer; length: number; at: number }[] = [];
    let writing = false;
    /** Chunks that arrived while no buffer was free. */
    const waiting: Buffer[] = [];
    let controller: Dispatcher.DispatchController | undefined;
    let failure: Error | undefined;
    /** The bytes in memory must not reach the file (a write failed, the blob is the wrong size). */
    let discard = false;
    let statusFailure: Error | undefined;
    let errorBodyBytes = 0;
    let ended = false;
    let settled = false;

    const settle = () => {
      if (discard && !writing) {
        queue.length = 0;
        waiting.length = 0;
      }
      if (settled || !ended || writing || queue.length > 0 || waiting.length > 0) return;
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
    const hand = () => {
      if (!fill || filled === 0) return;
      queue.push({ buffer: fill, length: filled, at: at - filled });
      fill = free.pop();
      filled = 0;
      pump();
    };
    /** Copies a chunk into write buffers; what finds no free buffer waits. Returns false when something waits. */
    const place = (chunk: Buffer): boolean => {
      let offset = 0;
      while (offset < chunk.length && at < to) {
        if (!fill) {
          waiting.push(chunk.subarray(offset));
          return false;
        }
        const n = Math.min(fill.length - filled, to - at, chunk.length - offset);
        chunk.copy(fill, filled, offset, offset + n);
        filled += n;
        offset += n;
        at += n;
        if (filled === fill.length) hand();
      }
      return true;
    };
    const pump = () => {
      if (writing || discard) return;
      const job = queue.shift();
      if (!job) return;
      writing = true;
      fs.write(fd, job.buffer, 0, job.length, job.at, (err, written) => {
        writing = false;
        if (err) fail(err);
        else if (written !== job.length) fail(new Error(`short write: ${written} of ${job.length} bytes at ${job.at}`));
        else req.onWritten(job.at + job.length);
        free.push(job.buffer);
        if (!fill) fill = free.pop();
        if (!discard) {
          while (waiting.length > 0 && place(waiting.shift() as Buffer));
          if (waiting.length === 0) {
            if (ended) hand();
            else controller?.resume();
          }
          pump();
        }
        settle();
      });
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
        headers: { range: `bytes=${from}-${to - 1}` },
        headersTimeout: req.stallTimeoutMs,
        bodyTimeout: req.stallTimeoutMs,
      },
      {
        onRequestStart(c) {
          controller = c;
          if (failure) c.abort(failure);
        },
        onResponseStart(_c, status, headers) {
          const whole = status === 200 && from === 0;
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
          if (waiting.length > 0) waiting.push(chunk);
          else place(chunk);
          if (waiting.length > 0) {
            c.pause();
            return;
          }
          // A whole-blob answer (200) to a range that ends early: the rest is not needed.
          if (at >= to && !ended) {
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
            // Counted with what still waits for a buffer: placing it cannot go past `to`.
            const arrived = at - from + waiting.reduce((n, c) => n + c.length, 0);
            if (arrived < to - from) failure ??= new Error(`the response ended after ${arrived} of ${to - from} bytes`);
            if (waiting.length === 0) hand();
          }
          settle();
        },
        onResponseError(_c, err) {
          if (ended) return settle(); // the early end of a whole-blob answer, or an abort after the end
          ended = true;
          failure ??= statusFailure ?? err;
          // What arrived before the failure is kept: the next attempt asks only for the rest.
          if (waiting.length === 0) hand();
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

import type { BlobClient } from "@azure/storage-blob";
import { quotedEtag } from "./staging.js";

export interface OpenBlob {
  /** Size of the committed blob. */
  size: number;
  /** Its bytes in order; stopping early closes the download. */
  chunks: AsyncIterable<Buffer>;
  /** Gives up before (or while) reading: closes the download. */
  cancel(): void;
}

/** How a blob is read for verification. */
export interface BlobReadSettings {
  /**
   * Ranged GETs in flight for a blob larger than one range; 1 reads it as
   * one stream. Where one connection's throughput limits a read (Blob
   * Storage over a real network) several ranges at once read faster.
   */
  connections: number;
  /** Size of each ranged GET. */
  rangeBytes: number;
  /** Times a broken connection is resumed, per request. */
  maxRetryRequests?: number;
}

/**
 * Opens a committed blob for one pass in byte order. A broken connection is
 * resumed from the last byte received (up to maxRetryRequests times per
 * request), every request after the first pinned to the blob's ETag, so a
 * blob replaced mid-read fails instead of mixing two versions. Throws the
 * storage error (404 included) before any byte is returned. With `pin`,
 * the first request is pinned too: 412 when the blob is no longer that
 * version.
 *
 * With `connections` > 1 a blob larger than one range is read as ranges of
 * `rangeBytes`, that many in flight: the first range's bytes flow to the
 * reader as they arrive, the ranges after it are held in memory until their
 * turn (at most connections × rangeBytes, whatever the blob's size).
 */
export async function openBlob(
  blob: BlobClient,
  settings: BlobReadSettings,
  pin?: { etag: string },
): Promise<OpenBlob> {
  const maxRetries = settings.maxRetryRequests ?? 5;
  const abort = new AbortController();
  const bodies = new Set<NodeJS.ReadableStream>();
  const ranged = settings.connections > 1;
  const get = async (offset: number, count: number | undefined, etag?: string) => {
    const res = await blob.download(offset, count, {
      maxRetryRequests: maxRetries,
      abortSignal: abort.signal,
      conditions: etag ? { ifMatch: etag } : undefined,
    });
    if (!res.readableStreamBody) throw new Error("blob download returned no body");
    return res;
  };
  // A range of an empty blob is not satisfiable (416): that one is read whole.
  const pinned = pin ? quotedEtag(pin.etag) : undefined;
  const first = ranged
    ? await get(0, settings.rangeBytes, pinned).catch((err: { statusCode?: number }) =>
        err?.statusCode === 416 ? get(0, undefined, pinned) : Promise.reject(err),
      )
    : await get(0, undefined, pinned);
  const size = sizeOf(first.contentRange) ?? first.contentLength ?? 0;
  const open = async (offset: number, count: number) => {
    const body = (await get(offset, count, first.etag)).readableStreamBody as NodeJS.ReadableStream;
    bodies.add(body);
    return body;
  };
  // A range ahead of the reader holds all its bytes; the one being read (or the single stream) a few MiB.
  const range = (offset: number, count: number, holds = count) =>
    new Range(offset, count, open, { maxRetries, holds, cancelled: abort.signal });
  const cancel = () => {
    abort.abort();
    for (const b of bodies) (b as NodeJS.ReadableStream & { destroy?(): void }).destroy?.();
  };

  const head = range(0, Math.min(first.contentLength ?? size, size), READER_HOLDS);
  bodies.add(first.readableStreamBody as NodeJS.ReadableStream);
  head.attach(first.readableStreamBody as NodeJS.ReadableStream);
  async function* chunks(): AsyncGenerator<Buffer> {
    try {
      const inFlight: Range[] = [head];
      let next = head.count;
      while (inFlight.length > 0) {
        while (inFlight.length < settings.connections && next < size) {
          const count = Math.min(settings.rangeBytes, size - next);
          inFlight.push(range(next, count).start());
          next += count;
        }
        yield* (inFlight.shift() as Range).chunks();
      }
    } finally {
      cancel();
    }
  }
  return { size, chunks: chunks(), cancel };
}

/**
 * The bytes [offset, offset + count) of the blob from one ranged GET (or
 * the whole blob): kept as they arrive, because the reader may not have
 * reached this range yet, and handed out in order. A connection that breaks
 * before the last byte is asked again for the rest.
 */
class Range {
  private readonly held: Buffer[] = [];
  private heldBytes = 0;
  private body: NodeJS.ReadableStream | undefined;
  private received = 0;
  private retries = 0;
  private ended = false;
  private failure: unknown;
  private wake: (() => void) | undefined;

  constructor(
    readonly offset: number,
    readonly count: number,
    private readonly open: (offset: number, count: number) => Promise<NodeJS.ReadableStream>,
    private readonly opts: { maxRetries: number; holds: number; cancelled: AbortSignal },
  ) {}

  start(): this {
    this.open(this.offset + this.received, this.count - this.received).then(
      (body) => this.attach(body),
      (err: unknown) => this.fail(err),
    );
    return this;
  }

  attach(body: NodeJS.ReadableStream): void {
    let over = false;
    const stopped = (err?: unknown) => {
      if (over) return;
      over = true;
      if (this.received >= this.count) {
        this.ended = true;
        return this.notify();
      }
      if (this.opts.cancelled.aborted) return this.fail(err ?? new Error("the read was cancelled"));
      if (retryable(err) && this.retries < this.opts.maxRetries) {
        this.retries++;
        return void this.start();
      }
      this.fail(err ?? new Error(`the read ended after ${this.received} of ${this.count} bytes`));
    };
    this.body = body;
    body.on("data", (chunk: Buffer | string) => {
      const b = typeof chunk === "string" ? Buffer.from(chunk) : chunk;
      this.held.push(b);
      this.heldBytes += b.length;
      this.received += b.length;
      // The reader is behind: the connection waits (memory stays bounded whatever the blob's size).
      if (this.heldBytes >= this.opts.holds) body.pause();
      this.notify();
    });
    body.on("end", () => stopped());
    body.on("error", (err: unknown) => stopped(err));
    body.on("close", () => stopped());
  }

  async *chunks(): AsyncGenerator<Buffer> {
    for (;;) {
      const chunk = this.held.shift();
      if (chunk) {
        this.heldBytes -= chunk.length;
        if (this.heldBytes < this.opts.holds / 2) this.body?.resume();
        yield chunk;
        continue;
      }
      if (this.failure !== undefined) throw this.failure;
      if (this.ended) return;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  private fail(err: unknown): void {
    this.failure ??= err;
    this.notify();
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}

/** Bytes the range being read holds before its connection waits for the reader. */
const READER_HOLDS = 4 * 1024 * 1024;

/** A broken connection or a server error is worth another request; a refusal (412, 404, 403, …) is not. */
function retryable(err: unknown): boolean {
  const status = (err as { statusCode?: number } | undefined)?.statusCode;
  return status === undefined || status >= 500 || status === 408 || status === 429;
}

/** The blob's full size from a Content-Range header ("bytes 0-99/1234"). */
function sizeOf(contentRange: string | undefined): number | undefined {
  const m = /\/(\d+)\s*$/.exec(contentRange ?? "");
  return m ? Number(m[1]) : undefined;
}

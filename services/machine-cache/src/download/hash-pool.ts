import os from "node:os";
import { Worker } from "node:worker_threads";

/**
 * The worker's code (plain JavaScript, run with `eval`, so the same source
 * works from dist/ and under the test transform). It keeps one sha256 per
 * job and hashes each job's file, read back from the page cache, up to the
 * offset the main thread says is final, a slice at a time, round-robin
 * between jobs.
 */
const WORKER_SOURCE = `
const { parentPort } = require("node:worker_threads");
const { createHash } = require("node:crypto");
const fs = require("node:fs");
const SLICE = 4 * 1024 * 1024;
const buffer = Buffer.allocUnsafe(SLICE);
const jobs = new Map();
let scheduled = false;
const busy = (job) => job.error === undefined && job.hashed < job.target;
const step = () => {
  scheduled = false;
  for (const [id, job] of jobs) {
    if (!busy(job)) continue;
    try {
      const length = Math.min(SLICE, job.target - job.hashed);
      const n = fs.readSync(job.fd, buffer, 0, length, job.hashed);
      if (n === 0) throw new Error("unexpected end of file at " + job.hashed);
      job.hash.update(buffer.subarray(0, n));
      job.hashed += n;
    } catch (err) {
      job.error = String((err && err.message) || err);
    }
    answer(id, job);
  }
  schedule();
};
const answer = (id, job) => {
  if (job.digestAt === undefined) return;
  if (job.error !== undefined) parentPort.postMessage({ id, error: job.error });
  else if (job.hashed >= job.digestAt) {
    parentPort.postMessage({ id, digest: job.hash.digest("hex"), hashed: job.hashed });
    job.hash = createHash("sha256");
  } else return;
  job.digestAt = undefined;
};
const schedule = () => {
  if (scheduled) return;
  for (const job of jobs.values()) {
    if (busy(job)) {
      scheduled = true;
      setImmediate(step);
      return;
    }
  }
};
parentPort.on("message", (m) => {
  if (m.type === "open") {
    const job = { hash: createHash("sha256"), hashed: 0, target: 0 };
    try {
      job.fd = fs.openSync(m.path, "r");
    } catch (err) {
      job.error = String((err && err.message) || err);
    }
    jobs.set(m.id, job);
    return;
  }
  const job = jobs.get(m.id);
  if (!job) return;
  if (m.type === "advance") job.target = Math.max(job.target, m.upTo);
  else if (m.type === "digest") {
    job.target = Math.max(job.target, m.size);
    job.digestAt = m.size;
    answer(m.id, job);
  } else if (m.type === "reset") {
    job.hash = createHash("sha256");
    job.hashed = 0;
    job.target = 0;
    job.digestAt = undefined;
    parentPort.postMessage(job.error === undefined ? { id: m.id, reset: true } : { id: m.id, error: job.error });
  } else if (m.type === "close") {
    if (job.fd !== undefined) fs.closeSync(job.fd);
    jobs.delete(m.id);
  }
  schedule();
});
`;

/** The hashing thread is told about the final prefix when it has grown by this much (digest() tells the rest). */
const ADVANCE_STEP = 4 * 1024 * 1024;

type Reply = { id: number; digest?: string; hashed?: number; reset?: boolean; error?: string };

interface Pending {
  resolve(value: Reply): void;
  reject(err: Error): void;
}

/** One worker thread and the jobs it hashes. */
class HashThread {
  readonly worker: Worker;
  jobs = 0;
  private readonly waiting = new Map<number, Pending>();
  private dead: Error | undefined;

  constructor(onExit: () => void) {
    this.worker = new Worker(WORKER_SOURCE, { eval: true });
    this.worker.unref();
    this.worker.on("message", (reply: Reply) => {
      const pending = this.waiting.get(reply.id);
      this.waiting.delete(reply.id);
      if (reply.error !== undefined) pending?.reject(new Error(`hashing the download failed: ${reply.error}`));
      else pending?.resolve(reply);
    });
    const die = (err: Error) => {
      this.dead ??= err;
      for (const p of this.waiting.values()) p.reject(err);
      this.waiting.clear();
      onExit();
    };
    this.worker.on("error", die);
    this.worker.on("exit", (code) => die(new Error(`the hashing thread exited (${code})`)));
  }

  post(message: Record<string, unknown>): void {
    if (!this.dead) this.worker.postMessage(message);
  }

  /** Sends a message and waits for the job's reply (a job has at most one question open). */
  ask(id: number, message: Record<string, unknown>): Promise<Reply> {
    if (this.dead) return Promise.reject(this.dead);
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.post(message);
    });
  }
}

/**
 * sha256 of a file being written out of order, computed off the event loop:
 * the caller says which prefix of the file is final (`advance`), a worker
 * thread reads that prefix back (from the page cache) and hashes it in
 * order while the rest arrives, so the digest is ready moments after the
 * last byte. A resumed download's bytes already on disk are hashed the same
 * way.
 */
export interface FileHash {
  /** The first `upTo` bytes are final. */
  advance(upTo: number): void;
  /** Waits until the first `size` bytes are hashed; their hex sha256 (the job can start over after it). */
  digest(size: number): Promise<string>;
  /** Starts over from byte 0 (the file's bytes were discarded). */
  reset(): Promise<void>;
  /** Releases the job (its file stays). */
  close(): void;
}

/**
 * A few hashing threads shared by every download of the process (each job
 * stays on one thread; a new job goes to the thread with the fewest). A
 * thread that dies is replaced for later jobs; its jobs fail.
 */
export class HashPool {
  private readonly threads: (HashThread | undefined)[];
  private nextId = 0;

  constructor(size = Math.max(1, Math.min(4, os.availableParallelism() - 1))) {
    this.threads = new Array<HashThread | undefined>(size);
  }

  begin(path: string): FileHash {
    const thread = this.pick();
    const id = ++this.nextId;
    thread.jobs++;
    thread.post({ type: "open", id, path });
    let target = 0;
    let closed = false;
    return {
      // Told in steps of a few MiB (one message per write would cost the event loop more than the hashing saves).
      advance: (upTo) => {
        if (upTo - target < ADVANCE_STEP) return;
        target = upTo;
        thread.post({ type: "advance", id, upTo });
      },
      digest: async (size) => {
        const reply = await thread.ask(id, { type: "digest", id, size });
        if (reply.hashed !== size) throw new Error(`hashed ${reply.hashed} of ${size} bytes`);
        return reply.digest as string;
      },
      reset: async () => {
        target = 0;
        await thread.ask(id, { type: "reset", id });
      },
      close: () => {
        if (closed) return;
        closed = true;
        thread.jobs--;
        thread.post({ type: "close", id });
      },
    };
  }

  /** Ends the threads (jobs still open fail). */
  async close(): Promise<void> {
    const threads = [...this.threads];
    this.threads.fill(undefined);
    await Promise.all(threads.map((t) => t?.worker.terminate()));
  }

  private pick(): HashThread {
    let best: HashThread | undefined;
    for (let i = 0; i < this.threads.length; i++) {
      let t = this.threads[i];
      if (!t) {
        const slot = i;
        t = new HashThread(() => {
          if (this.threads[slot] === t) this.threads[slot] = undefined;
        });
        this.threads[i] = t;
      }
      if (!best || t.jobs < best.jobs) best = t;
      if (best.jobs === 0) break;
    }
    return best as HashThread;
  }
}

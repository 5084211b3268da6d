import { performance } from "node:perf_hooks";

/** Where one download is. */
export interface DownloadProgress {
  /** Bytes arriving, or all there and being verified and put in place. */
  phase: "downloading" | "verifying";
  /** Bytes of the file on disk, those kept from an earlier attempt or process included. */
  bytesDone: number;
  totalBytes: number;
  /** 1 for the first attempt. */
  attempt: number;
}

export type ProgressListener = (progress: DownloadProgress) => void;

/** While bytes arrive, an update goes out at most this often… */
export const PROGRESS_INTERVAL_MS = 250;
/** …and only once this share more of the file has arrived; a new phase or attempt goes out at once. */
export const PROGRESS_MIN_STEP = 0.01;

/**
 * The progress of one download for everyone waiting on it: the downloader's
 * updates (one per write) thinned out as above, handed to each listener; a
 * listener that comes later gets the last update at once. Listeners must not
 * throw: they run on the download's path.
 */
export class ProgressFanOut {
  private readonly listeners = new Set<ProgressListener>();
  private last: DownloadProgress | undefined;
  private lastAt = 0;

  update(progress: DownloadProgress): void {
    const now = performance.now();
    const last = this.last;
    if (last && last.phase === progress.phase && last.attempt === progress.attempt) {
      const step = progress.bytesDone - last.bytesDone;
      if (step <= 0 || step < PROGRESS_MIN_STEP * progress.totalBytes || now - this.lastAt < PROGRESS_INTERVAL_MS) {
        return;
      }
    }
    this.last = { ...progress };
    this.lastAt = now;
    for (const listener of this.listeners) listener(this.last);
  }

  /** Listens until the returned function is called. */
  subscribe(listener: ProgressListener): () => void {
    if (this.last) listener(this.last);
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}

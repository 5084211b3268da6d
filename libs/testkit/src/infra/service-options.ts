/** Options shared by every dependency starter. */
export interface ServiceOptions {
  /**
   * With `persistent: true`: the data directory itself, created if missing and
   * reused by later starts. Otherwise: where the throw-away data directory is
   * made (default: the OS temp directory); stop() removes it.
   */
  dataDir?: string;
  /** Keep data across stop/start (needs `dataDir`). Default false. */
  persistent?: boolean;
  /** Port on 127.0.0.1; a free one when omitted. */
  port?: number;
  /** How long the process may take to come up. Default 60 000 ms (initdb alone can take half of that on a busy 2-core machine). */
  startTimeoutMs?: number;
}

export const DEFAULT_START_TIMEOUT_MS = 60_000;

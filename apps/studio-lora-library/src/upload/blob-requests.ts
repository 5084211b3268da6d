import { blockListXml, type PlannedBlock } from "@emprops/contracts";

/** A failed request to Blob Storage: an HTTP status with x-ms-error-code, or no answer (status 0). */
export class BlobRequestError extends Error {
  constructor(
    readonly status: number,
    readonly errorCode: string,
    what: string,
  ) {
    super(
      status === 0
        ? `${what}: the network connection failed`
        : `${what} failed: HTTP ${status}${errorCode ? ` ${errorCode}` : ""}`,
    );
    this.name = "BlobRequestError";
  }

  /** 403 from a signed URL: expired or refused; a fresh URL may help. */
  get urlRefused(): boolean {
    return this.status === 403;
  }

  /** Worth trying again as it is: no answer, throttling, timeouts, server errors. */
  get transient(): boolean {
    return this.status === 0 || this.status === 408 || this.status === 429 || this.status >= 500;
  }
}

/**
 * PUT with XMLHttpRequest, the one browser API that reports upload progress
 * (fetch does not). Blob Storage must allow this page's origin (CORS).
 */
function put(
  url: string,
  body: Blob | string,
  what: string,
  opts: { headers?: Record<string, string>; onProgress?: (loaded: number) => void; signal?: AbortSignal },
): Promise<void> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", url);
    for (const [k, v] of Object.entries(opts.headers ?? {})) xhr.setRequestHeader(k, v);
    if (opts.onProgress) {
      const report = opts.onProgress;
      xhr.upload.onprogress = (e) => report(e.loaded);
    }
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) resolve();
      else reject(new BlobRequestError(xhr.status, xhr.getResponseHeader("x-ms-error-code") ?? "", what));
    };
    xhr.onerror = () => reject(new BlobRequestError(0, "", what));
    xhr.ontimeout = () => reject(new BlobRequestError(0, "", what));
    xhr.onabort = () => reject(new DOMException(`${what} was cancelled`, "AbortError"));
    opts.signal?.addEventListener("abort", () => xhr.abort(), { once: true });
    xhr.send(body);
  });
}

/** Put Block: stages one block on the signed upload URL. */
export function putBlock(
  uploadUrl: string,
  block: PlannedBlock,
  data: Blob,
  onProgress: (loaded: number) => void,
  signal: AbortSignal,
): Promise<void> {
  return put(`${uploadUrl}&comp=block&blockid=${encodeURIComponent(block.id)}`, data, `Put Block ${block.index}`, {
    onProgress,
    signal,
  });
}

/** Put Block List: commits the blocks, in order, as the blob's content. */
export function putBlockList(uploadUrl: string, plan: PlannedBlock[], signal: AbortSignal): Promise<void> {
  return put(`${uploadUrl}&comp=blocklist`, blockListXml(plan), "Put Block List", {
    headers: { "content-type": "application/xml", "x-ms-blob-content-type": "application/octet-stream" },
    signal,
  });
}

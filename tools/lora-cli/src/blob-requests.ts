import { type PlannedBlock, blockListXml } from "@emprops/contracts";

/** A non-2xx answer of Blob Storage, with its x-ms-error-code. */
export class BlobRequestError extends Error {
  constructor(
    readonly status: number,
    readonly errorCode: string,
    what: string,
  ) {
    super(`${what} failed: HTTP ${status}${errorCode ? ` ${errorCode}` : ""}`);
    this.name = "BlobRequestError";
  }

  /** 403 from a signed URL: expired or otherwise refused; a fresh URL may help. */
  get urlRefused(): boolean {
    return this.status === 403;
  }

  /** Worth another try as it is: throttling, timeouts and server errors. */
  get transient(): boolean {
    return this.status === 408 || this.status === 429 || this.status >= 500;
  }
}

async function put(url: string, body: Buffer | string, what: string, headers: Record<string, string> = {}) {
  const res = await fetch(url, { method: "PUT", body, headers });
  // The body is a short XML error or empty: read it so the connection is reused.
  await res.arrayBuffer().catch(() => undefined);
  if (!res.ok) throw new BlobRequestError(res.status, res.headers.get("x-ms-error-code") ?? "", what);
}

/** Put Block: stages one block on the signed upload URL. */
export function putBlock(uploadUrl: string, block: PlannedBlock, data: Buffer): Promise<void> {
  return put(`${uploadUrl}&comp=block&blockid=${encodeURIComponent(block.id)}`, data, `Put Block ${block.index}`);
}

/** Put Block List: commits the blocks, in order, as the blob's content. */
export function putBlockList(uploadUrl: string, plan: PlannedBlock[]): Promise<void> {
  return put(`${uploadUrl}&comp=blocklist`, blockListXml(plan), "Put Block List", {
    "content-type": "application/xml",
    "x-ms-blob-content-type": "application/octet-stream",
  });
}

import { blockListXml, type PlannedBlock } from "@emprops/contracts";
import { BlobRequestError } from "./blob-request-error.js";

/** The bytes of a PUT: a Blob slice in a browser, bytes read from disk in Node, or the block list XML. */
export type PutBody = Blob | Uint8Array<ArrayBuffer> | string;

/** One PUT to Blob Storage with the signed upload URL. */
export interface BlobPut {
  url: string;
  body: PutBody;
  headers: Record<string, string>;
  /** What it is, for messages: "Put Block 3", "Put Block List". */
  what: string;
  signal: AbortSignal;
  /** Body bytes sent so far, called by a transport that can tell (XMLHttpRequest can, fetch cannot). */
  onProgress?: (loaded: number) => void;
}

/**
 * Sends one PUT. Resolves on 2xx; rejects with a BlobRequestError for any
 * other answer or none, and with the signal's reason when it is aborted.
 */
export type PutTransport = (put: BlobPut) => Promise<void>;

/** PUT with fetch (browsers and Node). */
export const fetchPut: PutTransport = async ({ url, body, headers, what, signal }) => {
  let res: Response;
  try {
    res = await fetch(url, { method: "PUT", body, headers, signal });
  } catch (err) {
    if (signal.aborted) throw signal.reason;
    throw new BlobRequestError(0, "", what, { cause: err });
  }
  // The body is a short XML error or empty: read it so the connection is reused.
  await res.arrayBuffer().catch(() => undefined);
  if (!res.ok) throw new BlobRequestError(res.status, res.headers.get("x-ms-error-code") ?? "", what);
};

/** Put Block: stages one block on the signed upload URL. */
export function putBlockRequest(uploadUrl: string, block: PlannedBlock, body: PutBody): Omit<BlobPut, "signal"> {
  return {
    url: `${uploadUrl}&comp=block&blockid=${encodeURIComponent(block.id)}`,
    body,
    headers: {},
    what: `Put Block ${block.index}`,
  };
}

/** Put Block List: commits the blocks, in order, as the blob's content. */
export function putBlockListRequest(uploadUrl: string, plan: PlannedBlock[]): Omit<BlobPut, "signal"> {
  return {
    url: `${uploadUrl}&comp=blocklist`,
    body: blockListXml(plan),
    headers: { "content-type": "application/xml", "x-ms-blob-content-type": "application/octet-stream" },
    what: "Put Block List",
  };
}

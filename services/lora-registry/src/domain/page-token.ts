import { createHash } from "node:crypto";
import { ErrorReason } from "@emprops/contracts";
import { invalidArgument } from "@emprops/platform";

/** Where the previous page ended: the sort key and id of its last row. */
export interface Cursor {
  key: string;
  id: string;
}

interface TokenBody {
  v: 1;
  q: string;
  k: string;
  i: string;
}

const MAX_TOKEN = 2048;

/** A short fingerprint of everything that shapes a query, so a token only continues its own query. */
export function queryFingerprint(parts: unknown[]): string {
  return createHash("sha256").update(JSON.stringify(parts)).digest("base64url").slice(0, 16);
}

/** An opaque keyset cursor: base64url JSON of the sort key, id and query fingerprint. */
export function encodePageToken(fingerprint: string, cursor: Cursor): string {
  const body: TokenBody = { v: 1, q: fingerprint, k: cursor.key, i: cursor.id };
  return Buffer.from(JSON.stringify(body)).toString("base64url");
}

/** The cursor of a token this server issued for this query; INVALID_PAGE_TOKEN otherwise. */
export function decodePageToken(token: string, fingerprint: string, keyPattern: RegExp): Cursor {
  const bad = (why: string) =>
    invalidArgument(ErrorReason.INVALID_PAGE_TOKEN, `page_token ${why}`, { field: "page_token" });
  if (token.length > MAX_TOKEN || !/^[A-Za-z0-9_-]+$/.test(token)) throw bad("is malformed");
  let body: unknown;
  try {
    body = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    throw bad("is malformed");
  }
  const b = body as Partial<TokenBody> | null;
  if (
    !b ||
    typeof b !== "object" ||
    b.v !== 1 ||
    typeof b.q !== "string" ||
    typeof b.k !== "string" ||
    typeof b.i !== "string" ||
    !/^[1-9][0-9]{0,18}$/.test(b.i) ||
    !keyPattern.test(b.k)
  ) {
    throw bad("is malformed");
  }
  if (b.q !== fingerprint) throw bad("belongs to a different query; start again without a token");
  return { key: b.k, id: b.i };
}

/** Azurite's documented development account (public, the same for every installation). */
export const DEVELOPMENT_ACCOUNT = {
  name: "devstoreaccount1",
  key: "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==",
  url: "http://127.0.0.1:10000/devstoreaccount1",
};

/** What a shared-key connection string says about the blob endpoint. */
export interface SharedKeyAccount {
  accountName: string;
  accountKey: string;
  /** Blob service URL without a trailing slash, e.g. https://acct.blob.core.windows.net. */
  accountUrl: string;
}

/**
 * Reads `AccountName=…;AccountKey=…;BlobEndpoint=…` (or the standard
 * DefaultEndpointsProtocol/EndpointSuffix form, or UseDevelopmentStorage=true).
 * Throws a message naming the missing part; connection strings with only a
 * SharedAccessSignature cannot sign URLs and are refused.
 */
export function parseConnectionString(text: string): SharedKeyAccount {
  const parts = new Map<string, string>();
  for (const segment of text.split(";")) {
    const at = segment.indexOf("=");
    if (at <= 0) continue;
    parts.set(segment.slice(0, at).trim().toLowerCase(), segment.slice(at + 1).trim());
  }
  if (parts.get("usedevelopmentstorage") === "true") {
    return {
      accountName: DEVELOPMENT_ACCOUNT.name,
      accountKey: DEVELOPMENT_ACCOUNT.key,
      accountUrl: DEVELOPMENT_ACCOUNT.url,
    };
  }
  const accountName = parts.get("accountname");
  const accountKey = parts.get("accountkey");
  if (!accountName) throw new Error("has no AccountName");
  if (!accountKey) throw new Error("has no AccountKey (a shared-key connection string is needed to sign URLs)");
  const endpoint = parts.get("blobendpoint");
  const accountUrl = endpoint
    ? endpoint.replace(/\/+$/, "")
    : `${parts.get("defaultendpointsprotocol") ?? "https"}://${accountName}.blob.${parts.get("endpointsuffix") ?? "core.windows.net"}`;
  try {
    new URL(accountUrl);
  } catch {
    throw new Error(`has a blob endpoint that is not a URL`);
  }
  return { accountName, accountKey, accountUrl };
}

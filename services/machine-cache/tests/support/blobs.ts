import { createHash, randomBytes } from "node:crypto";
import { BlobSASPermissions, BlobServiceClient } from "@azure/storage-blob";

/** A blob of random bytes in Azurite and what a download of it must produce. */
export interface TestBlob {
  name: string;
  bytes: Buffer;
  sha256: string;
  /** A signed read URL (Azurite's own host) valid for `ttlMs`. */
  sasUrl(ttlMs?: number): Promise<string>;
}

export async function uploadRandomBlob(
  connectionString: string,
  container: string,
  name: string,
  size: number,
): Promise<TestBlob> {
  const bytes = randomBytes(size);
  const blob = BlobServiceClient.fromConnectionString(connectionString)
    .getContainerClient(container)
    .getBlockBlobClient(name);
  await blob.uploadData(bytes);
  return {
    name,
    bytes,
    sha256: createHash("sha256").update(bytes).digest("hex"),
    sasUrl: (ttlMs = 10 * 60_000) =>
      blob.generateSasUrl({
        permissions: BlobSASPermissions.parse("r"),
        startsOn: new Date(Date.now() - 5 * 60_000),
        expiresOn: new Date(Date.now() + ttlMs),
      }),
  };
}

/** A signed read URL of any blob name, existing or not. */
export function signedUrl(connectionString: string, container: string, name: string): Promise<string> {
  return BlobServiceClient.fromConnectionString(connectionString)
    .getContainerClient(container)
    .getBlockBlobClient(name)
    .generateSasUrl({ permissions: BlobSASPermissions.parse("r"), expiresOn: new Date(Date.now() + 600_000) });
}

import { RestError } from "@azure/storage-blob";
import type { VerificationResult } from "@emprops/lora-formats";
import pLimit from "p-limit";
import type { AppContext } from "../context.js";
import type { SharedBlobRef } from "../storage/blob-paths.js";
import { bareEtag, quotedEtag } from "../storage/staging.js";
import { isNotFound } from "../storage/storage-errors.js";
import { verifyStoredBlob } from "../verification/verify-stored.js";

/** What a shared LoRA's current version is: missing, verified (safe or rejected), or still being verified. */
export type SharedCheck =
  | { state: "missing" }
  | { state: "verified"; sizeBytes: number; etag: string; result: VerificationResult }
  | { state: "pending"; sizeBytes: number };

/** Versions remembered per gateway process (one entry per shared LoRA name, its latest version). */
const REMEMBERED = 10_000;
/** Shared LoRAs verified at once: a job naming many new ones does not start as many full reads. */
const CONCURRENT = 4;

/** Metadata the gateway writes on a shared blob it verified. */
export const SHARED_METADATA = { sha256: "sha256", sizeBytes: "size_bytes", verifiedEtag: "verified_etag" } as const;

/**
 * Shared LoRAs (models/loras/{name} in the shared container) verified with
 * the same verifier as uploads, once per version: the version is the
 * blob's ETag. A safe version gets its sha256 and size written into the
 * blob's metadata (conditional on the ETag verified, so a blob replaced
 * meanwhile is verified again); that write gives the blob a new ETag, which
 * is remembered as verified. Another replica, or this one after a restart,
 * reads the blob once more and, finding the metadata already right, writes
 * nothing, so replicas never invalidate each other. Concurrent first
 * resolutions of one version share one verification (single flight), which
 * runs to its end even if the request that started it gives up.
 */
export class SharedVerifications {
  private readonly known = new Map<string, { etag: string; sizeBytes: number; result: VerificationResult }>();
  private readonly flights = new Map<string, Promise<SharedCheck>>();
  private readonly limit = pLimit(CONCURRENT);

  constructor(private readonly ctx: AppContext) {}

  /**
   * The current version's verdict; waits for a verification in progress up
   * to `waitMs`, then answers `pending` (the verification goes on).
   */
  async check(ref: SharedBlobRef, waitMs: number): Promise<SharedCheck> {
    const blob = this.ctx.storage.blob(ref);
    const props = await blob
      .getProperties()
      .catch((err: unknown) => (isNotFound(err) ? undefined : Promise.reject(err)));
    if (!props) return { state: "missing" };
    const etag = bareEtag(props.etag);
    const sizeBytes = props.contentLength ?? 0;
    const known = this.known.get(ref.name);
    if (known?.etag === etag) {
      this.ctx.metrics.sharedVerifications.add(1, { outcome: "cached" });
      return { state: "verified", ...known };
    }
    const key = `${ref.name}\n${etag}`;
    let flight = this.flights.get(key);
    if (!flight) {
      flight = this.limit(() => this.verify(ref, { etag, sizeBytes, metadata: props.metadata ?? {} })).finally(() =>
        this.flights.delete(key),
      );
      // A caller that stopped waiting leaves the flight to finish; its failure is logged, not lost.
      flight.catch((err: unknown) => this.ctx.logger.warn({ err, name: ref.name }, "shared LoRA verification failed"));
      this.flights.set(key, flight);
    }
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<SharedCheck>((resolve) => {
      timer = setTimeout(() => resolve({ state: "pending", sizeBytes }), waitMs);
    });
    try {
      return await Promise.race([flight, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  private async verify(
    ref: SharedBlobRef,
    version: { etag: string; sizeBytes: number; metadata: Record<string, string> },
  ): Promise<SharedCheck> {
    const { ctx } = this;
    const blob = ctx.storage.blob(ref);
    const result = await verifyStoredBlob(ctx, "shared", blob, ref.path, {
      sizeBytes: version.sizeBytes,
      etag: version.etag,
      expectedExtension: /\.(safetensors|sft)$/i.test(ref.name) ? "safetensors" : "pt",
      maxSizeBytes: ctx.cfg.maxLoraSizeBytes,
    });
    let etag = version.etag;
    if (result.ok) {
      const stamp = {
        [SHARED_METADATA.sha256]: result.sha256,
        [SHARED_METADATA.sizeBytes]: String(result.sizeBytes),
      };
      const stamped = Object.entries(stamp).every(([k, v]) => version.metadata[k] === v);
      if (!stamped) {
        try {
          const res = await blob.setMetadata(
            { ...version.metadata, ...stamp, [SHARED_METADATA.verifiedEtag]: version.etag },
            { conditions: { ifMatch: quotedEtag(version.etag) } },
          );
          etag = bareEtag(res.etag);
        } catch (err) {
          // Replaced since it was read: that version is judged when it is next resolved.
          if (err instanceof RestError && err.statusCode === 412)
            return { state: "pending", sizeBytes: version.sizeBytes };
          throw err;
        }
      }
    }
    ctx.metrics.sharedVerifications.add(1, { outcome: result.ok ? "verified" : "rejected" });
    ctx.logger.info(
      { name: ref.name, etag, sha256: result.sha256, ok: result.ok, reason: result.reason },
      "shared LoRA verified",
    );
    this.remember(ref.name, { etag, sizeBytes: version.sizeBytes, result });
    return { state: "verified", etag, sizeBytes: version.sizeBytes, result };
  }

  private remember(name: string, entry: { etag: string; sizeBytes: number; result: VerificationResult }): void {
    this.known.delete(name);
    this.known.set(name, entry);
    if (this.known.size > REMEMBERED) this.known.delete(this.known.keys().next().value as string);
  }
}

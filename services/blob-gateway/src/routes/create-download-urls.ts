import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  type BlobGatewayService,
  checkLoraFileName,
  type DownloadTarget,
  type DownloadUrlSchema,
  ErrorReason,
  MODEL_FILE_EXTENSIONS,
} from "@emprops/contracts";
import { invalidArgument } from "@emprops/platform";
import contentDisposition from "content-disposition";
import type { AppContext } from "../context.js";
import { type BlobRef, previewBlob, sharedBlob, type SharedBlobRef, userBlob } from "../storage/blob-paths.js";
import type { ResponseHeaders } from "../storage/url-signer.js";
import { isNotFound, storageError } from "../storage/storage-errors.js";
import { inSpan } from "../telemetry.js";
import { toBlobVerification } from "../verification/blob-verification.js";
import { ttlSeconds } from "./request-fields.js";

const MAX_TARGETS = 64;

type DownloadUrlInit = MessageInitShape<typeof DownloadUrlSchema>;

/**
 * Read-only URLs of minutes, in request order; every target is checked
 * before any is signed. A shared LoRA is signed only once its current
 * version has been verified safe (its verification comes with the URL).
 */
export function createDownloadUrls(ctx: AppContext): Partial<ServiceImpl<typeof BlobGatewayService>> {
  return {
    async createDownloadUrls(req) {
      if (req.targets.length > MAX_TARGETS) {
        throw invalidArgument(ErrorReason.INVALID_REQUEST, `at most ${MAX_TARGETS} targets per call`, {
          field: "targets",
          max_targets: MAX_TARGETS,
        });
      }
      const refs = req.targets.map((t, i) => targetRef(t, i));
      const headers = req.targets.map((t, i) => responseHeaders(t, refs[i]!, i));
      const ttl = ttlSeconds(req.ttlSeconds, {
        ttl: ctx.cfg.downloadUrlTtlSeconds,
        max: ctx.cfg.downloadUrlMaxTtlSeconds,
      });
      return inSpan(
        "blob.sign_download_urls",
        { "blob.count": refs.length, "blob.ttl_seconds": ttl, "blob.include_properties": req.includeProperties },
        async () => {
          const urls = await Promise.all(
            refs.map((ref, i) =>
              ref.kind === "shared"
                ? sharedUrl(ctx, ref, ttl, headers[i]!)
                : blobUrl(ctx, ref, ttl, headers[i]!, req.includeProperties),
            ),
          );
          ctx.metrics.signedUrls.add(urls.filter((u) => u.url).length, {
            access: "read",
            signer: ctx.storage.signer.kind,
          });
          return { urls };
        },
      );
    },
  };
}

async function signed(ctx: AppContext, ref: BlobRef, ttl: number, headers: ResponseHeaders) {
  const s = await ctx.storage.signedUrl(ref, "read", ttl, headers);
  return { url: s.url, expireTime: timestampFromDate(s.expiresOn) };
}

async function blobUrl(
  ctx: AppContext,
  ref: BlobRef,
  ttl: number,
  headers: ResponseHeaders,
  withSize: boolean,
): Promise<DownloadUrlInit> {
  const [url, size] = await Promise.all([
    signed(ctx, ref, ttl, headers),
    withSize ? sizeOf(ctx, ref) : Promise.resolve(0),
  ]);
  return { ...url, blobPath: ref.path, sizeBytes: BigInt(size) };
}

/** A shared LoRA: its size and verification always; a URL only for a version verified safe. */
async function sharedUrl(
  ctx: AppContext,
  ref: SharedBlobRef,
  ttl: number,
  headers: ResponseHeaders,
): Promise<DownloadUrlInit> {
  const check = await ctx.shared.check(ref, ctx.cfg.sharedVerifyWaitMs).catch((err: unknown) => {
    throw storageError(err, ref.path);
  });
  if (check.state === "missing") return { blobPath: ref.path, sizeBytes: -1n };
  if (check.state === "pending") {
    return { blobPath: ref.path, sizeBytes: BigInt(check.sizeBytes), verificationPending: true };
  }
  const verification = toBlobVerification(check.result);
  if (!check.result.ok) return { blobPath: ref.path, sizeBytes: BigInt(check.sizeBytes), verification };
  return {
    ...(await signed(ctx, ref, ttl, headers)),
    blobPath: ref.path,
    sizeBytes: BigInt(check.sizeBytes),
    verification,
  };
}

function targetRef(target: DownloadTarget, index: number): BlobRef {
  const t = target.target;
  if (t.case === "userLora") return userBlob(t.value, `targets[${index}].user_lora`);
  if (t.case === "sharedLora") return sharedBlob(t.value, `targets[${index}].shared_lora.name`);
  if (t.case === "loraPreview") return previewBlob(t.value, `targets[${index}].lora_preview`);
  throw invalidArgument(ErrorReason.INVALID_REQUEST, `targets[${index}] names no blob`, { field: `targets[${index}]` });
}

/**
 * What the URL makes storage answer with: a download under a file name
 * (RFC 6266 Content-Disposition, built by the content-disposition package:
 * a quoted ASCII fallback plus RFC 8187 filename* when the name has other
 * characters),
 * and previews as WebP images the browser may cache for their lifetime.
 */
function responseHeaders(target: DownloadTarget, ref: BlobRef, index: number): ResponseHeaders {
  const out: ResponseHeaders = {};
  if (target.attachmentFileName) {
    const field = `targets[${index}].attachment_file_name`;
    const checked = checkLoraFileName(target.attachmentFileName, { extensions: MODEL_FILE_EXTENSIONS });
    if (!checked.ok) {
      throw invalidArgument(ErrorReason.INVALID_NAME, `${field}: ${checked.message}`, {
        field,
        problem: checked.problem,
      });
    }
    // The quoted fallback in plain ASCII (storage sends the header as UTF-8, so Latin-1 would arrive mangled).
    const fallback = checked.name.replace(/[^\x20-\x7e]/g, "_");
    out.contentDisposition = contentDisposition(checked.name, { type: "attachment", fallback });
  }
  if (ref.kind === "preview") {
    out.contentType = "image/webp";
    out.cacheControl = "private, max-age=600";
  }
  return out;
}

/** Size of a blob, -1 when it does not exist. */
async function sizeOf(ctx: AppContext, ref: BlobRef): Promise<number> {
  try {
    return (await ctx.storage.blob(ref).getProperties()).contentLength ?? 0;
  } catch (err) {
    if (isNotFound(err)) return -1;
    throw storageError(err, ref.path);
  }
}

import type { BlockBlobClient } from "@azure/storage-blob";
import {
  FormatError,
  type RandomAccessSource,
  TorchToSafetensors,
  UnsafePickleError,
  type VerificationResult,
} from "@emprops/lora-formats";
import type { AppContext } from "../context.js";
import { BlockStager } from "../storage/block-stager.js";
import { quotedEtag } from "../storage/staging.js";
import { inSpan } from "../telemetry.js";

/** Why a checkpoint has no safetensors form, as the upload's refusal says it. */
export interface ConversionRefusal {
  reason: "INVALID_FILE_FORMAT" | "UNSAFE_PICKLE";
  message: string;
}

export type ConversionOutcome =
  { ok: true; sizeBytes: number; sha256: string; tensorCount: number } | { ok: false; refusal: ConversionRefusal };

/**
 * A blob read by range, every read pinned to one ETag: a blob that changed
 * since it was verified fails the conversion (412) instead of being converted.
 */
export function blobSource(blob: BlockBlobClient, size: number, etag: string): RandomAccessSource {
  return {
    size,
    async read(offset, length) {
      if (length === 0) return new Uint8Array(0);
      const res = await blob.download(offset, length, { conditions: { ifMatch: quotedEtag(etag) } });
      const parts: Buffer[] = [];
      for await (const chunk of res.readableStreamBody as AsyncIterable<Buffer>) parts.push(chunk);
      return Buffer.concat(parts);
    },
  };
}

/**
 * Converts a verified torch checkpoint into the safetensors machines
 * receive, streaming: pass 1 re-reads the checkpoint in order with every
 * check of the verifier, pass 2 reads each tensor by range; the output is
 * staged in blocks as it is produced and re-read strictly by the converter,
 * each tensor's sha256 compared with the source's. The block list is
 * committed (create-only, with `metadata` and the output's sha256) only
 * when all of that succeeded, so a failed conversion leaves no blob.
 */
export function convertToSafetensors(
  ctx: AppContext,
  source: RandomAccessSource,
  target: BlockBlobClient,
  metadata: Record<string, string>,
): Promise<ConversionOutcome> {
  return inSpan("blob.convert", { "blob.source_size_bytes": source.size }, async (span) => {
    let conversion: TorchToSafetensors;
    try {
      conversion = await TorchToSafetensors.open(source);
    } catch (err) {
      const refusal = refusalOf(err);
      if (!refusal) throw err;
      ctx.metrics.conversions.add(1, { outcome: "refused" });
      span.setAttribute("blob.conversion", refusal.reason);
      return { ok: false, refusal };
    }
    span.setAttribute("blob.size_bytes", conversion.sizeBytes);
    const stager = new BlockStager(target, {
      blockSize: ctx.cfg.blockSizeBytes,
      inFlight: ctx.cfg.uploadBlocksInFlight,
    });
    try {
      for await (const chunk of conversion.chunks()) await stager.write(chunk);
    } catch (err) {
      await stager.abandon();
      const refusal = refusalOf(err);
      if (!refusal) throw err;
      ctx.metrics.conversions.add(1, { outcome: "refused" });
      span.setAttribute("blob.conversion", refusal.reason);
      return { ok: false, refusal };
    }
    const sha256 = conversion.sha256 as string;
    await stager.commit({ ifNoneMatch: "*" }, { ...metadata, sha256 });
    ctx.metrics.conversions.add(1, { outcome: "converted" });
    ctx.metrics.convertedBytes.add(conversion.sizeBytes);
    span.setAttributes({ "blob.conversion": "converted", "blob.tensor_count": conversion.tensors.length });
    return { ok: true, sizeBytes: conversion.sizeBytes, sha256, tensorCount: conversion.tensors.length };
  });
}

function refusalOf(err: unknown): ConversionRefusal | undefined {
  if (err instanceof FormatError) {
    return {
      reason: "INVALID_FILE_FORMAT",
      message: `The checkpoint cannot be converted to safetensors: ${err.message}`,
    };
  }
  if (err instanceof UnsafePickleError) return { reason: "UNSAFE_PICKLE", message: err.message };
  return undefined;
}

/** The verified original's verdict, turned into the refusal of a checkpoint that has no safetensors form. */
export function asRejection(result: VerificationResult, refusal: ConversionRefusal): VerificationResult {
  return { ...result, ok: false, reason: refusal.reason, message: refusal.message };
}

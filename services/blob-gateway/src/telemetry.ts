import { type Attributes, type Counter, type Span, SpanStatusCode } from "@opentelemetry/api";
import { meter, tracer } from "@emprops/platform";

/** The gateway's counters; made when the context is built, after the SDK has started. */
export interface GatewayMetrics {
  /** Signed URLs handed out, by access ("create-write" | "read"). */
  signedUrls: Counter;
  /** Verifications, by source ("verify" | "upload"), status and reason. */
  verifications: Counter;
  /** Bytes read through verification. */
  verifiedBytes: Counter;
  /** Blob deletions, by source ("rpc" | "event") and result ("deleted" | "absent" | "failed" | "malformed"). */
  deletions: Counter;
  /** Uploads committed by CommitUpload, by outcome ("stored" | "rejected" | "uncommitted" | "failed"). */
  commits: Counter;
  /** Server-side copies of verified uploads, by mode ("sync" | "async"). */
  serverCopies: Counter;
  /** .pt → safetensors conversions, by outcome ("converted" | "refused"). */
  conversions: Counter;
  /** Bytes of safetensors written by conversions. */
  convertedBytes: Counter;
  /** Shared LoRA verifications, by outcome ("verified" | "cached" | "rejected"). */
  sharedVerifications: Counter;
}

export function createMetrics(): GatewayMetrics {
  const m = meter();
  return {
    signedUrls: m.createCounter("blob_gateway.signed_urls", { description: "Signed blob URLs issued" }),
    verifications: m.createCounter("blob_gateway.verifications", { description: "Content verifications" }),
    verifiedBytes: m.createCounter("blob_gateway.verified_bytes", { description: "Bytes verified", unit: "By" }),
    deletions: m.createCounter("blob_gateway.deletions", { description: "Blob deletions" }),
    commits: m.createCounter("blob_gateway.commits", { description: "Uploads committed to their final path" }),
    serverCopies: m.createCounter("blob_gateway.server_copies", { description: "Server-side copies of uploads" }),
    conversions: m.createCounter("blob_gateway.conversions", { description: ".pt to safetensors conversions" }),
    convertedBytes: m.createCounter("blob_gateway.converted_bytes", {
      description: "Bytes of safetensors written by conversions",
      unit: "By",
    }),
    sharedVerifications: m.createCounter("blob_gateway.shared_verifications", {
      description: "Shared LoRA verifications before signing",
    }),
  };
}

/** Runs fn in a span of its own; a thrown error marks the span and is rethrown. */
export async function inSpan<T>(name: string, attributes: Attributes, fn: (span: Span) => Promise<T>): Promise<T> {
  return tracer().startActiveSpan(name, { attributes }, async (span) => {
    try {
      return await fn(span);
    } catch (err) {
      span.recordException(err as Error);
      span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message });
      throw err;
    } finally {
      span.end();
    }
  });
}

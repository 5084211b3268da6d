import { create, type MessageInitShape } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  type EnsureLorasRequest,
  EnsureLorasResponseSchema,
  type EnsureLorasWithProgressResponseSchema,
  ErrorReason,
  type MachineCacheService,
} from "@emprops/contracts";
import { invalidArgument } from "@emprops/platform";
import type { EnsureInput } from "../cache/lora-cache.js";
import type { AppContext } from "../context.js";
import { MAX_REFS, parseReference, parseUserId } from "../validation.js";
import { workflowReferences } from "../workflow-refs.js";
import { checkLength } from "./field-checks.js";

type ProgressMessage = MessageInitShape<typeof EnsureLorasWithProgressResponseSchema>;

/**
 * EnsureLoras: ComfyUI's loader asks for local paths of a job's LoRAs.
 * EnsureLorasWithProgress: the same, streamed with each reference's progress, then the results.
 */
export function ensureLoras(ctx: AppContext): Partial<ServiceImpl<typeof MachineCacheService>> {
  return {
    async ensureLoras(req, call) {
      const results = await ctx.cache.ensure(ensureInput(req, call));
      return create(EnsureLorasResponseSchema, { results });
    },
    // Not a generator: the batch starts inside the call (its trace and deadline), the stream is read after.
    ensureLorasWithProgress(req, call) {
      const input = ensureInput(req, call);
      const stream = new MessageQueue<ProgressMessage>(call.signal);
      ctx.cache.ensure({ ...input, onProgress: (value) => stream.push({ event: { case: "progress", value } }) }).then(
        (results) => stream.end({ event: { case: "result", value: { results } } }),
        (err: unknown) => stream.fail(err),
      );
      return stream;
    },
  };
}

/** The request, validated: refs and workflow_json's references together, at most MAX_REFS. */
function ensureInput(req: EnsureLorasRequest, call: HandlerContext): EnsureInput {
  // "" when the job has no user: enough for shared LoRAs, a user LoRA then fails on its own.
  const userId = req.userId === "" ? "" : parseUserId(req.userId);
  checkLength("job_id", req.jobId, 128);
  checkLength("workflow_id", req.workflowId, 256);
  checkLength("workflow_name", req.workflowName, 512);
  const fromWorkflow = req.workflowJson ? workflowReferences(req.workflowJson) : [];
  const refs = [...req.refs, ...fromWorkflow];
  if (refs.length > MAX_REFS) {
    throw invalidArgument(
      ErrorReason.INVALID_REQUEST,
      `at most ${MAX_REFS} LoRA references per request (got ${refs.length}, refs and workflow_json together)`,
      { max_refs: MAX_REFS, refs: refs.length },
    );
  }
  const keys = refs.map((ref, i) =>
    parseReference(ref, userId, i < req.refs.length ? `refs[${i}]` : `workflow_json reference "${ref.identifier}"`),
  );
  return {
    jobId: req.jobId,
    userId,
    workflowId: req.workflowId,
    workflowName: req.workflowName,
    keys,
    timeoutMs: call.timeoutMs(),
  };
}

/**
 * Messages pushed by the batch, read by the response stream. A caller that
 * cancels (the signal) or stops reading ends it and nothing more is kept; the
 * batch, and the downloads other callers wait on, go on.
 */
class MessageQueue<T> implements AsyncIterable<T> {
  private readonly queued: T[] = [];
  private closed = false;
  private failure: { err: unknown } | undefined;
  private wake: (() => void) | undefined;

  constructor(signal: AbortSignal) {
    signal.addEventListener("abort", () => this.close(), { once: true });
  }

  push(message: T): void {
    if (this.closed) return;
    this.queued.push(message);
    this.wake?.();
  }

  /** The last message. */
  end(message: T): void {
    this.push(message);
    this.close();
  }

  fail(err: unknown): void {
    if (this.closed) return;
    this.failure = { err };
    this.close();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<T> {
    try {
      for (;;) {
        const next = this.queued.shift();
        if (next !== undefined) {
          yield next;
          continue;
        }
        if (this.failure) throw this.failure.err;
        if (this.closed) return;
        await new Promise<void>((resolve) => (this.wake = resolve));
        this.wake = undefined;
      }
    } finally {
      this.close();
      this.queued.length = 0;
    }
  }

  private close(): void {
    this.closed = true;
    this.wake?.();
  }
}

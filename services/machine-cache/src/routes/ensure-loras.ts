import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { EnsureLorasResponseSchema, ErrorReason, type MachineCacheService } from "@emprops/contracts";
import { invalidArgument } from "@emprops/platform";
import type { AppContext } from "../context.js";
import { MAX_REFS, parseReference, parseUserId } from "../validation.js";
import { workflowReferences } from "../workflow-refs.js";
import { checkLength } from "./field-checks.js";

/** EnsureLoras: ComfyUI's loader asks for local paths of a job's LoRAs. */
export function ensureLoras(ctx: AppContext): Partial<ServiceImpl<typeof MachineCacheService>> {
  return {
    async ensureLoras(req, call) {
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
      const results = await ctx.cache.ensure({
        jobId: req.jobId,
        userId,
        workflowId: req.workflowId,
        workflowName: req.workflowName,
        keys,
        timeoutMs: call.timeoutMs(),
      });
      return create(EnsureLorasResponseSchema, { results });
    },
  };
}

import { create } from "@bufbuild/protobuf";
import { ErrorReason, type LoraReference, LoraReferenceSchema, LoraSource } from "@emprops/contracts";
import { invalidArgument } from "@emprops/platform";
import { SHARED_DIR, USERS_DIR } from "./cache/cache-layout.js";

/** Largest workflow document accepted. */
export const MAX_WORKFLOW_BYTES = 4 * 1024 * 1024;

interface NodeView {
  id: string;
  type: string;
  inputs: Record<string, unknown>;
  widgets: unknown[];
}

/** UI-format node modes that do not run: 2 muted, 4 bypassed. */
const SKIPPED_MODES = new Set([2, 4]);

/** Widget order of loader nodes in ComfyUI's UI format, where inputs are positional. */
const LORA_NAME_WIDGET_NODES = new Set([
  "LoraLoader",
  "LoraLoaderModelOnly",
  "EmProps_Lora_Loader",
  "EmProps_Lora_Loader_Simple",
]);

/**
 * The LoRA references of a ComfyUI workflow, in node order without
 * duplicates: EmProps_Lora_Loader nodes with `lora_source` user | shared and
 * `lora_identifier` (or the specification's `lora_id`), and the old
 * `lora_name` strings, which name shared LoRAs (a name this cache handed out,
 * `shared/x` or `users/{user}/{id}-x`, maps back to its reference). Accepts
 * the API format (`{"14": {"class_type", "inputs"}}`, also inside
 * `{"prompt": …}`) and the UI format (`{"nodes": [{"type", "inputs" |
 * "widgets_values"}]}`).
 */
export function workflowReferences(json: string): LoraReference[] {
  if (Buffer.byteLength(json) > MAX_WORKFLOW_BYTES) {
    throw invalidArgument(ErrorReason.INVALID_WORKFLOW, `workflow_json is larger than ${MAX_WORKFLOW_BYTES} bytes`);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(json);
  } catch (err) {
    throw invalidArgument(
      ErrorReason.INVALID_WORKFLOW,
      `workflow_json is not JSON: ${err instanceof Error ? err.message : String(err)}`,
    );
  }
  const refs: LoraReference[] = [];
  const seen = new Set<string>();
  for (const node of nodesOf(doc)) {
    for (const ref of nodeReferences(node)) {
      const key = `${ref.source}:${ref.identifier}`;
      if (seen.has(key)) continue;
      seen.add(key);
      refs.push(ref);
    }
  }
  return refs;
}

function nodesOf(doc: unknown): NodeView[] {
  if (!isObject(doc)) {
    throw invalidArgument(ErrorReason.INVALID_WORKFLOW, "workflow_json must be a JSON object");
  }
  if (isObject(doc.prompt)) return nodesOf(doc.prompt);
  if (Array.isArray(doc.nodes)) {
    return doc.nodes.filter(isObject).flatMap((n) => {
      if (typeof n.mode === "number" && SKIPPED_MODES.has(n.mode)) return [];
      return [
        {
          id: String(n.id ?? ""),
          type: typeof n.type === "string" ? n.type : typeof n.class_type === "string" ? n.class_type : "",
          inputs: isObject(n.inputs) ? n.inputs : {},
          widgets: Array.isArray(n.widgets_values) ? n.widgets_values : [],
        },
      ];
    });
  }
  // API format: node id → node, run in id order.
  return Object.entries(doc)
    .filter((entry): entry is [string, Record<string, unknown>] => isObject(entry[1]) && "class_type" in entry[1])
    .sort(([a], [b]) => compareIds(a, b))
    .map(([id, n]) => ({
      id,
      type: typeof n.class_type === "string" ? n.class_type : "",
      inputs: isObject(n.inputs) ? n.inputs : {},
      widgets: [],
    }));
}

function nodeReferences(node: NodeView): LoraReference[] {
  const source = node.inputs.lora_source;
  const identifier = scalar(node.inputs.lora_identifier) ?? scalar(node.inputs.lora_id);
  if ((source === "user" || source === "shared") && identifier) {
    return [reference(source === "user" ? LoraSource.USER : LoraSource.SHARED, identifier)];
  }
  const name = scalar(node.inputs.lora_name);
  if (name) return [legacyName(name)];
  const [first, second] = node.widgets;
  if ((first === "user" || first === "shared") && scalar(second)) {
    return [reference(first === "user" ? LoraSource.USER : LoraSource.SHARED, scalar(second) as string)];
  }
  if (LORA_NAME_WIDGET_NODES.has(node.type) && scalar(first)) return [legacyName(scalar(first) as string)];
  return [];
}

/** An old lora_name: a shared LoRA, unless it is a path this cache handed out. */
function legacyName(name: string): LoraReference {
  const normalized = name.replace(/\\/g, "/");
  const user = new RegExp(`^${USERS_DIR}/[0-9a-fA-F-]{36}/(\\d+)-[^/]+$`).exec(normalized);
  if (user?.[1]) return reference(LoraSource.USER, user[1]);
  if (normalized.startsWith(`${SHARED_DIR}/`))
    return reference(LoraSource.SHARED, normalized.slice(SHARED_DIR.length + 1));
  return reference(LoraSource.SHARED, name);
}

function reference(source: LoraSource, identifier: string): LoraReference {
  return create(LoraReferenceSchema, { source, identifier: identifier.trim() });
}

/** A string or number input; links (arrays) and empty strings are not values. */
function scalar(v: unknown): string | undefined {
  if (typeof v === "number" && Number.isFinite(v)) return String(v);
  if (typeof v === "string" && v.trim() !== "") return v.trim();
  return undefined;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function compareIds(a: string, b: string): number {
  const na = Number(a);
  const nb = Number(b);
  return Number.isFinite(na) && Number.isFinite(nb) ? na - nb : a.localeCompare(b);
}

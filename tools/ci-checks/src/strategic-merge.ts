import { isRecord } from "./manifest.js";

/**
 * Merge keys of the lists our manifests patch, as Kubernetes declares them
 * (x-kubernetes-patch-merge-key). Other lists are replaced whole.
 */
const MERGE_KEYS: Record<string, string[]> = {
  containers: ["name"],
  initContainers: ["name"],
  env: ["name"],
  volumes: ["name"],
  volumeMounts: ["mountPath"],
  imagePullSecrets: ["name"],
  // Container ports merge by containerPort, Service ports by port.
  ports: ["containerPort", "port"],
};

/**
 * Applies a strategic merge patch: maps merge recursively, null deletes a
 * field, lists with a merge key merge item by item, other lists are
 * replaced. Directives ($patch, $setElementOrder, …) are not supported.
 */
export function strategicMerge(target: unknown, patch: unknown, field = ""): unknown {
  if (isRecord(patch)) {
    if (Object.keys(patch).some((k) => k.startsWith("$"))) {
      throw new Error(`patch directive in ${field || "patch"} is not supported: ${Object.keys(patch).join(", ")}`);
    }
    const out: Record<string, unknown> = isRecord(target) ? { ...target } : {};
    for (const [key, value] of Object.entries(patch)) {
      if (value === null) delete out[key];
      else out[key] = strategicMerge(out[key], value, key);
    }
    return out;
  }
  if (Array.isArray(patch) && Array.isArray(target)) {
    const key = (MERGE_KEYS[field] ?? []).find((k) => patch.every((item) => isRecord(item) && k in item));
    if (!key) return patch;
    const out = [...target];
    for (const item of patch as Record<string, unknown>[]) {
      const i = out.findIndex((t) => isRecord(t) && t[key] === item[key]);
      if (i >= 0) out[i] = strategicMerge(out[i], item, field);
      else out.push(item);
    }
    return out;
  }
  return patch;
}

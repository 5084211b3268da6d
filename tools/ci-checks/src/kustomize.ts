import { readFileSync, statSync } from "node:fs";
import path from "node:path";
import { parseAllDocuments } from "yaml";
import { isRecord, type K8sObject, objectId } from "./manifest.js";
import { strategicMerge } from "./strategic-merge.js";

/** The kustomization fields this renderer implements; anything else is refused, never ignored. */
const SUPPORTED = new Set(["apiVersion", "kind", "resources", "labels", "namespace", "replicas", "images", "patches"]);

/** Parses every YAML document of a file into objects; empty documents are skipped. */
export function readYamlObjects(file: string): unknown[] {
  const docs = parseAllDocuments(readFileSync(file, "utf8"), { prettyErrors: true });
  const out: unknown[] = [];
  for (const doc of docs) {
    if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors.map((e) => e.message).join("; ")}`);
    const value: unknown = doc.toJS({ maxAliasCount: 0 });
    if (value !== null && value !== undefined) out.push(value);
  }
  return out;
}

function asObject(value: unknown, source: string): K8sObject {
  if (!isRecord(value) || typeof value.apiVersion !== "string" || typeof value.kind !== "string") {
    throw new Error(`${source}: every document must be a Kubernetes object with apiVersion and kind`);
  }
  const metadata = value.metadata;
  if (!isRecord(metadata) || typeof metadata.name !== "string" || metadata.name === "") {
    throw new Error(`${source}: ${value.kind} has no metadata.name`);
  }
  return structuredClone(value) as K8sObject;
}

/**
 * Renders a kustomization directory the way `kustomize build` does, for the
 * subset of kustomize our manifests use: resources (files and directories),
 * labels (metadata only), namespace, replicas, images and strategic-merge
 * patches from files. An unsupported field is an error.
 */
export function renderKustomization(dir: string): K8sObject[] {
  const file = path.join(dir, "kustomization.yaml");
  const [k] = readYamlObjects(file);
  if (!isRecord(k) || k.kind !== "Kustomization") throw new Error(`${file}: not a Kustomization`);
  const unsupported = Object.keys(k).filter((key) => !SUPPORTED.has(key));
  if (unsupported.length > 0) throw new Error(`${file}: unsupported fields ${unsupported.join(", ")}`);

  let objects: K8sObject[] = [];
  for (const entry of list<string>(k.resources, file, "resources")) {
    const target = path.resolve(dir, entry);
    const found = statSync(target, { throwIfNoEntry: false });
    if (!found) throw new Error(`${file}: resource ${entry} does not exist`);
    objects.push(
      ...(found.isDirectory()
        ? renderKustomization(target)
        : readYamlObjects(target).map((doc) => asObject(doc, path.relative(process.cwd(), target)))),
    );
  }
  const ids = objects.map(objectId);
  const dup = ids.find((id, i) => ids.indexOf(id) !== i);
  if (dup) throw new Error(`${file}: ${dup} is defined twice`);

  for (const entry of list<Record<string, unknown>>(k.patches, file, "patches")) {
    if (typeof entry.path !== "string" || Object.keys(entry).some((key) => key !== "path")) {
      throw new Error(`${file}: only patches given by path are supported`);
    }
    const patchFile = path.resolve(dir, entry.path);
    for (const patch of readYamlObjects(patchFile).map((doc) => asObject(doc, patchFile))) {
      const i = objects.findIndex((o) => o.kind === patch.kind && o.metadata.name === patch.metadata.name);
      if (i < 0) throw new Error(`${patchFile}: patch target ${objectId(patch)} is not among the resources`);
      objects[i] = strategicMerge(objects[i], patch) as K8sObject;
    }
  }

  for (const entry of list<Record<string, unknown>>(k.replicas, file, "replicas")) {
    const target = objects.find((o) => o.metadata.name === entry.name && isRecord(o.spec) && "replicas" in o.spec);
    if (!target || typeof entry.count !== "number") throw new Error(`${file}: replicas for ${String(entry.name)}`);
    (target.spec as Record<string, unknown>).replicas = entry.count;
  }

  for (const entry of list<Record<string, unknown>>(k.images, file, "images")) {
    objects = objects.map((o) => rewriteImages(o, entry));
  }

  for (const entry of list<Record<string, unknown>>(k.labels, file, "labels")) {
    if (entry.includeSelectors || entry.includeTemplates) {
      throw new Error(`${file}: labels with includeSelectors or includeTemplates are not supported`);
    }
    const pairs = entry.pairs as Record<string, string>;
    for (const o of objects) o.metadata.labels = { ...o.metadata.labels, ...pairs };
  }

  if (typeof k.namespace === "string") {
    for (const o of objects) if (!CLUSTER_SCOPED.has(o.kind)) o.metadata.namespace = k.namespace;
  }
  return objects;
}

const CLUSTER_SCOPED = new Set(["Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass"]);

function list<T>(value: unknown, file: string, field: string): T[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) throw new Error(`${file}: ${field} must be a list`);
  return value as T[];
}

/** kustomize's images transformer: name → newName / newTag / digest. */
function rewriteImages(o: K8sObject, entry: Record<string, unknown>): K8sObject {
  const pod = isRecord(o.spec) && isRecord(o.spec.template) ? (o.spec.template as Record<string, unknown>).spec : null;
  if (!isRecord(pod)) return o;
  for (const c of [...((pod.containers as unknown[]) ?? []), ...((pod.initContainers as unknown[]) ?? [])]) {
    if (!isRecord(c) || typeof c.image !== "string") continue;
    const { name, tag } = splitImage(c.image);
    if (name !== entry.name) continue;
    const newName = typeof entry.newName === "string" ? entry.newName : name;
    c.image =
      typeof entry.digest === "string"
        ? `${newName}@${entry.digest}`
        : `${newName}${typeof entry.newTag === "string" ? `:${entry.newTag}` : tag ? `:${tag}` : ""}`;
  }
  return o;
}

function splitImage(image: string): { name: string; tag?: string } {
  const at = image.indexOf("@");
  if (at >= 0) return { name: image.slice(0, at) };
  const colon = image.lastIndexOf(":");
  return colon > image.lastIndexOf("/")
    ? { name: image.slice(0, colon), tag: image.slice(colon + 1) }
    : { name: image };
}

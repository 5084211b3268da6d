import { type Container, containersOf, isRecord, type K8sObject, objectId } from "./manifest.js";
import { acceptedVariables, type ConfigLoader, configProblems } from "./service-configs.js";

/** Values a pod gets from the downward API, as stand-ins for the config parse. */
const FIELD_STAND_INS: Record<string, string> = {
  "spec.nodeName": "gpu-node-1",
  "metadata.name": "pod-0",
  "metadata.namespace": "default",
  "status.podIP": "10.0.0.1",
};

export interface Source {
  value: string;
  /** An empty value taken from a Secret: a placeholder to be filled per environment. */
  secretPlaceholder: boolean;
}

/**
 * Checks every container that runs one of our services (container name =
 * service name): each variable it sets — `env` entries and every key of the
 * ConfigMaps and Secrets in `envFrom` — must be one the service's config
 * accepts, and the resulting environment must pass the service's own config
 * parse, except for Secret placeholders left empty on purpose. Variables
 * that only feed `$(VAR)` references of other entries are allowed.
 */
export function checkWorkloadEnv(objects: K8sObject[], loaders: Record<string, ConfigLoader>): string[] {
  const problems: string[] = [];
  for (const workload of objects) {
    for (const container of containersOf(workload)) {
      const load = loaders[container.name];
      if (!load) continue;
      const where = `${objectId(workload)} container ${container.name}`;
      const accepted = acceptedVariables(load);
      const { env, helpers, problems: found } = containerEnv(objects, container, where);
      problems.push(...found);
      for (const name of env.keys()) {
        if (!accepted.has(name) && !helpers.has(name)) {
          problems.push(`${where}: ${name} is not a variable ${container.name} reads`);
        }
      }
      const placeholders = new Set([...env].filter(([, s]) => s.secretPlaceholder).map(([name]) => name));
      const plain = Object.fromEntries([...env].map(([name, s]) => [name, s.value]));
      for (const problem of configProblems(load, plain)) {
        const variable = problem.split(":")[0] ?? "";
        if (!placeholders.has(variable)) problems.push(`${where}: the config refuses it: ${problem}`);
      }
    }
  }
  return problems;
}

/**
 * The environment a container gets: envFrom ConfigMaps and Secrets, then its
 * env entries (with $(VAR) expanded and downward-API fields stood in for),
 * and the names that only feed $(VAR) references.
 */
export function containerEnv(
  objects: K8sObject[],
  container: Container,
  where: string,
): { env: Map<string, Source>; helpers: Set<string>; problems: string[] } {
  const byRef = (kind: string, name: string) => objects.find((o) => o.kind === kind && o.metadata.name === name);
  const env = new Map<string, Source>();
  const problems = collectEnvFrom(container, byRef, env, where);
  const helpers = new Set<string>();
  for (const entry of container.env ?? []) {
    const value = entryValue(entry, byRef, env, where, problems);
    for (const ref of (entry.value ?? "").matchAll(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g)) helpers.add(ref[1] ?? "");
    env.set(entry.name, { value, secretPlaceholder: false });
  }
  return { env, helpers, problems };
}

function collectEnvFrom(
  container: Container,
  byRef: (kind: string, name: string) => K8sObject | undefined,
  env: Map<string, Source>,
  where: string,
): string[] {
  const problems: string[] = [];
  for (const from of container.envFrom ?? []) {
    const ref = from.configMapRef ?? from.secretRef;
    const kind = from.configMapRef ? "ConfigMap" : "Secret";
    if (!ref) continue;
    const source = byRef(kind, ref.name);
    if (!source) {
      if (!ref.optional) problems.push(`${where}: envFrom ${kind} ${ref.name} is not in the manifests`);
      continue;
    }
    for (const [key, value] of Object.entries(dataOf(source))) {
      env.set(key, { value, secretPlaceholder: kind === "Secret" && value === "" });
    }
  }
  return problems;
}

function entryValue(
  entry: NonNullable<Container["env"]>[number],
  byRef: (kind: string, name: string) => K8sObject | undefined,
  env: Map<string, Source>,
  where: string,
  problems: string[],
): string {
  if (entry.value !== undefined) {
    return entry.value.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (all, name: string) => env.get(name)?.value ?? all);
  }
  const from = entry.valueFrom ?? {};
  if (isRecord(from.fieldRef)) {
    const path = String(from.fieldRef.fieldPath);
    const standIn = FIELD_STAND_INS[path];
    if (standIn === undefined)
      problems.push(`${where}: ${entry.name} uses fieldRef ${path}, which this check cannot stand in for`);
    return standIn ?? "";
  }
  for (const [key, kind] of [
    ["configMapKeyRef", "ConfigMap"],
    ["secretKeyRef", "Secret"],
  ] as const) {
    const ref = from[key];
    if (!isRecord(ref)) continue;
    const source = byRef(kind, String(ref.name));
    const value = source ? dataOf(source)[String(ref.key)] : undefined;
    if (value === undefined && !ref.optional) {
      problems.push(
        `${where}: ${entry.name} refers to ${kind} ${String(ref.name)} key ${String(ref.key)}, which is not in the manifests`,
      );
    }
    return value ?? "";
  }
  return "";
}

/** A ConfigMap's data, or a Secret's stringData and (decoded) data. */
function dataOf(o: K8sObject): Record<string, string> {
  const out: Record<string, string> = {};
  if (isRecord(o.data)) {
    for (const [k, v] of Object.entries(o.data)) {
      out[k] = o.kind === "Secret" ? Buffer.from(String(v), "base64").toString("utf8") : String(v);
    }
  }
  if (isRecord(o.stringData)) for (const [k, v] of Object.entries(o.stringData)) out[k] = String(v);
  return out;
}

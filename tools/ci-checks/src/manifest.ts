/** A Kubernetes object as parsed from YAML. */
export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; [key: string]: unknown };
  [key: string]: unknown;
}

/** "Deployment/lora-registry": how problems name an object. */
export function objectId(o: Pick<K8sObject, "kind" | "metadata">): string {
  return `${o.kind}/${o.metadata.name}`;
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** A workload's pod template spec, for the kinds that have one. */
export function podSpecOf(o: K8sObject): Record<string, unknown> | undefined {
  const spec = o.spec;
  if (!isRecord(spec)) return undefined;
  const template = spec.template;
  if (!isRecord(template) || !isRecord(template.spec)) return undefined;
  return template.spec;
}

export interface Container {
  name: string;
  image?: string;
  env?: { name: string; value?: string; valueFrom?: Record<string, unknown> }[];
  envFrom?: { configMapRef?: { name: string; optional?: boolean }; secretRef?: { name: string; optional?: boolean } }[];
  ports?: { name?: string; containerPort: number }[];
  [key: string]: unknown;
}

export function containersOf(o: K8sObject): Container[] {
  const spec = podSpecOf(o);
  return Array.isArray(spec?.containers) ? (spec.containers as Container[]) : [];
}

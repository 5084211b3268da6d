import type { DescService } from "@bufbuild/protobuf";
import * as contracts from "@emprops/contracts";
import { containerEnv } from "./env-check.js";
import { containersOf, isRecord, type K8sObject, objectId } from "./manifest.js";
import { type ConfigLoader, portVariable } from "./service-configs.js";

/** Every gRPC service name in the contracts (what a probe's `grpc.service` may ask for). */
export function contractServiceNames(): Set<string> {
  const names = new Set<string>([""]);
  const visit = (value: unknown, depth: number) => {
    if (!isRecord(value) || depth > 1) return;
    if ((value as Partial<DescService>).kind === "service") names.add((value as unknown as DescService).typeName);
    else for (const v of Object.values(value)) visit(v, depth + 1);
  };
  for (const v of Object.values(contracts)) visit(v, 0);
  return names;
}

const PROBES = ["startupProbe", "readinessProbe", "livenessProbe"] as const;
const WORKLOADS = new Set(["Deployment", "DaemonSet", "StatefulSet"]);

/**
 * Checks what the schemas cannot: each service container listens where its
 * config says (the *_PORT variable) and its probes ask that port for a
 * service the contracts define; every container has resource requests and
 * limits; each Service's selector finds a workload and its target port is
 * a named container port; each Deployment of ours has a
 * PodDisruptionBudget selecting its pods.
 */
export function checkWorkloads(objects: K8sObject[], loaders: Record<string, ConfigLoader>): string[] {
  const problems: string[] = [];
  const services = contractServiceNames();
  const workloads = objects.filter((o) => WORKLOADS.has(o.kind));
  for (const w of workloads) {
    for (const c of containersOf(w)) {
      const where = `${objectId(w)} container ${c.name}`;
      const resources = isRecord(c.resources) ? c.resources : {};
      if (!isRecord(resources.requests) || !isRecord(resources.limits)) {
        problems.push(`${where}: set resource requests and limits`);
      }
      const load = loaders[c.name];
      if (!load) continue;
      const variable = portVariable(load);
      const { env } = containerEnv(objects, c, where);
      const port = Number(variable ? env.get(variable)?.value : NaN);
      if (!Number.isInteger(port)) {
        problems.push(
          `${where}: set ${variable ?? "the port variable"} in its ConfigMap (the probes and Service depend on it)`,
        );
        continue;
      }
      if (!(c.ports ?? []).some((p) => p.containerPort === port)) {
        problems.push(`${where}: listens on ${port} (${variable}) but declares ports ${JSON.stringify(c.ports ?? [])}`);
      }
      for (const probe of PROBES) {
        const grpc = isRecord(c[probe]) ? (c[probe] as Record<string, unknown>).grpc : undefined;
        if (!isRecord(grpc)) {
          if (probe !== "startupProbe") problems.push(`${where}: ${probe} must be a grpc probe (grpc.health.v1)`);
          continue;
        }
        if (grpc.port !== port)
          problems.push(`${where}: ${probe} asks port ${String(grpc.port)}, the service listens on ${port}`);
        if (!services.has(String(grpc.service ?? ""))) {
          problems.push(`${where}: ${probe} asks for ${String(grpc.service)}, which no contract defines`);
        }
      }
    }
  }

  for (const svc of objects.filter((o) => o.kind === "Service")) {
    const spec = isRecord(svc.spec) ? svc.spec : {};
    const selector = isRecord(spec.selector) ? (spec.selector as Record<string, string>) : {};
    const target = workloads.find((w) => matches(selector, templateLabels(w)));
    if (!target) {
      problems.push(`${objectId(svc)}: its selector ${JSON.stringify(selector)} matches no workload`);
      continue;
    }
    const named = new Set(containersOf(target).flatMap((c) => (c.ports ?? []).map((p) => p.name)));
    const numbers = new Set(containersOf(target).flatMap((c) => (c.ports ?? []).map((p) => p.containerPort)));
    for (const p of Array.isArray(spec.ports) ? (spec.ports as Record<string, unknown>[]) : []) {
      const t = p.targetPort ?? p.port;
      if (typeof t === "string" ? !named.has(t) : !numbers.has(Number(t))) {
        problems.push(`${objectId(svc)}: target port ${String(t)} is not a port of ${objectId(target)}`);
      }
    }
  }

  const budgets = objects.filter((o) => o.kind === "PodDisruptionBudget");
  for (const w of workloads.filter((o) => o.kind === "Deployment" && containersOf(o).some((c) => loaders[c.name]))) {
    const covered = budgets.some((b) => {
      const sel = isRecord(b.spec) && isRecord(b.spec.selector) ? b.spec.selector.matchLabels : undefined;
      return isRecord(sel) && matches(sel as Record<string, string>, templateLabels(w));
    });
    if (!covered) problems.push(`${objectId(w)}: no PodDisruptionBudget selects its pods`);
  }
  return problems;
}

function templateLabels(w: K8sObject): Record<string, string> {
  const template = isRecord(w.spec) && isRecord(w.spec.template) ? w.spec.template : {};
  const meta = isRecord(template.metadata) ? template.metadata : {};
  return isRecord(meta.labels) ? (meta.labels as Record<string, string>) : {};
}

function matches(selector: Record<string, string>, labels: Record<string, string>): boolean {
  const entries = Object.entries(selector);
  return entries.length > 0 && entries.every(([k, v]) => labels[k] === v);
}

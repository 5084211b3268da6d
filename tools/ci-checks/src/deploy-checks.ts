import { readdirSync } from "node:fs";
import path from "node:path";
import { checkServiceDockerfile } from "./dockerfile-check.js";
import { checkWorkloadEnv } from "./env-check.js";
import { findUnknownFields, validateAgainstSchemas } from "./k8s-schema.js";
import { renderKustomization } from "./kustomize.js";
import type { K8sObject } from "./manifest.js";
import { CONFIG_LOADERS } from "./service-configs.js";
import { checkTiltfile } from "./tiltfile-check.js";
import { checkWorkloads } from "./workload-check.js";
import { repoRoot, serviceNames } from "./workspace.js";

/** deploy/k8s/base and every overlay, relative to the root. */
export function kustomizations(root = repoRoot): string[] {
  const overlays = path.join(root, "deploy/k8s/overlays");
  return ["deploy/k8s/base", ...readdirSync(overlays).map((d) => `deploy/k8s/overlays/${d}`)];
}

/** Problems per check; every list empty means the deployment is consistent. */
export type Report = Record<string, string[]>;

export function checkDeployment(root = repoRoot): Report {
  const report: Report = {};
  const rendered = new Map<string, K8sObject[]>();
  for (const dir of kustomizations(root)) {
    let objects: K8sObject[];
    try {
      objects = renderKustomization(path.join(root, dir));
    } catch (err) {
      report[`${dir}: render`] = [(err as Error).message];
      continue;
    }
    rendered.set(dir, objects);
    report[`${dir}: Kubernetes schemas`] = validateAgainstSchemas(objects);
    report[`${dir}: unknown fields`] = findUnknownFields(objects);
    report[`${dir}: environment vs service config`] = checkWorkloadEnv(objects, CONFIG_LOADERS);
    report[`${dir}: ports, probes, services, budgets, resources`] = checkWorkloads(objects, CONFIG_LOADERS);
  }
  const missing = serviceNames(root).filter((s) => !CONFIG_LOADERS[s]);
  report["service config loaders"] = missing.map((s) => `services/${s} has no config loader in tools/ci-checks`);
  for (const service of serviceNames(root)) {
    const load = CONFIG_LOADERS[service];
    if (load) report[`deploy/docker/${service}.Dockerfile`] = checkServiceDockerfile(service, load, root);
  }
  const dev = rendered.get("deploy/k8s/overlays/dev");
  report["Tiltfile"] = dev ? checkTiltfile(dev, root) : ["the dev overlay did not render"];
  return report;
}

/** Prints a report; returns the number of problems. */
export function printReport(report: Report, out: NodeJS.WritableStream = process.stdout): number {
  let count = 0;
  for (const [check, problems] of Object.entries(report)) {
    out.write(`${problems.length === 0 ? "ok  " : "FAIL"} ${check}\n`);
    for (const p of problems) out.write(`       ${p}\n`);
    count += problems.length;
  }
  return count;
}

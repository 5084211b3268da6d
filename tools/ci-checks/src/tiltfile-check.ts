import { readFileSync } from "node:fs";
import path from "node:path";
import { dockerfilePath } from "./dockerfile-check.js";
import { containersOf, type K8sObject } from "./manifest.js";
import { repoRoot, runtimeWorkspaceClosure, serviceNames } from "./workspace.js";

export interface TiltfileFacts {
  overlay: string | undefined;
  services: { name: string; port: number; libs: string[] }[];
  infra: string[];
  resourceDeps: string[];
  dockerfilePattern: string | undefined;
}

const strings = (list: string) => [...list.matchAll(/'([^']*)'/g)].map((m) => m[1] ?? "");

/** Reads the data the Tiltfile's loop runs over (it is Starlark: read as text, not run). */
export function readTiltfile(text: string): TiltfileFacts {
  return {
    overlay: /k8s_yaml\(kustomize\('([^']+)'\)\)/.exec(text)?.[1],
    services: [...text.matchAll(/\{'name': '([^']+)', 'port': (\d+), 'libs': \[([^\]]*)\]\}/g)].map((m) => ({
      name: m[1] ?? "",
      port: Number(m[2]),
      libs: strings(m[3] ?? ""),
    })),
    infra: [...text.matchAll(/\{'name': '([^']+)', 'port_forwards'/g)].map((m) => m[1] ?? ""),
    resourceDeps: strings(/resource_deps=\[([^\]]*)\]/.exec(text)?.[1] ?? ""),
    dockerfilePattern: /dockerfile='([^']+)'/.exec(text)?.[1],
  };
}

/**
 * The Tiltfile agrees with the repository: it builds every service with its
 * Dockerfile, sends the image the libraries the Dockerfile copies, forwards
 * the port the container listens on, names every workload of the dev
 * overlay as a service or an infrastructure resource, and waits only for
 * infrastructure it defines.
 */
export function checkTiltfile(
  devObjects: K8sObject[],
  root = repoRoot,
  text: string | undefined = undefined,
): string[] {
  const facts = readTiltfile(text ?? readFileSync(path.join(root, "Tiltfile"), "utf8"));
  const problems: string[] = [];
  const say = (m: string) => problems.push(`Tiltfile: ${m}`);
  if (facts.overlay !== "deploy/k8s/overlays/dev") say(`applies ${facts.overlay}, expected deploy/k8s/overlays/dev`);
  if (facts.dockerfilePattern?.replace("%s", "x") !== dockerfilePath("x")) {
    say(`builds with ${facts.dockerfilePattern}, expected ${dockerfilePath("%s")}`);
  }
  const names = facts.services.map((s) => s.name).sort();
  if (JSON.stringify(names) !== JSON.stringify(serviceNames(root).sort())) {
    say(`SERVICES lists ${names.join(", ")}; the repository has ${serviceNames(root).join(", ")}`);
  }
  const workloads = devObjects.filter((o) => ["Deployment", "DaemonSet", "StatefulSet"].includes(o.kind));
  for (const svc of facts.services) {
    const w = workloads.find((o) => o.metadata.name === svc.name);
    const ports = w ? containersOf(w).flatMap((c) => (c.ports ?? []).map((p) => p.containerPort)) : [];
    if (!w) say(`${svc.name} is not a workload of the dev overlay`);
    else if (!ports.includes(svc.port))
      say(`${svc.name} forwards ${svc.port}; the container listens on ${ports.join(", ")}`);
    const libs = runtimeWorkspaceClosure(`services/${svc.name}`, root)
      .filter((d) => d.startsWith("libs/"))
      .map((d) => d.slice("libs/".length));
    if (JSON.stringify([...svc.libs].sort()) !== JSON.stringify(libs)) {
      say(`${svc.name} sends libs ${svc.libs.join(", ")} to the build; it needs ${libs.join(", ")}`);
    }
  }
  for (const name of facts.infra)
    if (!workloads.some((w) => w.metadata.name === name)) say(`${name} is not in the dev overlay`);
  for (const w of workloads) {
    if (!facts.infra.includes(w.metadata.name) && !names.includes(w.metadata.name)) {
      say(`the dev overlay's ${w.kind}/${w.metadata.name} is neither in SERVICES nor in INFRA`);
    }
  }
  for (const dep of facts.resourceDeps)
    if (!facts.infra.includes(dep)) say(`resource_deps names ${dep}, which INFRA does not define`);
  if (facts.resourceDeps.length === 0) say("services have no resource_deps");
  return problems;
}

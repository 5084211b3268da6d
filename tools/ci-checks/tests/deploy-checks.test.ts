import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { parse } from "yaml";
import {
  checkDeployment,
  checkServiceDockerfile,
  checkTiltfile,
  checkWorkloadEnv,
  checkWorkloads,
  CONFIG_LOADERS,
  findUnknownFields,
  type K8sObject,
  renderKustomization,
  repoRoot,
  strategicMerge,
  validateAgainstSchemas,
} from "../src/index.js";

// The tests reach into rendered manifests at arbitrary paths to break them.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Loose = any;

const render = (dir: string) => renderKustomization(path.join(repoRoot, dir));
const find = (objects: K8sObject[], kind: string, name: string) => {
  const o = objects.find((x) => x.kind === kind && x.metadata.name === name);
  if (!o) throw new Error(`${kind}/${name} not rendered`);
  return o as K8sObject & { spec: Loose; data: Loose; stringData: Loose };
};
const container = (o: K8sObject & { spec: Loose }): Loose => o.spec.template.spec.containers[0];

describe("the deployment in the repository", () => {
  test("passes every check: schemas, unknown fields, env vs config, probes, Dockerfiles, Tiltfile", () => {
    const report = checkDeployment();
    expect(Object.keys(report)).toEqual(
      expect.arrayContaining([
        "deploy/k8s/base: Kubernetes schemas",
        "deploy/k8s/overlays/dev: environment vs service config",
        "deploy/docker/machine-cache.Dockerfile",
        "Tiltfile",
      ]),
    );
    expect(Object.values(report).flat()).toEqual([]);
  });

  test("renders the objects the design asks for", () => {
    const base = render("deploy/k8s/base");
    const kinds = base.map((o) => `${o.kind}/${o.metadata.name}`);
    expect(kinds).toEqual(
      expect.arrayContaining([
        "Deployment/lora-registry",
        "Deployment/blob-gateway",
        "DaemonSet/machine-cache",
        "PodDisruptionBudget/lora-registry",
        "PodDisruptionBudget/blob-gateway",
        "Secret/emprops-auth",
        "ConfigMap/machine-cache-config",
      ]),
    );
    const daemon = find(base, "DaemonSet", "machine-cache");
    expect(daemon.spec.template.spec.nodeSelector).toEqual({ "nvidia.com/gpu.present": "true" });
    expect(container(daemon).env).toContainEqual({
      name: "MACHINE_ID",
      valueFrom: { fieldRef: { fieldPath: "spec.nodeName" } },
    });
    const dev = render("deploy/k8s/overlays/dev").map((o) => `${o.kind}/${o.metadata.name}`);
    expect(dev).toEqual(expect.arrayContaining(["Deployment/postgres", "Deployment/nats", "Deployment/azurite"]));
  });
});

const kubectl = (() => {
  try {
    execFileSync("kubectl", ["version", "--client"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
})();

// kustomize itself is the reference where kubectl (which embeds it) is installed.
(kubectl ? test : test.skip).each(["deploy/k8s/base", "deploy/k8s/overlays/dev"])(
  "%s renders exactly as `kubectl kustomize` does",
  (dir) => {
    const reference = execFileSync("kubectl", ["kustomize", path.join(repoRoot, dir)], { encoding: "utf8" })
      .split(/^---$/m)
      .map((doc) => parse(doc) as K8sObject);
    const key = (o: K8sObject) => `${o.kind}/${o.metadata.name}`;
    const sort = (list: K8sObject[]) => [...list].sort((a, b) => key(a).localeCompare(key(b)));
    expect(sort(render(dir))).toEqual(sort(reference));
  },
);

describe("the renderer", () => {
  test("strategic merge: lists with a merge key merge by it, null deletes, other lists are replaced", () => {
    const target = {
      spec: {
        nodeSelector: { gpu: "true" },
        containers: [
          { name: "a", env: [{ name: "X", value: "1" }], args: ["--one"] },
          { name: "b", image: "b" },
        ],
      },
    };
    const patch = {
      spec: { nodeSelector: null, containers: [{ name: "a", env: [{ name: "Y", value: "2" }], args: ["--two"] }] },
    };
    expect(strategicMerge(target, patch)).toEqual({
      spec: {
        containers: [
          {
            name: "a",
            env: [
              { name: "X", value: "1" },
              { name: "Y", value: "2" },
            ],
            args: ["--two"],
          },
          { name: "b", image: "b" },
        ],
      },
    });
    expect(() => strategicMerge({}, { $patch: "delete" })).toThrow(/not supported/);
  });

  test("refuses kustomize features it does not implement instead of ignoring them", () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "kustomize-"));
    try {
      writeFileSync(
        path.join(dir, "kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nconfigMapGenerator:\n  - name: x\n",
      );
      expect(() => renderKustomization(dir)).toThrow(/unsupported fields configMapGenerator/);
      writeFileSync(
        path.join(dir, "kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [missing.yaml]\n",
      );
      expect(() => renderKustomization(dir)).toThrow(/resource missing.yaml does not exist/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("bad manifests are caught", () => {
  let dev: K8sObject[];
  beforeEach(() => {
    dev = render("deploy/k8s/overlays/dev");
  });

  test("a value of the wrong type or a missing required field fails the Kubernetes schema", () => {
    container(find(dev, "Deployment", "lora-registry")).ports[0].containerPort = "grpc";
    delete container(find(dev, "DaemonSet", "machine-cache")).name;
    const problems = validateAgainstSchemas(dev);
    expect(problems).toEqual([
      expect.stringMatching(/^Deployment\/lora-registry: .*containerPort must be integer/),
      expect.stringMatching(/^DaemonSet\/machine-cache: .*must have required property name/),
    ]);
    expect(validateAgainstSchemas([{ apiVersion: "v9", kind: "Gadget", metadata: { name: "g" } }])).toEqual([
      "Gadget/g: unknown kind v9 Gadget",
    ]);
  });

  test("a misspelt field is an unknown field", () => {
    const c = container(find(dev, "Deployment", "blob-gateway"));
    c.readinesProbe = c.readinessProbe;
    find(dev, "Service", "azurite").spec.prots = [];
    const problems = findUnknownFields(dev);
    expect(problems).toHaveLength(2);
    expect(problems[0]).toMatch(/^Deployment\/blob-gateway: .*'"readinesProbe"' does not exist/);
    expect(problems[1]).toMatch(/^Service\/azurite: .*'"prots"' does not exist/);
  });

  test("a variable no service reads, a value its config refuses and a missing ConfigMap are named", () => {
    find(dev, "ConfigMap", "lora-registry-config").data.REGISTRY_PROT = "50051";
    find(dev, "ConfigMap", "machine-cache-config").data.LORA_CACHE_MAX_GB = "-1";
    container(find(dev, "Deployment", "blob-gateway")).envFrom.push({ configMapRef: { name: "gateway-extra" } });
    container(find(dev, "Deployment", "blob-gateway")).env = [{ name: "DATABASE_URL", value: "postgres://x/y" }];
    expect(checkWorkloadEnv(dev, CONFIG_LOADERS).sort()).toEqual([
      'DaemonSet/machine-cache container machine-cache: the config refuses it: LORA_CACHE_MAX_GB: must be zero or more (got "-1")',
      "Deployment/blob-gateway container blob-gateway: DATABASE_URL is not a variable blob-gateway reads",
      "Deployment/blob-gateway container blob-gateway: envFrom ConfigMap gateway-extra is not in the manifests",
      "Deployment/lora-registry container lora-registry: REGISTRY_PROT is not a variable lora-registry reads",
    ]);
  });

  test("an empty secret is a placeholder in the base, but an empty config value is not", () => {
    const base = render("deploy/k8s/base");
    expect(checkWorkloadEnv(base, CONFIG_LOADERS)).toEqual([]);
    find(base, "ConfigMap", "lora-registry-config").data.DEFAULT_QUOTA_COUNT = "lots";
    expect(checkWorkloadEnv(base, CONFIG_LOADERS)).toEqual([
      expect.stringMatching(/^Deployment\/lora-registry .*refuses it: DEFAULT_QUOTA_COUNT: /),
    ]);
  });

  test("probes on the wrong port or for an unknown service, a port the service does not listen on, no budget, no limits", () => {
    const registry = container(find(dev, "Deployment", "lora-registry"));
    registry.livenessProbe.grpc.port = 8080;
    registry.readinessProbe.grpc.service = "emprops.lora.v1.LoraServic";
    find(dev, "ConfigMap", "machine-cache-config").data.MACHINE_CACHE_PORT = "50099";
    delete container(find(dev, "Deployment", "nats")).resources.limits;
    find(dev, "Service", "blob-gateway").spec.ports[0].targetPort = "http";
    const withoutBudget = dev.filter((o) => !(o.kind === "PodDisruptionBudget" && o.metadata.name === "blob-gateway"));
    expect(checkWorkloads(withoutBudget, CONFIG_LOADERS).sort()).toEqual([
      'DaemonSet/machine-cache container machine-cache: listens on 50099 (MACHINE_CACHE_PORT) but declares ports [{"name":"grpc","containerPort":50053}]',
      "DaemonSet/machine-cache container machine-cache: livenessProbe asks port 50053, the service listens on 50099",
      "DaemonSet/machine-cache container machine-cache: readinessProbe asks port 50053, the service listens on 50099",
      "DaemonSet/machine-cache container machine-cache: startupProbe asks port 50053, the service listens on 50099",
      "Deployment/blob-gateway: no PodDisruptionBudget selects its pods",
      "Deployment/lora-registry container lora-registry: livenessProbe asks port 8080, the service listens on 50051",
      "Deployment/lora-registry container lora-registry: readinessProbe asks for emprops.lora.v1.LoraServic, which no contract defines",
      "Deployment/nats container nats: set resource requests and limits",
      "Service/blob-gateway: target port http is not a port of Deployment/blob-gateway",
    ]);
  });
});

describe("bad Dockerfiles are caught", () => {
  const original = (service: string) =>
    readFileSync(path.join(repoRoot, `deploy/docker/${service}.Dockerfile`), "utf8");
  const check = (service: string, text: string) =>
    checkServiceDockerfile(service, CONFIG_LOADERS[service]!, repoRoot, text).map((p) => p.replace(/^[^:]+: /, ""));

  test("the final command must be the start script's file", () => {
    const text = original("lora-registry").replace(
      'CMD ["node", "services/lora-registry/dist/main.js"]',
      'CMD ["node", "services/lora-registry/dist/index.js"]',
    );
    expect(check("lora-registry", text)).toEqual([
      'the final CMD is ["node","services/lora-registry/dist/index.js"]; the start script runs ["node", "services/lora-registry/dist/main.js"]',
    ]);
  });

  test("a library the service needs at run time must reach the image", () => {
    const text = original("blob-gateway")
      .replace("COPY --from=build /app/libs/lora-formats/dist libs/lora-formats/dist\n", "")
      .replaceAll("COPY libs/lora-formats/package.json libs/lora-formats/\n", "")
      .replace("COPY libs/lora-formats/src libs/lora-formats/src\n", "");
    expect(check("blob-gateway", text)).toEqual([
      "stage deps does not copy libs/lora-formats/package.json",
      "the final stage does not copy libs/lora-formats/dist",
      "stage build does not copy libs/lora-formats/src",
    ]);
  });

  test("health check, user, environment, build command and syntax", () => {
    const text = original("machine-cache")
      .replace('"MACHINE_CACHE_PORT", "50053"]', '"CACHE_PORT", "50053"]')
      .replace(/USER node\nEXPOSE 50053\nHEALTHCHECK/, "USER root\nEXPOSE 50053\nHEALTHCHECK")
      .replace("ENV NODE_ENV=production \\", "ENV NODE_ENV=production CACHE_DIR=/x \\")
      .replace("RUN npx tsc -b services/machine-cache", "RUN npx tsc -b libs/platform")
      .replace("WORKDIR /app\nCOPY --from=deps", "WORKDIR /app\nCOPYY --from=deps");
    expect(check("machine-cache", text)).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/Unknown instruction: COPYY/),
        'no stage runs "tsc -b services/machine-cache"',
        expect.stringMatching(
          /^HEALTHCHECK should run \["node", "deploy\/docker\/healthcheck.js", "MACHINE_CACHE_PORT"/,
        ),
        "the final stage must switch to a non-root USER",
        expect.stringMatching(/ENV CACHE_DIR is not a variable machine-cache reads/),
      ]),
    );
  });
});

describe("a Tiltfile out of step is caught", () => {
  const tiltfile = () => readFileSync(path.join(repoRoot, "Tiltfile"), "utf8");
  test("wrong port, missing library, unknown dependency, unlisted workload", () => {
    const dev = render("deploy/k8s/overlays/dev");
    const text = tiltfile()
      .replace(
        "'port': 50052, 'libs': ['contracts', 'platform', 'lora-formats']",
        "'port': 50058, 'libs': ['contracts', 'platform']",
      )
      .replace("resource_deps=['postgres', 'nats', 'azurite']", "resource_deps=['postgres', 'nats', 'redis']")
      .replace("    {'name': 'azurite', 'port_forwards': ['10000:10000']},\n", "");
    expect(checkTiltfile(dev, repoRoot, text).sort()).toEqual([
      "Tiltfile: blob-gateway forwards 50058; the container listens on 50052",
      "Tiltfile: blob-gateway sends libs contracts, platform to the build; it needs contracts, lora-formats, platform",
      "Tiltfile: resource_deps names redis, which INFRA does not define",
      "Tiltfile: the dev overlay's Deployment/azurite is neither in SERVICES nor in INFRA",
    ]);
  });
});

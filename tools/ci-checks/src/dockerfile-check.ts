import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { type DockerInstruction, type DockerStage, parseDockerfile } from "./dockerfile.js";
import { acceptedVariables, type ConfigLoader, portVariable } from "./service-configs.js";
import { type PackageJson, readJson, repoRoot, runtimeWorkspaceClosure } from "./workspace.js";

export const dockerfilePath = (service: string) => `deploy/docker/${service}.Dockerfile`;
const HEALTHCHECK_SCRIPT = "deploy/docker/healthcheck.js";

/**
 * Checks a service's Dockerfile against the repository: the command it runs
 * is the package's start script resolved to the file tsc emits, the build
 * compiles that service, the runtime stage gets every workspace the service
 * needs at run time (package.json for the production install, dist/ for the
 * code), COPY sources exist, the health check asks the port variable the
 * service reads, the final user is not root, and ENV names are accepted.
 */
export function checkServiceDockerfile(
  service: string,
  load: ConfigLoader,
  root = repoRoot,
  text: string | undefined = undefined,
): string[] {
  const file = dockerfilePath(service);
  if (text === undefined && !existsSync(path.join(root, file)))
    return [`${file}: missing (every service has an image)`];
  const { stages, errors } = parseDockerfile(text ?? readFileSync(path.join(root, file), "utf8"));
  const problems = errors.map((e) => `${file}: ${e}`);
  const say = (msg: string) => problems.push(`${file}: ${msg}`);
  const serviceDir = `services/${service}`;
  const pkg = readJson<PackageJson>(path.join(root, serviceDir, "package.json"));
  const runtime = stages.at(-1);
  if (!runtime) return [...problems, `${file}: no stages`];

  // The start script and the file it runs.
  const start = /^node (\S+)$/.exec(pkg.scripts?.start ?? "")?.[1];
  if (!start) {
    say(`${serviceDir}/package.json has no "start": "node <file>" script to compare with`);
  } else {
    const entry = path.posix.join(serviceDir, start);
    const cmd = last(runtime, "CMD")?.json;
    if (JSON.stringify(cmd) !== JSON.stringify(["node", entry])) {
      say(`the final CMD is ${JSON.stringify(cmd)}; the start script runs ["node", "${entry}"]`);
    }
    for (const stage of stages.slice(0, -1)) {
      const c = last(stage, "CMD")?.json;
      if (c && c[0] === "node" && c.at(-1) !== entry) say(`stage ${stage.name ?? "?"} runs ${c.at(-1)}, not ${entry}`);
    }
    problems.push(...checkEmittedBy(serviceDir, start, root).map((p) => `${file}: ${p}`));
  }

  // Build: tsc compiles this service's project (and, through references, its libraries).
  const build = stages.find((s) => run(s).some((r) => /\btsc -b\b/.test(r)));
  if (!build || !run(build).some((r) => new RegExp(`\\btsc -b ${serviceDir}(\\s|$)`).test(r))) {
    say(`no stage runs "tsc -b ${serviceDir}"`);
  }

  // Production dependencies for exactly this workspace, and the workspaces it links.
  const needed = [serviceDir, ...runtimeWorkspaceClosure(serviceDir, root)];
  const deps = stages.find((s) => run(s).some((r) => /npm ci .*--omit=dev/.test(r)));
  if (!deps || !run(deps).some((r) => r.includes(`--workspace ${serviceDir}`))) {
    say(`no stage installs production dependencies with "npm ci --omit=dev --workspace ${serviceDir}"`);
  } else {
    const copied = copies(deps).flatMap((c) => sources(c));
    for (const ws of needed) {
      if (!copied.includes(`${ws}/package.json`)) say(`stage ${deps.name} does not copy ${ws}/package.json`);
    }
  }
  const runtimeCopies = copies(runtime).flatMap((c) => sources(c));
  for (const ws of needed) {
    if (!runtimeCopies.includes(`/app/${ws}/dist`)) say(`the final stage does not copy ${ws}/dist`);
  }
  if (build) {
    const buildCopies = copies(build).flatMap((c) => sources(c));
    for (const ws of needed) {
      if (!buildCopies.includes(`${ws}/src`)) say(`stage ${build.name} does not copy ${ws}/src`);
    }
  }

  // Every COPY from the build context names something that exists.
  for (const stage of stages) {
    for (const c of copies(stage)) {
      if (c.flags.from !== undefined) continue;
      for (const src of sources(c)) {
        if (!existsSync(path.join(root, src))) say(`line ${c.line}: COPY source ${src} does not exist`);
      }
    }
  }

  // Health check: the script, the port variable the service reads, the port it exposes.
  const port = portVariable(load);
  const health = last(runtime, "HEALTHCHECK")?.json;
  const exposed = last(runtime, "EXPOSE")?.args[0];
  if (!health) {
    say("the final stage has no HEALTHCHECK CMD [...]");
  } else if (health[0] !== "node" || health[1] !== HEALTHCHECK_SCRIPT || health[2] !== port || health[3] !== exposed) {
    say(
      `HEALTHCHECK should run ["node", "${HEALTHCHECK_SCRIPT}", "${port}", "${exposed}"], not ${JSON.stringify(health)}`,
    );
  }
  if (!copies(runtime).some((c) => sources(c).includes(HEALTHCHECK_SCRIPT)))
    say(`the final stage does not copy ${HEALTHCHECK_SCRIPT}`);

  // Not root at run time.
  const user = last(runtime, "USER")?.args[0];
  if (!user || user === "root" || user === "0" || user.startsWith("0:"))
    say("the final stage must switch to a non-root USER");

  // ENV names are variables the service reads.
  const accepted = acceptedVariables(load);
  for (const stage of stages) {
    for (const e of stage.instructions.filter((i) => i.keyword === "ENV")) {
      for (const name of envNames(e))
        if (!accepted.has(name)) say(`line ${e.line}: ENV ${name} is not a variable ${service} reads`);
    }
  }
  return problems;
}

/** dist/main.js must be what tsc emits for src/main.ts with the package's tsconfig (rootDir src, outDir dist). */
function checkEmittedBy(serviceDir: string, start: string, root: string): string[] {
  const tsconfig = readJson<{ compilerOptions?: { rootDir?: string; outDir?: string } }>(
    path.join(root, serviceDir, "tsconfig.json"),
  );
  const { rootDir, outDir } = tsconfig.compilerOptions ?? {};
  if (!rootDir || !outDir) return [`${serviceDir}/tsconfig.json must set rootDir and outDir`];
  const rel = path.posix.relative(outDir, path.posix.normalize(start));
  if (rel.startsWith("..")) return [`the start script runs ${start}, outside outDir ${outDir}`];
  const source = path.posix.join(serviceDir, rootDir, rel.replace(/\.js$/, ".ts"));
  return existsSync(path.join(root, source)) ? [] : [`${start} would be compiled from ${source}, which does not exist`];
}

function last(stage: DockerStage, keyword: string): DockerInstruction | undefined {
  return stage.instructions.filter((i) => i.keyword === keyword).at(-1);
}

function run(stage: DockerStage): string[] {
  return stage.instructions.filter((i) => i.keyword === "RUN").map((i) => i.content.replace(/\s+/g, " "));
}

function copies(stage: DockerStage): DockerInstruction[] {
  return stage.instructions.filter((i) => i.keyword === "COPY" || i.keyword === "ADD");
}

/** COPY's sources: every argument but the destination. */
function sources(c: DockerInstruction): string[] {
  return c.args.slice(0, -1).map((s) => s.replace(/\/$/, ""));
}

/** Names set by ENV a=b c=d (or the legacy ENV a b). */
function envNames(e: DockerInstruction): string[] {
  if (e.args.length > 0 && !e.args[0]?.includes("=")) return [e.args[0] ?? ""];
  return e.args.map((a) => a.split("=")[0] ?? "");
}

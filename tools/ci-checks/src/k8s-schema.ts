import { createRequire } from "node:module";
import path from "node:path";
import ts from "typescript";
import { type K8sObject, objectId } from "./manifest.js";

const requireFromHere = createRequire(__filename);

interface ModelClass {
  new (data: unknown): { validate(): void };
}

/** The kubernetes-models class of an object, e.g. kubernetes-models/apps/v1/Deployment. */
function modelModule(o: K8sObject): string {
  return `kubernetes-models/${o.apiVersion}/${o.kind}`;
}

/**
 * Validates each object against the Kubernetes OpenAPI schema compiled into
 * kubernetes-models (types, required fields, formats). An unknown kind is a
 * problem too.
 */
export function validateAgainstSchemas(objects: K8sObject[]): string[] {
  const problems: string[] = [];
  for (const o of objects) {
    let Model: ModelClass | undefined;
    try {
      Model = (requireFromHere(modelModule(o)) as Record<string, ModelClass>)[o.kind];
    } catch {
      Model = undefined;
    }
    if (!Model) {
      problems.push(`${objectId(o)}: unknown kind ${o.apiVersion} ${o.kind}`);
      continue;
    }
    try {
      new Model(o).validate();
    } catch (err) {
      problems.push(`${objectId(o)}: ${(err as Error).message}`);
    }
  }
  return problems;
}

/**
 * The schema validation above accepts fields the schema does not know (a
 * misspelt `readinesProbe` would be ignored by the cluster too). This check
 * types each object with the same models' TypeScript interfaces: excess
 * property checks of object literals reject every unknown field, at any depth.
 */
export function findUnknownFields(objects: K8sObject[]): string[] {
  const modelsDir = path.dirname(requireFromHere.resolve("kubernetes-models/package.json"));
  const fileName = path.join(modelsDir, "__manifests_check__.ts");
  let text = objects
    .map((o, i) => `import type { I${o.kind} as T${i} } from "./${o.apiVersion}/${o.kind}";\n`)
    .join("");
  const starts: { offset: number; id: string }[] = [];
  objects.forEach((o, i) => {
    starts.push({ offset: text.length, id: objectId(o) });
    text += `export const o${i}: T${i} = ${JSON.stringify(o, null, 1)};\n`;
  });
  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.CommonJS,
    moduleResolution: ts.ModuleResolutionKind.Node10,
    types: [],
  };
  const host = ts.createCompilerHost(options);
  const readFile = host.readFile.bind(host);
  const getSourceFile = host.getSourceFile.bind(host);
  host.readFile = (f) => (path.resolve(f) === fileName ? text : readFile(f));
  host.fileExists = (
    (exists) => (f: string) =>
      path.resolve(f) === fileName || exists(f)
  )(host.fileExists.bind(host));
  host.getSourceFile = (f, lang, onError, create) =>
    path.resolve(f) === fileName ? ts.createSourceFile(f, text, lang, true) : getSourceFile(f, lang, onError, create);
  const program = ts.createProgram([fileName], options, host);
  const source = program.getSourceFile(fileName);
  const diagnostics = [...program.getSyntacticDiagnostics(source), ...program.getSemanticDiagnostics(source)];
  return diagnostics.map((d) => {
    const message = ts.flattenDiagnosticMessageText(d.messageText, "\n").split("\n")[0] ?? "";
    if (d.start !== undefined) {
      const start = d.start;
      const owner = [...starts].reverse().find((s) => s.offset <= start);
      const at = text.slice(start, start + 60).split("\n")[0];
      return `${owner?.id ?? "manifests"}: ${message} (at ${at})`;
    }
    return message;
  });
}

import { DockerfileParser, type Instruction } from "dockerfile-ast";
import { validate } from "dockerfile-utils";

export interface DockerInstruction {
  keyword: string;
  /** Arguments without flags, variables unexpanded. */
  args: string[];
  flags: Record<string, string>;
  /** The exec form's strings (CMD ["node", …]), else null. */
  json: string[] | null;
  /** Everything after the keyword, as written (continuations joined). */
  content: string;
  line: number;
}

export interface DockerStage {
  name: string | undefined;
  from: string;
  instructions: DockerInstruction[];
}

export interface ParsedDockerfile {
  stages: DockerStage[];
  /** Syntax problems found by dockerfile-utils' validator (errors only). */
  errors: string[];
}

const ERROR = 1;

/** Parses a Dockerfile into stages with dockerfile-ast and validates its syntax with dockerfile-utils. */
export function parseDockerfile(text: string): ParsedDockerfile {
  const errors = validate(text)
    .filter((d) => d.severity === ERROR)
    .map((d) => `line ${d.range.start.line + 1}: ${d.message}`);
  const stages: DockerStage[] = [];
  for (const i of DockerfileParser.parse(text).getInstructions()) {
    const parsed = toInstruction(i);
    if (parsed.keyword === "FROM") {
      const as = parsed.args.findIndex((a) => a.toUpperCase() === "AS");
      stages.push({ name: as >= 0 ? parsed.args[as + 1] : undefined, from: parsed.args[0] ?? "", instructions: [] });
    } else {
      stages.at(-1)?.instructions.push(parsed);
    }
  }
  return { stages, errors };
}

function toInstruction(i: Instruction): DockerInstruction {
  const withFlags = i as Instruction & { getFlags?: () => { getName(): string; getValue(): string | null }[] };
  const withJson = i as Instruction & { getJSONStrings?: () => { getJSONValue(): string }[] };
  const json = withJson.getJSONStrings?.().map((s) => s.getJSONValue()) ?? [];
  const content = i.getArgumentsContent() ?? "";
  return {
    keyword: i.getKeyword().toUpperCase(),
    args: i.getArguments().map((a) => a.getValue()),
    flags: Object.fromEntries((withFlags.getFlags?.() ?? []).map((f) => [f.getName(), f.getValue() ?? ""])),
    json: json.length > 0 ? json : execForm(content),
    content,
    line: i.getRange().start.line + 1,
  };
}

/** HEALTHCHECK's `CMD [...]` is not parsed as JSON by the AST: read it here. */
function execForm(content: string): string[] | null {
  const start = content.indexOf("[");
  if (start < 0) return null;
  try {
    const value: unknown = JSON.parse(content.slice(start));
    return Array.isArray(value) && value.every((v) => typeof v === "string") ? value : null;
  } catch {
    return null;
  }
}

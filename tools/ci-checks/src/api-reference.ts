import { execFileSync } from "node:child_process";
import path from "node:path";
import { fromBinary, isFieldSet } from "@bufbuild/protobuf";
import {
  type DescriptorProto,
  type EnumDescriptorProto,
  type FieldDescriptorProto,
  FieldDescriptorProtoSchema,
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  type FileDescriptorProto,
  FileDescriptorSetSchema,
  type SourceCodeInfo_Location,
} from "@bufbuild/protobuf/wkt";
import { repoRoot } from "./workspace.js";

export const API_REFERENCE = "docs/api-reference.md";

/**
 * Every contract as buf compiles it, with source info (comments): the same
 * inputs `buf generate` uses, so the reference and the generated code
 * cannot describe different contracts.
 */
export function buildDescriptorSet(root = repoRoot): FileDescriptorProto[] {
  const buf = path.join(root, "node_modules", ".bin", "buf");
  const bytes = execFileSync(buf, ["build", "--as-file-descriptor-set", "-o", "-"], {
    cwd: root,
    maxBuffer: 64 * 1024 * 1024,
  });
  return fromBinary(FileDescriptorSetSchema, bytes).file;
}

/** Field numbers of FileDescriptorProto / DescriptorProto / … used in SourceCodeInfo paths. */
const PATH = { message: 4, enum: 5, service: 6, field: 2, nested: 3, nestedEnum: 4, value: 2, method: 2 };

class Comments {
  private readonly byPath = new Map<string, SourceCodeInfo_Location>();
  constructor(file: FileDescriptorProto) {
    for (const loc of file.sourceCodeInfo?.location ?? []) this.byPath.set(loc.path.join("."), loc);
  }
  /** The leading comment (or trailing, when there is none), as one paragraph per blank-line block. */
  of(p: number[]): string {
    const loc = this.byPath.get(p.join("."));
    const raw = (loc?.leadingComments || loc?.trailingComments || "").trim();
    return raw
      .split(/\n\s*\n/)
      .map((para) =>
        para
          .split("\n")
          .map((l) => l.trim())
          .join(" "),
      )
      .join("\n\n");
  }
}

const TYPE_NAMES: Partial<Record<FieldDescriptorProto_Type, string>> = {
  [FieldDescriptorProto_Type.DOUBLE]: "double",
  [FieldDescriptorProto_Type.FLOAT]: "float",
  [FieldDescriptorProto_Type.INT64]: "int64",
  [FieldDescriptorProto_Type.UINT64]: "uint64",
  [FieldDescriptorProto_Type.INT32]: "int32",
  [FieldDescriptorProto_Type.FIXED64]: "fixed64",
  [FieldDescriptorProto_Type.FIXED32]: "fixed32",
  [FieldDescriptorProto_Type.BOOL]: "bool",
  [FieldDescriptorProto_Type.STRING]: "string",
  [FieldDescriptorProto_Type.BYTES]: "bytes",
  [FieldDescriptorProto_Type.UINT32]: "uint32",
  [FieldDescriptorProto_Type.SFIXED32]: "sfixed32",
  [FieldDescriptorProto_Type.SFIXED64]: "sfixed64",
  [FieldDescriptorProto_Type.SINT32]: "sint32",
  [FieldDescriptorProto_Type.SINT64]: "sint64",
};

const anchor = (fullName: string) => fullName.toLowerCase().replace(/[^a-z0-9]+/g, "-");
/** An explicit anchor: renderers slug dotted headings differently. */
const heading = (fullName: string) => `<a id="${anchor(fullName)}"></a>\n\n### ${fullName}`;
const cell = (text: string) => text.replace(/\|/g, "\\|").replace(/\n+/g, "<br>");

/** A type reference: a link when the type is documented here, else its full name. */
function typeRef(typeName: string, documented: Set<string>): string {
  const name = typeName.replace(/^\./, "");
  return documented.has(name) ? `[\`${name}\`](#${anchor(name)})` : `\`${name}\``;
}

function fieldType(f: FieldDescriptorProto, owner: DescriptorProto, documented: Set<string>): string {
  const mapEntry = owner.nestedType.find(
    (n) => n.options?.mapEntry && `.${n.name}` === f.typeName.slice(f.typeName.lastIndexOf(".")),
  );
  if (mapEntry && f.label === FieldDescriptorProto_Label.REPEATED) {
    const [k, v] = mapEntry.field;
    return `map<${k ? fieldType(k, mapEntry, documented) : "?"}, ${v ? fieldType(v, mapEntry, documented) : "?"}>`;
  }
  const base = f.typeName ? typeRef(f.typeName, documented) : `\`${TYPE_NAMES[f.type] ?? "?"}\``;
  if (f.label === FieldDescriptorProto_Label.REPEATED) return `repeated ${base}`;
  if (f.proto3Optional) return `optional ${base}`;
  return base;
}

/**
 * Renders the API reference from the contracts' own comments: every
 * service with its RPCs (and the Connect URL path), every message with its
 * fields (proto and JSON names), every enum with its values, for the
 * emprops.* packages. Standard contracts (grpc.health, reflection,
 * google.rpc) are linked, not repeated.
 */
export function renderApiReference(files: FileDescriptorProto[]): string {
  const ours = files.filter((f) => f.package.startsWith("emprops.")).sort((a, b) => a.name.localeCompare(b.name));
  const documented = new Set<string>();
  for (const f of ours) {
    const visit = (prefix: string, m: DescriptorProto) => {
      documented.add(`${prefix}.${m.name}`);
      m.nestedType.filter((n) => !n.options?.mapEntry).forEach((n) => visit(`${prefix}.${m.name}`, n));
      m.enumType.forEach((e) => documented.add(`${prefix}.${m.name}.${e.name}`));
    };
    f.messageType.forEach((m) => visit(f.package, m));
    f.enumType.forEach((e) => documented.add(`${f.package}.${e.name}`));
  }

  const out: string[] = [
    "# API reference",
    "",
    "<!-- Generated from the comments in proto/ by `npm run docs:api`; do not edit. A test fails when it is stale. -->",
    "",
    "Every service speaks Connect (HTTP/1.1 or h2c, JSON or binary), gRPC and gRPC-Web on one port, and serves",
    "`grpc.health.v1.Health` and server reflection. A unary RPC is `POST /<package>.<Service>/<Method>`; in",
    "Connect JSON, field names are the JSON names below (lowerCamelCase), 64-bit integers are strings, enums are",
    "their value names and timestamps are RFC 3339 strings. Errors carry a `google.rpc.ErrorInfo` whose `reason`",
    "is an [`ErrorReason`](#emprops-common-v1-errorreason) value name, spelled the same in item errors; see",
    "[troubleshooting](troubleshooting.md).",
    "",
    "## Contents",
    "",
  ];
  for (const f of ours) {
    out.push(`- \`${f.name}\` (\`${f.package}\`)`);
    for (const s of f.service) out.push(`  - service [\`${s.name}\`](#${anchor(`${f.package}.${s.name}`)})`);
  }

  for (const f of ours) {
    const c = new Comments(f);
    out.push("", `## ${f.name}`, "", `Package \`${f.package}\`.`);

    f.service.forEach((s, si) => {
      const full = `${f.package}.${s.name}`;
      out.push(
        "",
        `### ${full}`,
        "",
        c.of([PATH.service, si]),
        "",
        "| RPC | request → response | description |",
        "|---|---|---|",
      );
      s.method.forEach((m, mi) => {
        const streaming = `${m.clientStreaming ? "stream " : ""}${typeRef(m.inputType, documented)} → ${m.serverStreaming ? "stream " : ""}${typeRef(m.outputType, documented)}`;
        out.push(
          `| \`${m.name}\`<br>\`POST /${full}/${m.name}\` | ${streaming} | ${cell(c.of([PATH.service, si, PATH.method, mi]))} |`,
        );
      });
    });

    const messages = (prefix: string, list: DescriptorProto[], at: number[]) => {
      list.forEach((m, mi) => {
        if (m.options?.mapEntry) return;
        const p = [...at, mi];
        const full = `${prefix}.${m.name}`;
        out.push("", heading(full), "", c.of(p) || "_(no description)_");
        if (m.field.length > 0) {
          out.push("", "| field | JSON | type | description |", "|---|---|---|---|");
          m.field.forEach((fd, fi) => {
            const oneof =
              isFieldSet(fd, FieldDescriptorProtoSchema.field.oneofIndex) && !fd.proto3Optional
                ? ` (one of \`${m.oneofDecl[fd.oneofIndex]?.name}\`)`
                : "";
            out.push(
              `| \`${fd.name}\` = ${fd.number} | \`${fd.jsonName}\` | ${fieldType(fd, m, documented)}${oneof} | ${cell(c.of([...p, PATH.field, fi]))} |`,
            );
          });
        }
        enums(full, m.enumType, [...p, PATH.nestedEnum]);
        messages(full, m.nestedType, [...p, PATH.nested]);
      });
    };
    const enums = (prefix: string, list: EnumDescriptorProto[], at: number[]) => {
      list.forEach((e, ei) => {
        const p = [...at, ei];
        out.push(
          "",
          `### ${prefix}.${e.name}`,
          "",
          c.of(p) || "_(no description)_",
          "",
          "| value | number | description |",
          "|---|---|---|",
        );
        e.value.forEach((v, vi) => out.push(`| \`${v.name}\` | ${v.number} | ${cell(c.of([...p, PATH.value, vi]))} |`));
      });
    };
    messages(f.package, f.messageType, [PATH.message]);
    enums(f.package, f.enumType, [PATH.enum]);
  }
  return out.join("\n").replace(/\n{3,}/g, "\n\n") + "\n";
}

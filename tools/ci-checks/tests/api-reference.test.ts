import { readFileSync } from "node:fs";
import path from "node:path";
import type { DescService } from "@bufbuild/protobuf";
import * as contracts from "@emprops/contracts";
import { API_REFERENCE, buildDescriptorSet, renderApiReference, repoRoot } from "../src/index.js";

describe("docs/api-reference.md", () => {
  const files = buildDescriptorSet();
  const rendered = renderApiReference(files);

  test("is what the proto comments generate today (run `npm run docs:api` after changing a contract)", () => {
    expect(readFileSync(path.join(repoRoot, API_REFERENCE), "utf8")).toBe(rendered);
  });

  test("documents every RPC of every service and every error reason", () => {
    const services = [
      contracts.LoraService,
      contracts.LoraAdminService,
      contracts.LoraResolverService,
      contracts.BlobGatewayService,
      contracts.cacheV1.MachineCacheService,
    ] as DescService[];
    for (const s of services) {
      for (const m of s.methods) expect(rendered).toContain(`\`POST /${s.typeName}/${m.name}\``);
    }
    for (const reason of Object.keys(contracts.ErrorReason).filter((k) => Number.isNaN(Number(k)))) {
      expect(rendered).toContain(`| \`${reason}\` |`);
    }
  });

  test("carries the comments: a changed comment changes the reference", () => {
    const file = files.find((f) => f.name === "emprops/lora/v1/lora_service.proto")!;
    const location = file.sourceCodeInfo!.location.find((l) => l.path.join(".") === "6.0")!;
    expect(rendered).toContain(location.leadingComments.trim().split("\n")[0]!.trim());
    const before = location.leadingComments;
    location.leadingComments = " A different description.\n";
    try {
      expect(renderApiReference(files)).toContain("A different description.");
    } finally {
      location.leadingComments = before;
    }
  });
});

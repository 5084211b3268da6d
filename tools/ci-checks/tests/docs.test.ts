import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { ErrorReason } from "@emprops/contracts";
import { repoRoot } from "../src/index.js";

const read = (file: string) => readFileSync(path.join(repoRoot, file), "utf8");

describe("the documentation", () => {
  test("troubleshooting covers every error reason of the contracts", () => {
    const text = read("docs/troubleshooting.md");
    const names = Object.keys(ErrorReason).filter((k) => Number.isNaN(Number(k)) && k !== "UNSPECIFIED");
    expect(names.length).toBeGreaterThan(20);
    expect(names.filter((name) => !text.includes(`\`${name}\``))).toEqual([]);
  });

  test("the user guide shows a workflow naming a user LoRA by id", () => {
    const text = read("docs/user-guide.md");
    expect(text).toContain('"lora_source": "user"');
    expect(text).toContain('"lora_identifier": "123"');
  });

  test("the README links every guide, and every linked guide exists", () => {
    const readme = read("README.md");
    for (const doc of ["design", "user-guide", "operator-guide", "troubleshooting", "api-reference"]) {
      expect(readme).toContain(`(docs/${doc}.md)`);
      expect(existsSync(path.join(repoRoot, "docs", `${doc}.md`))).toBe(true);
    }
  });
});

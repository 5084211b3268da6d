import path from "node:path";
import {
  absoluteInLoraDir,
  relativeToLoraDir,
  safeFileName,
  sharedLoraRelPath,
  userLoraRelPath,
} from "../src/cache/cache-layout.js";

const U = "0b7f2f9e-9a55-4b0e-8b8e-2f6d1c0a9e21";

test("user LoRAs live under users/{user}/ with the file id in the name", () => {
  expect(userLoraRelPath(U, "123", "my_anime_style.safetensors")).toBe(`users/${U}/123-my_anime_style.safetensors`);
  // The verified format decides the extension ComfyUI loads it by.
  expect(userLoraRelPath(U, "9", "model.safetensors", ".pt")).toBe(`users/${U}/9-model.pt`);
  expect(userLoraRelPath(U, "9", "noext", undefined)).toBe(`users/${U}/9-noext.safetensors`);
});

test("no name can leave its directory, hide, or carry odd characters", () => {
  for (const evil of [
    "../../etc/passwd",
    "..\\..\\x.pt",
    "/abs/path.safetensors",
    ".hidden.safetensors",
    "..",
    "",
    "a/../../b.pt",
  ]) {
    const name = safeFileName(evil);
    expect(name).not.toMatch(/[/\\]/);
    expect(name.startsWith(".")).toBe(false);
    expect(name).toMatch(/^[A-Za-z0-9._-]+\.(safetensors|pt)$/);
  }
  expect(safeFileName("Ünïcödé style (v2) .safetensors")).toBe("Unicode_style_v2.safetensors");
  expect(safeFileName("x".repeat(500) + ".pt")).toHaveLength(100 + 3);
});

test("shared names keep their name when safe and never collide when not", () => {
  expect(sharedLoraRelPath("style.safetensors")).toBe("shared/style.safetensors");
  const a = sharedLoraRelPath("my style.safetensors");
  const b = sharedLoraRelPath("my_style.safetensors");
  const c = sharedLoraRelPath("my  style.safetensors");
  expect(new Set([a, b, c]).size).toBe(3);
  expect(a).toMatch(/^shared\/my_style-[0-9a-f]{10}\.safetensors$/);
});

test("answers are relative to models/loras, never a basename, and never outside it", () => {
  const loraDir = "/workspace/ComfyUI/models/loras";
  expect(relativeToLoraDir(loraDir, path.join(loraDir, "users", U, "1-a.safetensors"))).toBe(
    `users/${U}/1-a.safetensors`,
  );
  expect(relativeToLoraDir(loraDir, "/workspace/ComfyUI/models/checkpoints/x.safetensors")).toBeUndefined();
  expect(() => absoluteInLoraDir(loraDir, "../checkpoints/x.safetensors")).toThrow(/escapes/);
});

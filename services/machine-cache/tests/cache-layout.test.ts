import path from "node:path";
import {
  absoluteInLoraDir,
  relativeToLoraDir,
  sharedLoraRelPath,
  userLoraFileName,
  userLoraRelPath,
} from "../src/cache/cache-layout.js";
import { loadConfig } from "../src/config.js";

const U = "0b7f2f9e-9a55-4b0e-8b8e-2f6d1c0a9e21";

test("user LoRAs live under {user}/ of the user LoRA directory with the file id in the name", () => {
  expect(userLoraRelPath(U, "123", "my_anime_style.safetensors")).toBe(`${U}/123-my_anime_style.safetensors`);
  // The verified format decides the extension ComfyUI loads it by.
  expect(userLoraRelPath(U, "9", "model.safetensors", ".pt")).toBe(`${U}/9-model.pt`);
  // A name that passes the file-name rule is kept as it is (in NFC).
  expect(userLoraRelPath(U, "7", "Ünïcödé style (v2) .safetensors")).toBe(`${U}/7-Ünïcödé style (v2) .safetensors`);
  expect(userLoraRelPath(U, "7", "cafe\u0301.pt")).toBe(`${U}/7-caf\u00e9.pt`);
});

test("a stored name the file-name rule refuses becomes lora{ext}: nothing can leave its directory, hide or spoof", () => {
  for (const evil of [
    "../../etc/passwd",
    "..\\..\\x.pt",
    "/abs/path.safetensors",
    ".hidden.safetensors",
    "..",
    "",
    "a/../../b.pt",
    "evil\u202Egpj.safetensors",
    "zero\u200Bwidth.pt",
    "CON.safetensors",
    " lead.pt",
    "noext",
    `${"x".repeat(300)}.pt`,
  ]) {
    expect(userLoraFileName(evil)).toBe("lora.safetensors");
    expect(userLoraFileName(evil, ".pt")).toBe("lora.pt");
  }
  // Every name that passes fits a 255-byte file name with the id prefix and the partial-download suffix.
  const longest = `${"日".repeat(62)}${"x".repeat(2)}.safetensors`;
  expect(new TextEncoder().encode(longest).length).toBe(200);
  const onDisk = `${"9".repeat(19)}-${userLoraFileName(longest)}.partial.json`;
  expect(new TextEncoder().encode(onDisk).length).toBeLessThanOrEqual(255);
});

test("shared names are used as they are, and only names that pass the file-name rule", () => {
  expect(sharedLoraRelPath("style.safetensors")).toBe("shared/style.safetensors");
  expect(sharedLoraRelPath("my style (v2).ckpt")).toBe("shared/my style (v2).ckpt");
  for (const evil of ["../x.safetensors", "nul.pt", "a\u202Eb.safetensors", "readme.txt"]) {
    expect(() => sharedLoraRelPath(evil)).toThrow(/not a shared LoRA name/);
  }
});

test("answers are relative to models/loras, never a basename, and never outside it", () => {
  const loraDir = "/workspace/ComfyUI/models/loras";
  expect(relativeToLoraDir(loraDir, path.join(loraDir, "users", U, "1-a.safetensors"))).toBe(
    `users/${U}/1-a.safetensors`,
  );
  expect(relativeToLoraDir(loraDir, "/workspace/ComfyUI/models/checkpoints/x.safetensors")).toBeUndefined();
  expect(() => absoluteInLoraDir(loraDir, "../checkpoints/x.safetensors")).toThrow(/escapes/);
});

test("user LoRAs default to a directory no ComfyUI folder lists; one inside models/ only when the risk is accepted", () => {
  const base = { JWT_SECRET: "cache-layout-test-secret", COMFYUI_LORA_DIR: "/srv/ComfyUI/models/loras" };
  expect(loadConfig(base).userLoraDir).toBe("/srv/ComfyUI/user_lora_cache");
  expect(loadConfig({ ...base, USER_LORA_DIR: "/data/user-loras" }).userLoraDir).toBe("/data/user-loras");
  for (const inside of ["/srv/ComfyUI/models/loras/users", "/srv/ComfyUI/models/user_loras"]) {
    expect(() => loadConfig({ ...base, USER_LORA_DIR: inside })).toThrow(/USER_LORA_DIR: .* inside ComfyUI's models/);
    expect(loadConfig({ ...base, USER_LORA_DIR: inside, USER_LORA_DIR_IN_MODELS: "true" }).userLoraDir).toBe(inside);
  }
});

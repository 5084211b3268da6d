import { randomUUID } from "node:crypto";
import { checkLoraFileName } from "@emprops/contracts";
import { rpcFailure } from "@emprops/testkit";
import { type RegistryUnderTest, startRegistryForTest } from "./support/registry.js";
import { seedLoras, snapshot } from "./support/seed.js";

/**
 * The LoRA file-name rule through the public RPCs: CreateLoraUpload and an
 * UpdateLora rename refuse each kind of bad name with INVALID_NAME (or
 * INVALID_FILE_FORMAT for the extension), the rule's message, and no change.
 */
let t: RegistryUnderTest;
const user = randomUUID();
let own: string;

beforeAll(async () => {
  t = await startRegistryForTest("file-names");
  [own] = (await seedLoras(t.db, [{ userId: user, name: "mine.safetensors" }])) as [string];
});

afterAll(async () => {
  await t?.stop();
});

const me = () => t.as(user).lora;

const BAD: [string, string, string][] = [
  ["empty", "", "empty"],
  ["blank", "   ", "leading_or_trailing_space"],
  ["a control character", "a\u0007.safetensors", "control_character"],
  ["a C1 control character", "a\u0085.safetensors", "control_character"],
  ["a right-to-left override", "evil\u202Egpj.safetensors", "bidi_control"],
  ["a left-to-right isolate", "a\u2066b.safetensors", "bidi_control"],
  ["a right-to-left mark", "a\u200Fb.safetensors", "bidi_control"],
  ["an Arabic letter mark", "a\u061Cb.safetensors", "bidi_control"],
  ["a zero-width space", "zero\u200Bwidth.safetensors", "invisible_character"],
  ["a zero-width joiner", "a\u200Db.safetensors", "invisible_character"],
  ["a word joiner", "a\u2060b.safetensors", "invisible_character"],
  ["a byte-order mark", "\uFEFFstyle.safetensors", "invisible_character"],
  ["a leading space", " style.safetensors", "leading_or_trailing_space"],
  ["a trailing space", "style.safetensors ", "leading_or_trailing_space"],
  ["a leading no-break space", "\u00A0style.safetensors", "leading_or_trailing_space"],
  ["a leading dot", ".style.safetensors", "leading_or_trailing_dot"],
  ["a trailing dot", "style.safetensors.", "leading_or_trailing_dot"],
  ["the extension alone", ".safetensors", "leading_or_trailing_dot"],
  ["CON", "CON.safetensors", "windows_device_name"],
  ["nul in lower case", "nul.safetensors", "windows_device_name"],
  ["AUX with a second extension", "aux.tar.safetensors", "windows_device_name"],
  ["PRN with spaces before the dot", "PRN  .safetensors", "windows_device_name"],
  ["COM1", "com1.safetensors", "windows_device_name"],
  ["COM9", "COM9.safetensors", "windows_device_name"],
  ["LPT1", "Lpt1.safetensors", "windows_device_name"],
  ["COM with a superscript one", "COM\u00B9.safetensors", "windows_device_name"],
  ["LPT with a superscript three", "lpt\u00B3.safetensors", "windows_device_name"],
  ["a path", "../x.safetensors", "path_separator"],
  ["a backslash", "a\\b.safetensors", "path_separator"],
  ["a colon", "a:b.safetensors", "windows_forbidden_character"],
  ["a question mark", "why?.safetensors", "windows_forbidden_character"],
  ["201 bytes of ASCII", `${"x".repeat(189)}.safetensors`, "too_long"],
  ["201 bytes in 75 characters", `${"日".repeat(63)}.safetensors`, "too_long"],
  ["a wrong extension", "model.zip", "extension"],
  ["no extension", "model", "extension"],
  ["a double extension", "model.safetensors.exe", "extension"],
];

describe("CreateLoraUpload refuses every bad name, says what to change, and reserves nothing", () => {
  it.each(BAD)("%s (%j)", async (_what, name, problem) => {
    const expected = checkLoraFileName(name);
    if (expected.ok) throw new Error(`the rule accepts ${JSON.stringify(name)}`);
    const before = await snapshot(t.db);
    const failure = await rpcFailure(me().createLoraUpload({ name, sizeBytes: 1000n }));
    expect(failure).toMatchObject({
      code: "InvalidArgument",
      reason: problem === "extension" ? "INVALID_FILE_FORMAT" : "INVALID_NAME",
      message: expected.message,
      metadata: expect.objectContaining({ field: "name", problem }),
    });
    expect(await snapshot(t.db)).toBe(before);
  });

  it("says the byte limit and the detected format", async () => {
    const long = await rpcFailure(me().createLoraUpload({ name: `${"日".repeat(63)}.safetensors`, sizeBytes: 1n }));
    expect(long.metadata).toMatchObject({ max_bytes: "200" });
    expect(long.message).toBe(
      "The file name is 201 bytes long in UTF-8; at most 200 are allowed: shorten it by 1 bytes.",
    );
    const zip = await rpcFailure(me().createLoraUpload({ name: "model.zip", sizeBytes: 1n }));
    expect(zip).toMatchObject({
      message: "File must be .safetensors or .pt format",
      metadata: { detected_format: ".zip" },
    });
  });
});

describe("UpdateLora applies the same rule to a rename", () => {
  it.each(BAD)("%s (%j)", async (_what, name, problem) => {
    const expected = checkLoraFileName(name);
    if (expected.ok) throw new Error(`the rule accepts ${JSON.stringify(name)}`);
    const before = await snapshot(t.db);
    const failure = await rpcFailure(me().updateLora({ loraId: own, name, updateMask: { paths: ["name"] } }));
    expect(failure).toMatchObject({
      code: "InvalidArgument",
      reason: problem === "extension" ? "INVALID_FILE_FORMAT" : "INVALID_NAME",
      message: expected.message,
      metadata: expect.objectContaining({ field: "name", problem }),
    });
    expect(await snapshot(t.db)).toBe(before);
    expect((await me().getLora({ loraId: own })).lora?.name).toBe("mine.safetensors");
  });

  it("stores the name in NFC and keeps any name that passes", async () => {
    const rename = async (name: string) =>
      (await me().updateLora({ loraId: own, name, updateMask: { paths: ["name"] } })).lora?.name;
    expect(await rename("cafe\u0301 style.safetensors")).toBe("caf\u00e9 style.safetensors");
    expect((await me().getLora({ loraId: own })).lora?.name).toBe("caf\u00e9 style.safetensors");
    expect(await rename("日本語 (v2).safetensors")).toBe("日本語 (v2).safetensors");
    const exactly200 = `${"x".repeat(188)}.safetensors`;
    expect(await rename(exactly200)).toBe(exactly200);
    expect(await rename("console.safetensors")).toBe("console.safetensors");
    const changeExt = await rpcFailure(
      me().updateLora({ loraId: own, name: "mine.pt", updateMask: { paths: ["name"] } }),
    );
    expect(changeExt).toMatchObject({
      reason: "INVALID_NAME",
      message: "the extension cannot change: the file is .safetensors, so the new name must end in .safetensors",
    });
    await rename("mine.safetensors");
  });
});

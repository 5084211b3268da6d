import {
  checkLoraFileName,
  ErrorReason,
  type LoraFileNameProblem,
  MAX_LORA_FILE_NAME_BYTES,
  MODEL_FILE_EXTENSIONS,
} from "../src/index.js";

const problemOf = (name: string) => {
  const r = checkLoraFileName(name);
  return r.ok ? "ok" : r.problem;
};

describe("names that pass", () => {
  test.each([
    ["my_anime_style.safetensors", "safetensors"],
    ["Style V2 (final).PT", "pt"],
    ["日本語スタイル.safetensors", "safetensors"],
    ["x..y.safetensors", "safetensors"],
    ["style .safetensors", "safetensors"],
    ["console.safetensors", "safetensors"],
    ["COM10.pt", "pt"],
    ["LPT0.pt", "pt"],
    ["nul_style.pt", "pt"],
    ["con-v2.safetensors", "safetensors"],
    ["emoji 🎨.safetensors", "safetensors"],
    ["a-b_c.d.safetensors", "safetensors"],
  ])("%s", (name, extension) => {
    expect(checkLoraFileName(name)).toEqual({ ok: true, name, stem: name.slice(0, name.lastIndexOf(".")), extension });
  });

  test("the name comes back in NFC, and its length is counted in NFC", () => {
    const decomposed = "cafe\u0301.safetensors";
    const r = checkLoraFileName(decomposed);
    expect(r).toMatchObject({ ok: true, name: "caf\u00e9.safetensors" });
    // 66 × "é": 132 bytes in NFC, 198 in NFD; plus ".safetensors" (12) = 144 vs 210.
    const long = `${"e\u0301".repeat(66)}.safetensors`;
    expect(new TextEncoder().encode(long).length).toBeGreaterThan(MAX_LORA_FILE_NAME_BYTES);
    expect(checkLoraFileName(long)).toMatchObject({ ok: true, name: `${"\u00e9".repeat(66)}.safetensors` });
  });

  test(`exactly ${MAX_LORA_FILE_NAME_BYTES} bytes of UTF-8 pass, one more does not`, () => {
    const ascii = `${"a".repeat(MAX_LORA_FILE_NAME_BYTES - 3)}.pt`;
    expect(problemOf(ascii)).toBe("ok");
    expect(problemOf(`a${ascii}`)).toBe("too_long");
    // "日" is 3 bytes: 66 of them + ".pt" = 201 bytes though only 69 characters.
    const wide = `${"日".repeat(66)}.pt`;
    expect(wide.length).toBe(69);
    const r = checkLoraFileName(wide);
    expect(r).toMatchObject({ ok: false, problem: "too_long", reason: ErrorReason.INVALID_NAME });
    expect(!r.ok && r.message).toBe(
      "The file name is 201 bytes long in UTF-8; at most 200 are allowed: shorten it by 1 bytes.",
    );
  });

  test("other extensions pass when the caller allows them (shared LoRAs)", () => {
    expect(problemOf("style.ckpt")).toBe("extension");
    expect(checkLoraFileName("style.ckpt", { extensions: MODEL_FILE_EXTENSIONS })).toMatchObject({
      ok: true,
      extension: "ckpt",
    });
  });
});

describe("names that are refused, each with what to change", () => {
  const cases: [string, LoraFileNameProblem, RegExp][] = [
    ["", "empty", /empty: give it a name/],
    ["a\u0000.pt", "control_character", /control character U\+0000 at position 2: remove it/],
    ["a\u0007.pt", "control_character", /U\+0007/],
    ["\tx.pt", "control_character", /U\+0009 at position 1/],
    ["a\u0085.pt", "control_character", /U\+0085/],
    ["a\u007f.pt", "control_character", /U\+007F/],
    ["file\ud800.pt", "unpaired_surrogate", /not valid Unicode/],
    ["evil\u202Egpj.safetensors", "bidi_control", /U\+202E \(RIGHT-TO-LEFT OVERRIDE\) at position 5.*remove it/],
    ...[0x202a, 0x202b, 0x202c, 0x202d, 0x2066, 0x2067, 0x2068, 0x2069, 0x200e, 0x200f, 0x061c].map(
      (cp): [string, LoraFileNameProblem, RegExp] => [
        `a${String.fromCodePoint(cp)}b.safetensors`,
        "bidi_control",
        new RegExp(`U\\+${cp.toString(16).toUpperCase().padStart(4, "0")} \\(`),
      ],
    ),
    ["a\u200Bb.safetensors", "invisible_character", /U\+200B \(ZERO WIDTH SPACE\) at position 2: remove it/],
    ["a\u200Cb.safetensors", "invisible_character", /ZERO WIDTH NON-JOINER/],
    ["a\u200Db.safetensors", "invisible_character", /ZERO WIDTH JOINER/],
    ["a\u2060b.safetensors", "invisible_character", /WORD JOINER/],
    ["\uFEFFstyle.safetensors", "invisible_character", /U\+FEFF/],
    ["soft\u00ADhyphen.pt", "invisible_character", /SOFT HYPHEN/],
    ["a\u180Eb.pt", "invisible_character", /U\+180E/],
    ["a\u2061b.pt", "invisible_character", /U\+2061/],
    ["tag\u{E0041}.pt", "invisible_character", /U\+E0041/],
    ["heart\u2764\uFE0F.pt", "invisible_character", /U\+FE0F/],
    ["line\u2028two.pt", "invisible_character", /LINE SEPARATOR/],
    ["hangul\u3164filler.pt", "invisible_character", /U\+3164/],
    ["../x.safetensors", "path_separator", /contains "\/": a name cannot include folders/],
    ["a\\b.pt", "path_separator", /contains "\\"/],
    ["C:style.pt", "windows_forbidden_character", /contains ":", which Windows does not allow/],
    ...["<", ">", '"', "|", "?", "*"].map((c): [string, LoraFileNameProblem, RegExp] => [
      `a${c}b.pt`,
      "windows_forbidden_character",
      /Windows does not allow/,
    ]),
    [" style.safetensors", "leading_or_trailing_space", /starts with a space: remove it/],
    ["style.safetensors ", "leading_or_trailing_space", /ends with a space/],
    ["\u00A0style.safetensors", "leading_or_trailing_space", /starts with a space/],
    ["style.safetensors\u3000", "leading_or_trailing_space", /ends with a space/],
    ["   ", "leading_or_trailing_space", /space/],
    [".style.safetensors", "leading_or_trailing_dot", /starts with a dot \(a hidden file/],
    [".safetensors", "leading_or_trailing_dot", /starts with a dot/],
    ["style.safetensors.", "leading_or_trailing_dot", /ends with a dot/],
    ["..", "leading_or_trailing_dot", /dot/],
    ["model.zip", "extension", /^File must be \.safetensors or \.pt format$/],
    ["model", "extension", /^File must be \.safetensors or \.pt format$/],
    ["model.safetensors.exe", "extension", /File must be/],
    ["model.pth", "extension", /File must be/],
    [
      "CON.safetensors",
      "windows_device_name",
      /"CON" is a device name on Windows.*rename the file, e\.g\. con_lora\.safetensors/,
    ],
    ["con.pt", "windows_device_name", /"CON"/],
    ["nul.pt", "windows_device_name", /"NUL"/],
    ["Nul.tar.pt", "windows_device_name", /"NUL"/],
    ["AUX .pt", "windows_device_name", /"AUX"/],
    ["prn.safetensors", "windows_device_name", /"PRN"/],
    ["com1.safetensors", "windows_device_name", /"COM1"/],
    ["COM9.pt", "windows_device_name", /"COM9"/],
    ["lpt1.pt", "windows_device_name", /"LPT1"/],
    ["LPT9.safetensors", "windows_device_name", /"LPT9"/],
    ["com\u00B9.pt", "windows_device_name", /"COM¹"/],
    ["lpt\u00B3.safetensors", "windows_device_name", /"LPT³"/],
    ["Com\u00B2.x.pt", "windows_device_name", /"COM²"/],
    ["conin$.pt", "windows_device_name", /"CONIN\$"/],
  ];

  test.each(cases)("%j: %s", (name, problem, message) => {
    const r = checkLoraFileName(name);
    expect(r).toMatchObject({
      ok: false,
      problem,
      reason: problem === "extension" ? ErrorReason.INVALID_FILE_FORMAT : ErrorReason.INVALID_NAME,
    });
    expect(!r.ok && r.message).toMatch(message);
  });

  test("the cases cover every problem the rule names", () => {
    const seen = new Set(cases.map(([, p]) => p));
    seen.add("too_long");
    const all: LoraFileNameProblem[] = [
      "empty",
      "unpaired_surrogate",
      "control_character",
      "bidi_control",
      "invisible_character",
      "path_separator",
      "windows_forbidden_character",
      "leading_or_trailing_space",
      "leading_or_trailing_dot",
      "too_long",
      "extension",
      "windows_device_name",
    ];
    expect([...seen].sort()).toEqual(all.sort());
  });
});

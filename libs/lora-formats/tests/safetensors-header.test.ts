import { FormatError, parseSafetensorsHeader, SAFETENSORS_DTYPES } from "../src/index.js";

const encode = (value: unknown): Uint8Array =>
  new TextEncoder().encode(typeof value === "string" ? value : JSON.stringify(value));

function expectFormatError(header: unknown, dataBytes: number, message: RegExp): void {
  let thrown: unknown;
  try {
    parseSafetensorsHeader(encode(header), dataBytes);
  } catch (error) {
    thrown = error;
  }
  expect(thrown).toBeInstanceOf(FormatError);
  expect((thrown as Error).message).toMatch(message);
}

describe("parseSafetensorsHeader", () => {
  it("returns tensors sorted by offset and the metadata map", () => {
    const header = {
      __metadata__: { format: "pt", ss_network_dim: "8" },
      "b.weight": { dtype: "F16", shape: [4], data_offsets: [24, 32] },
      "a.weight": { dtype: "F32", shape: [2, 3], data_offsets: [0, 24] },
    };
    const parsed = parseSafetensorsHeader(encode(header), 32);
    expect(parsed.metadata).toEqual({ format: "pt", ss_network_dim: "8" });
    expect(parsed.tensors.map((t) => [t.name, t.dtype, t.shape, t.dataOffsets])).toEqual([
      ["a.weight", "F32", [2, 3], [0, 24]],
      ["b.weight", "F16", [4], [24, 32]],
    ]);
  });

  it("accepts a header without tensors or metadata, scalars, zero-sized tensors and padding spaces", () => {
    expect(parseSafetensorsHeader(encode("{}      "), 0)).toEqual({ tensors: [], metadata: {} });
    const header = {
      scalar: { dtype: "F64", shape: [], data_offsets: [0, 8] },
      empty: { dtype: "F32", shape: [0, 5], data_offsets: [8, 8] },
    };
    expect(parseSafetensorsHeader(encode(header), 8).tensors.map((t) => t.name)).toEqual(["scalar", "empty"]);
  });

  it("knows every dtype of the safetensors spec, including sub-byte ones", () => {
    expect([...SAFETENSORS_DTYPES].sort()).toEqual(
      [
        "BOOL",
        "F4",
        "F6_E2M3",
        "F6_E3M2",
        "U8",
        "I8",
        "F8_E5M2",
        "F8_E4M3",
        "F8_E8M0",
        "F8_E4M3FNUZ",
        "F8_E5M2FNUZ",
        "I16",
        "U16",
        "F16",
        "BF16",
        "I32",
        "U32",
        "F32",
        "C64",
        "F64",
        "I64",
        "U64",
      ].sort(),
    );
    expect(
      parseSafetensorsHeader(encode({ q: { dtype: "F4", shape: [2, 3], data_offsets: [0, 3] } }), 3).tensors,
    ).toHaveLength(1);
    expect(
      parseSafetensorsHeader(encode({ q: { dtype: "F6_E2M3", shape: [4], data_offsets: [0, 3] } }), 3).tensors,
    ).toHaveLength(1);
    expectFormatError(
      { q: { dtype: "F4", shape: [3], data_offsets: [0, 2] } },
      2,
      /3 elements of F4, which do not fill whole bytes/,
    );
  });

  it("keeps a __proto__ metadata key as plain data", () => {
    const parsed = parseSafetensorsHeader(encode('{"__metadata__":{"__proto__":"x"}}'), 0);
    expect(Object.getPrototypeOf(parsed.metadata)).toBe(Object.prototype);
    expect(Object.keys(parsed.metadata)).toEqual(["__proto__"]);
  });

  it.each<[string, unknown, number, RegExp]>([
    [
      "an unknown dtype",
      { w: { dtype: "F33", shape: [1], data_offsets: [0, 4] } },
      4,
      /Tensor "w" has dtype "F33", which is not a safetensors dtype/,
    ],
    ["a lower-case dtype", { w: { dtype: "f32", shape: [1], data_offsets: [0, 4] } }, 4, /dtype "f32"/],
    [
      "a negative dimension",
      { w: { dtype: "F32", shape: [-1], data_offsets: [0, 4] } },
      4,
      /Tensor "w" "shape" must hold non-negative integers, but holds "-1"/,
    ],
    [
      "a fractional dimension",
      { w: { dtype: "F32", shape: [1.5], data_offsets: [0, 4] } },
      4,
      /"shape" must hold non-negative integers, but holds "1.5"/,
    ],
    [
      "a string dimension",
      { w: { dtype: "F32", shape: ["1"], data_offsets: [0, 4] } },
      4,
      /"shape" must hold non-negative integers, but holds a string/,
    ],
    [
      "an integer above 64 bits",
      '{"w":{"dtype":"U8","shape":[18446744073709551616],"data_offsets":[0,1]}}',
      1,
      /holds "18446744073709551616", which is larger than 64 bits/,
    ],
    [
      "a shape whose product overflows before a zero dimension",
      '{"w":{"dtype":"U8","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}}',
      0,
      /element count overflows 64 bits/,
    ],
    [
      "a wrong span",
      { w: { dtype: "F32", shape: [2, 3], data_offsets: [0, 20] } },
      20,
      /Tensor "w" "data_offsets" \[0, 20\] span 20 bytes, but shape \[2, 3\] of F32 needs 24 bytes/,
    ],
    [
      "three offsets",
      { w: { dtype: "U8", shape: [1], data_offsets: [0, 1, 2] } },
      1,
      /must be \[begin, end\], but it has 3 numbers/,
    ],
    ["reversed offsets", { w: { dtype: "U8", shape: [0], data_offsets: [4, 0] } }, 4, /\[4, 0\] end before they begin/],
    [
      "overlapping tensors",
      { a: { dtype: "U8", shape: [4], data_offsets: [0, 4] }, b: { dtype: "U8", shape: [4], data_offsets: [2, 6] } },
      6,
      /Tensor "b" "data_offsets" \[2, 6\] overlap tensor "a" \[0, 4\]/,
    ],
    [
      "a gap",
      { a: { dtype: "U8", shape: [4], data_offsets: [0, 4] }, b: { dtype: "U8", shape: [4], data_offsets: [6, 10] } },
      10,
      /leave a gap of 2 bytes after tensor "a"/,
    ],
    [
      "data not starting at 0",
      { a: { dtype: "U8", shape: [4], data_offsets: [4, 8] } },
      8,
      /leave 4 bytes unused at the start/,
    ],
    ["a missing dtype", { w: { shape: [1], data_offsets: [0, 1] } }, 1, /Tensor "w" has no "dtype"/],
    ["a non-tensor entry", { w: 5 }, 0, /header entry "w" is a number, not a tensor description/],
    ["a tensor array of two elements", { w: ["U8", [0]] }, 0, /written as an array must have exactly 3 elements/],
    [
      "a non-string metadata value",
      { __metadata__: { epochs: 10 } },
      0,
      /"__metadata__" value for "epochs" is a number; metadata values must be strings/,
    ],
    [
      "non-object metadata",
      { __metadata__: "x" },
      0,
      /"__metadata__" must be an object of strings or null, but it is a string/,
    ],
  ])("rejects %s", (_label, header, dataBytes, message) => expectFormatError(header, dataBytes, message));

  it("checks that the tensors cover the data section exactly", () => {
    const header = { w: { dtype: "U8", shape: [4], data_offsets: [0, 4] } };
    expectFormatError(
      header,
      3,
      /need a data section of 4 bytes but the file has 3 bytes after the header: the file is truncated/,
    );
    expectFormatError(header, 6, /2 bytes after the last tensor belong to no tensor/);
  });

  it.each<[string, string, RegExp]>([
    ["a second __metadata__", '{"__metadata__":null,"__metadata__":{}}', /"__metadata__" appears twice/],
    [
      "a field twice",
      '{"a":{"dtype":"U8","dtype":"U8","shape":[0],"data_offsets":[0,0]}}',
      /Tensor "a" has the field "dtype" twice/,
    ],
    [
      "an earlier duplicate that is no tensor",
      '{"a":{"dtype":"F99","shape":[0],"data_offsets":[0,0]},"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}',
      /dtype "F99", which is not a safetensors dtype/,
    ],
    ["a byte-order mark", "\ufeff{}", /must be a JSON object, but it starts with byte 0xef/],
    ["trailing data", "{} x", /unexpected data after the header object \(the character "x"\)/],
    ["NUL padding", "{}\u0000", /unexpected data after the header object \(byte 0x00\)/],
    ["an unterminated object", '{"a":', /header entry "a" is the end of the header/],
    ["a raw control character in a string", '{"__metadata__":{"k":"a\u0001b"}}', /control character inside a string/],
    ["a lone surrogate escape", '{"__metadata__":{"k":"\\ud800"}}', /lone high surrogate/],
    ["single quotes", "{'a':1}", /expected a quoted string, found the character "'"/],
    ["a trailing comma", '{"__metadata__":{},}', /expected a quoted string, found the character "}"/],
    [
      "nesting deeper than serde_json's limit",
      `{"a":{"x":${"[".repeat(126)}${"]".repeat(126)},"dtype":"U8","shape":[0],"data_offsets":[0,0]}}`,
      /nested deeper than 127 levels/,
    ],
    ["-0 as a dimension", '{"a":{"dtype":"U8","shape":[-0],"data_offsets":[0,0]}}', /but holds "-0"/],
    ["1.0 as a dimension", '{"a":{"dtype":"U8","shape":[1.0],"data_offsets":[0,1]}}', /but holds "1\.0"/],
  ])("rejects JSON with %s", (_label, text, message) => expectFormatError(text, 0, message));

  it.each<[string, string, number, Record<string, string>, [string, number[]][]]>([
    [
      "leading and trailing whitespace",
      ' \n\t{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}\r\n  ',
      2,
      {},
      [["a", [2]]],
    ],
    [
      '"__metadata__": null',
      '{"__metadata__":null,"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}',
      1,
      {},
      [["a", [1]]],
    ],
    [
      "duplicate tensor names (the last wins)",
      '{"a":{"dtype":"F32","shape":[9],"data_offsets":[0,36]},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}',
      2,
      {},
      [["a", [2]]],
    ],
    ["duplicate metadata keys (the last wins)", '{"__metadata__":{"k":"1","k":"2"}}', 0, { k: "2" }, []],
    [
      "a dtype written as an object",
      '{"a":{"dtype":{"BF16":null},"shape":[1],"data_offsets":[0,2]}}',
      2,
      {},
      [["a", [1]]],
    ],
    [
      "unknown fields, nested",
      '{"a":{"extra":{"deep":[1,2.5e3,"x",null,true]},"dtype":"U8","shape":[1],"data_offsets":[0,1],"z":-0}}',
      1,
      {},
      [["a", [1]]],
    ],
    ["a tensor written as an array", '{"a":["U8",[3],[0,3]]}', 3, {}, [["a", [3]]]],
    [
      "an escaped key",
      '{"\\u005f_metadata__":{"k":"v"},"\\u0061":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}',
      0,
      { k: "v" },
      [["a", [0]]],
    ],
    [
      "a zero-element tensor with a dimension of 2^64 - 1",
      '{"a":{"dtype":"F32","shape":[18446744073709551615,0],"data_offsets":[0,0]}}',
      0,
      {},
      [["a", [2 ** 64, 0]]],
    ],
  ])("accepts %s, as the reference does", (_label, text, dataBytes, metadata, tensors) => {
    const header = parseSafetensorsHeader(encode(text), dataBytes);
    expect(header.metadata).toEqual(metadata);
    expect(header.tensors.map((t) => [t.name, t.shape])).toEqual(tensors);
  });

  it("rejects a header that is not UTF-8", () => {
    expect(() => parseSafetensorsHeader(Uint8Array.from([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d]), 0)).toThrow(
      /not valid UTF-8/,
    );
  });
});

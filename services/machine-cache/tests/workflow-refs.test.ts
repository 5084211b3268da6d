import { errorReason } from "@emprops/platform";
import { LoraSource } from "@emprops/contracts";
import { workflowReferences } from "../src/workflow-refs.js";

const refs = (json: unknown) =>
  workflowReferences(typeof json === "string" ? json : JSON.stringify(json)).map((r) => [
    r.source === LoraSource.USER ? "user" : "shared",
    r.identifier,
  ]);

test("the specification's EmProps_Lora_Loader nodes, user and shared", () => {
  expect(
    refs({
      nodes: [
        {
          id: 14,
          type: "EmProps_Lora_Loader",
          inputs: { model: { link: 27 }, lora_source: "user", lora_identifier: "123", strength_model: 0.75 },
        },
        {
          id: 15,
          type: "EmProps_Lora_Loader",
          inputs: { lora_source: "shared", lora_identifier: "my_style.safetensors" },
        },
        { id: 16, type: "KSampler", inputs: { seed: 1 } },
      ],
    }),
  ).toEqual([
    ["user", "123"],
    ["shared", "my_style.safetensors"],
  ]);
});

test("the API format, in node order, with lora_id, numeric ids and old lora_name strings", () => {
  expect(
    refs({
      "20": { class_type: "LoraLoader", inputs: { lora_name: "old_style.safetensors", model: ["4", 0] } },
      "3": { class_type: "EmProps_Lora_Loader", inputs: { lora_source: "user", lora_id: 77 } },
      "7": { class_type: "EmProps_Lora_Loader", inputs: { lora_name: "legacy.safetensors", provider: "azure" } },
      "8": { class_type: "CLIPTextEncode", inputs: { text: "lora_name" } },
    }),
  ).toEqual([
    ["user", "77"],
    ["shared", "legacy.safetensors"],
    ["shared", "old_style.safetensors"],
  ]);
});

test("a /prompt body, the UI format's widget values, muted nodes, duplicates and links", () => {
  expect(
    refs({
      prompt: { "1": { class_type: "EmProps_Lora_Loader", inputs: { lora_source: "user", lora_identifier: "5" } } },
    }),
  ).toEqual([["user", "5"]]);
  expect(
    refs({
      nodes: [
        { id: 1, type: "EmProps_Lora_Loader", widgets_values: ["user", "9", 1, 1] },
        { id: 2, type: "LoraLoader", widgets_values: ["shared/a.safetensors", 1, 1] },
        { id: 3, type: "LoraLoader", mode: 4, widgets_values: ["bypassed.safetensors", 1, 1] },
        { id: 4, type: "EmProps_Lora_Loader", inputs: { lora_source: "user", lora_identifier: "9" } },
        { id: 5, type: "LoraLoader", inputs: { lora_name: ["12", 0] } },
        { id: 6, type: "LoraLoader", widgets_values: [`users/0b7f2f9e-9a55-4b0e-8b8e-2f6d1c0a9e21/41-x.safetensors`] },
      ],
    }),
  ).toEqual([
    ["user", "9"],
    ["shared", "a.safetensors"],
    ["user", "41"],
  ]);
});

test("what is not a workflow is refused with INVALID_WORKFLOW", () => {
  for (const bad of ["{", "[1,2]", "42", "null"]) {
    let err: unknown;
    try {
      workflowReferences(bad);
    } catch (e) {
      err = e;
    }
    expect(errorReason(err)).toBe("INVALID_WORKFLOW");
  }
  expect(refs({})).toEqual([]);
});

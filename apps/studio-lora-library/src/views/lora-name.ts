import { el } from "../dom.js";
import { splitName } from "../format-name.js";

/** A LoRA's name in one line: a long stem is shortened with an ellipsis, the extension always shows. */
export function loraName(tag: "h3" | "span" | "strong", name: string, cls: string): HTMLElement {
  const { stem, extension } = splitName(name);
  return el(
    tag,
    { class: `lora-name ${cls}`, title: name },
    el("span", { class: "name-stem" }, stem),
    el("span", { class: "name-ext" }, extension),
  );
}

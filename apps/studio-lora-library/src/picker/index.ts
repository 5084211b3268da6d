import { LoraPickerElement } from "./lora-picker.js";

export { LORA_ADD_EVENT, type LoraAddDetail, LoraPickerElement } from "./lora-picker.js";

/** Defined once, whichever script loads first. */
if (!customElements.get("emprops-lora-picker")) customElements.define("emprops-lora-picker", LoraPickerElement);

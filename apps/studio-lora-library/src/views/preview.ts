import type { Lora } from "@emprops/contracts";
import type { LoraClient } from "../api.js";
import { el } from "../dom.js";

/**
 * A LoRA's preview frame of a fixed aspect (4:3): the image, loaded lazily
 * once its signed URL is known, or a placeholder saying there is none.
 */
export function previewFrame(lora: Lora, size: "card" | "large"): HTMLElement {
  const frame = el("div", { class: `preview preview-${size}`, "data-preview-for": lora.id });
  if (lora.preview) {
    frame.append(
      el("img", {
        class: "preview-image",
        alt: `Preview of ${lora.name}`,
        loading: "lazy",
        decoding: "async",
        width: lora.preview.width,
        height: lora.preview.height,
      }),
    );
  } else {
    frame.classList.add("preview-none");
    frame.append(el("span", { class: "preview-placeholder", "aria-label": "No preview image" }, "No preview"));
  }
  return frame;
}

/** Fills the frames under root with their images: one GetLoraPreviewUrls call for the LoRAs that have one. */
export async function loadPreviews(client: LoraClient, root: ParentNode, loras: Lora[]): Promise<void> {
  const ids = loras.filter((l) => l.preview).map((l) => l.id);
  if (ids.length === 0) return;
  const { previews } = await client.getLoraPreviewUrls({ loraIds: ids });
  for (const p of previews) {
    for (const img of root.querySelectorAll<HTMLImageElement>(`[data-preview-for="${p.loraId}"] img`)) img.src = p.url;
  }
}

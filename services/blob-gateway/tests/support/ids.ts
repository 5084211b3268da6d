import { randomUUID } from "node:crypto";

let next = 1000;

/** A user LoRA blob reference with a fresh lora id. */
export function newBlob(
  extension: "safetensors" | "pt" = "safetensors",
  userId: string = randomUUID(),
): { userId: string; loraId: string; extension: string } {
  next += 1;
  return { userId, loraId: String(next), extension };
}

/** The path the gateway builds for a blob reference. */
export function pathOf(blob: { userId: string; loraId: string; extension: string }): string {
  return `users/${blob.userId}/loras/${blob.loraId}.${blob.extension}`;
}

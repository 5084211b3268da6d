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

/** An upload with a fresh upload id (its staging blob). */
export function newUpload(
  extension: "safetensors" | "pt" = "safetensors",
  userId: string = randomUUID(),
): { userId: string; uploadId: string; extension: string } {
  return { userId, uploadId: randomUUID(), extension };
}

/** The staging path the gateway builds for an upload. */
export function stagedPathOf(upload: { userId: string; uploadId: string; extension: string }): string {
  return `staging/${upload.userId}/${upload.uploadId}.${upload.extension}`;
}

/** The final blob of an upload's LoRA: same user and extension. */
export function finalBlobOf(upload: { userId: string; extension: string }) {
  return newBlob(upload.extension as "safetensors" | "pt", upload.userId);
}

import type { BenchEnvironment } from "./environment.js";
import { type TimedUpload, uploadLora } from "./upload.js";

/**
 * LoRAs uploaded through the registry once per run and shared by the suites
 * (the 500 MB one serves the upload, cold-fetch, 64-caller, VerifyBlob and
 * memory figures). Uploaded on first use.
 */
export class LoraPool {
  private readonly uploads = new Map<string, Promise<TimedUpload & { sizeBytes: number }>>();

  constructor(private readonly env: () => BenchEnvironment) {}

  get(name: string, sizeBytes: number): Promise<TimedUpload & { sizeBytes: number }> {
    let upload = this.uploads.get(name);
    if (!upload) {
      upload = uploadLora(this.env().lora, `bench-${name}.safetensors`, sizeBytes).then((u) => ({ ...u, sizeBytes }));
      this.uploads.set(name, upload);
    }
    return upload;
  }

  /** Registers a LoRA a suite uploaded itself. */
  adopt(name: string, upload: TimedUpload, sizeBytes: number): void {
    if (!this.uploads.has(name)) this.uploads.set(name, Promise.resolve({ ...upload, sizeBytes }));
  }

  /** Deletes a LoRA (its blob goes through the deletion event) and forgets it. */
  async drop(name: string): Promise<void> {
    const upload = await this.uploads.get(name);
    this.uploads.delete(name);
    if (upload) await this.env().lora.deleteLora({ loraId: upload.loraId });
  }
}

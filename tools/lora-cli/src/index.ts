export { run } from "./program.js";
export { uploadLora, type UploadLoraOptions, type UploadLoraResult, type UploadProgress } from "./upload-lora.js";
export { createRegistryClients, type RegistryClients } from "./clients.js";
export { EXIT, CliError, describeError } from "./errors.js";

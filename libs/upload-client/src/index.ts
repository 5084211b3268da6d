export {
  uploadLora,
  type UploadLoraOptions,
  type UploadLoraResult,
  type UploadSession,
  type ResumeInfo,
} from "./upload-lora.js";
export { type UploadSource, type UploadProgress, type RetryPolicy } from "./send-blocks.js";
export { UploadSessionEndedError, type NewUpload } from "./upload-session.js";
export { BlobRequestError } from "./blob-request-error.js";
export { HeadRefusedError, checkFileHead } from "./head-check.js";
export {
  fetchPut,
  putBlockRequest,
  putBlockListRequest,
  type BlobPut,
  type PutBody,
  type PutTransport,
} from "./blob-put.js";

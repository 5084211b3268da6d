import type { ColumnType } from "kysely";

export type UploadSessionState = "pending" | "completed" | "aborted" | "expired" | "failed";

/** An upload session: one pending flat_file row and its quota reservation. */
export interface LoraUploadTable {
  id: string;
  user_id: string;
  lora_id: string;
  state: UploadSessionState;
  declared_size_bytes: ColumnType<string, number, number>;
  extension: string;
  /** Lower-case hex sha256 the client declared, checked at completion. */
  expected_sha256: string | null;
  /** The staging blob the upload URL writes: staging/{user_id}/{upload_id}.{ext}. */
  blob_path: string | null;
  created_at: Date;
  expires_at: Date;
  finished_at: Date | null;
  failure_reason: string | null;
  failure_message: string | null;
  /** W3C trace context of the request that began the session; completing and reaping it join that trace. */
  trace_context: ColumnType<Record<string, string> | null, Record<string, string> | null | undefined, never>;
}

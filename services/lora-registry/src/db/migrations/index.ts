import type { Migration } from "kysely";
import * as m001 from "./2026-11-25-001-flat-file.js";
import * as m002 from "./2026-11-25-002-lora-indexes.js";
import * as m003 from "./2026-11-25-003-lora-quota.js";
import * as m004 from "./2026-11-25-004-lora-upload.js";
import * as m005 from "./2026-11-25-005-lora-usage.js";
import * as m006 from "./2026-11-25-006-audit-outbox.js";
import * as m007 from "./2026-11-25-007-machine-cache-stats.js";
import * as m008 from "./2026-11-25-008-outbox-trace-context.js";
import * as m009 from "./2026-12-03-009-lora-search-text.js";
import * as m010 from "./2026-12-03-010-upload-trace-context.js";
import * as m011 from "./2026-12-03-011-storage-sweep-report.js";

/** Every migration, in order. Each file is frozen once merged. */
export const migrations: Record<string, Migration> = {
  "2026-11-25-001-flat-file": m001,
  "2026-11-25-002-lora-indexes": m002,
  "2026-11-25-003-lora-quota": m003,
  "2026-11-25-004-lora-upload": m004,
  "2026-11-25-005-lora-usage": m005,
  "2026-11-25-006-audit-outbox": m006,
  "2026-11-25-007-machine-cache-stats": m007,
  "2026-11-25-008-outbox-trace-context": m008,
  "2026-12-03-009-lora-search-text": m009,
  "2026-12-03-010-upload-trace-context": m010,
  "2026-12-03-011-storage-sweep-report": m011,
};

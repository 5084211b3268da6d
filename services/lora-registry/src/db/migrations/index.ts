import type { Migration } from "kysely";

/** Every migration, in order. Each file is frozen once merged. */
export const migrations: Record<string, Migration> = {};

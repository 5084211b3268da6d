import { type Kysely, Migrator, type MigrationProvider, NO_MIGRATIONS } from "kysely";
import { migrations } from "./migrations/index.js";

const provider: MigrationProvider = { getMigrations: async () => migrations };

/** Brings the schema to the latest migration; throws with the failing one's name. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function migrateToLatest(db: Kysely<any>): Promise<void> {
  const { error, results } = await new Migrator({ db, provider }).migrateToLatest();
  const failed = results?.find((r) => r.status === "Error");
  if (error) throw new Error(`migration ${failed?.migrationName ?? "?"} failed: ${String(error)}`, { cause: error });
}

/** Runs every down migration (development and tests). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function migrateToNothing(db: Kysely<any>): Promise<void> {
  const { error, results } = await new Migrator({ db, provider }).migrateTo(NO_MIGRATIONS);
  const failed = results?.find((r) => r.status === "Error");
  if (error) throw new Error(`migration ${failed?.migrationName ?? "?"} failed: ${String(error)}`, { cause: error });
}

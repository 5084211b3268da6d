import type { Logger } from "@emprops/platform";
import pg from "pg";

const INVALID_CATALOG_NAME = "3D000"; // database does not exist
const DUPLICATE_DATABASE = "42P04"; // created meanwhile, e.g. by another replica
const OBJECT_IN_USE = "55006"; // another session is connected to template1: try again

/**
 * Creates the database that DATABASE_URL names when it does not exist and the
 * role may create databases (through the server's `postgres` maintenance
 * database). When it may not, start-up stops with a message saying how to
 * create it. Any other connection problem is left to the migration, which
 * reports it as before.
 */
export async function ensureDatabase(databaseUrl: string, logger: Logger): Promise<void> {
  const probe = new pg.Client({ connectionString: databaseUrl });
  try {
    await probe.connect();
    return;
  } catch (err) {
    if ((err as { code?: string }).code !== INVALID_CATALOG_NAME) return;
  } finally {
    await probe.end().catch(() => {});
  }

  const target = new URL(databaseUrl);
  const name = decodeURIComponent(target.pathname.slice(1));
  const maintenance = new URL(databaseUrl);
  maintenance.pathname = "/postgres";
  const admin = new pg.Client({ connectionString: maintenance.toString() });
  try {
    await admin.connect();
    for (let attempt = 1; ; attempt++) {
      try {
        await admin.query(`CREATE DATABASE ${admin.escapeIdentifier(name)}`);
        break;
      } catch (err) {
        if (attempt >= 5 || (err as { code?: string }).code !== OBJECT_IN_USE) throw err;
        await new Promise((r) => setTimeout(r, 200 * attempt));
      }
    }
    logger.info({ database: name }, "created the database named in DATABASE_URL");
  } catch (err) {
    if ((err as { code?: string }).code === DUPLICATE_DATABASE) return;
    const user = decodeURIComponent(target.username) || "<user>";
    const port = target.port || "5432";
    throw new Error(
      `database "${name}" in DATABASE_URL does not exist and could not be created (${(err as Error).message}); ` +
        `create it, e.g. createdb -h ${target.hostname} -p ${port} -U ${user} ${name}, ` +
        `or give the role CREATEDB (ALTER ROLE "${user}" CREATEDB)`,
      { cause: err },
    );
  } finally {
    await admin.end().catch(() => {});
  }
}

import type Database from "better-sqlite3";
import type { Db } from "./open-database.js";

type Prepared<P, R> = P extends unknown[] ? Database.Statement<P, R> : Database.Statement<[P], R>;

const statements = new WeakMap<Db, Map<string, Database.Statement<unknown[], unknown>>>();

/**
 * `db.prepare(source)` once per database, then the same statement again:
 * preparing parses and plans the SQL, which the cached-hit path would
 * otherwise pay on every call.
 */
export function prepared<P extends unknown[] | object = unknown[], R = unknown>(
  db: Db,
  source: string,
): Prepared<P, R> {
  let byText = statements.get(db);
  if (!byText) {
    byText = new Map();
    statements.set(db, byText);
  }
  let statement = byText.get(source);
  if (!statement) {
    statement = db.prepare(source);
    byText.set(source, statement);
  }
  return statement as unknown as Prepared<P, R>;
}

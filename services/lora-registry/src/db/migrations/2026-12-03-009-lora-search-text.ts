import { type Kysely, sql } from "kysely";

/**
 * Search across a LoRA's name, tags, trigger words and description. The
 * text searched is an IMMUTABLE function of the row (lower case, the fields
 * joined by U+001F, which a search term cannot contain, so no match spans
 * two fields) and the index is over that expression rather than a stored
 * generated column: flat_file is the platform's table, and adding a column
 * would rewrite it whole under an exclusive lock and show as drift in its
 * schema. With pg_trgm and btree_gin the index is one GIN over
 * (user_id, search text): a substring search reads only the caller's
 * matches however many rows flat_file holds. fastupdate is off so no
 * pending list of other users' rows is scanned by every search. The name-only
 * trigram index it replaces is dropped.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    CREATE OR REPLACE FUNCTION lora_search_text(name text, tags text[], data jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
      SELECT lower(concat_ws(E'\\x1f',
        name,
        array_to_string(array_remove(tags, 'lora'), E'\\x1f'),
        (SELECT string_agg(word, E'\\x1f')
         FROM jsonb_array_elements_text(
           CASE WHEN jsonb_typeof(data #> '{lora_metadata,trigger_words}') = 'array'
                THEN data #> '{lora_metadata,trigger_words}' ELSE '[]'::jsonb END) AS word),
        CASE WHEN jsonb_typeof(data #> '{lora_metadata,description}') = 'string'
             THEN data #>> '{lora_metadata,description}' END))
    $$`.execute(db);

  const installed = async (name: string) => {
    // A failed CREATE EXTENSION (not installed, no privilege) must not abort the migration.
    await sql`SAVEPOINT lora_extension`.execute(db);
    try {
      await sql`CREATE EXTENSION IF NOT EXISTS ${sql.id(name)}`.execute(db);
      await sql`RELEASE SAVEPOINT lora_extension`.execute(db);
    } catch {
      await sql`ROLLBACK TO SAVEPOINT lora_extension`.execute(db);
    }
    const found = await sql<{ ok: boolean }>`
      SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = ${name}) AS ok`.execute(db);
    return found.rows[0]?.ok === true;
  };
  const trgm = await installed("pg_trgm");
  const btreeGin = trgm && (await installed("btree_gin"));
  if (trgm) {
    const columns = btreeGin
      ? sql`user_id, lora_search_text(name, tags, gen_out_data) gin_trgm_ops`
      : sql`lora_search_text(name, tags, gen_out_data) gin_trgm_ops`;
    await sql`
      CREATE INDEX IF NOT EXISTS flat_file_lora_search_idx ON flat_file USING gin (${columns})
      WITH (fastupdate = off)
      WHERE 'lora' = ANY (tags) AND hidden IS NOT TRUE`.execute(db);
  }
  await sql`DROP INDEX IF EXISTS flat_file_lora_name_trgm_idx`.execute(db);
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await sql`DROP INDEX IF EXISTS flat_file_lora_search_idx`.execute(db);
  await sql`DROP FUNCTION IF EXISTS lora_search_text(text, text[], jsonb)`.execute(db);
  const trgm = await sql<{ ok: boolean }>`
    SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') AS ok`.execute(db);
  if (trgm.rows[0]?.ok) {
    await sql`
      CREATE INDEX IF NOT EXISTS flat_file_lora_name_trgm_idx ON flat_file USING gin (lower(name) gin_trgm_ops)
      WHERE 'lora' = ANY (tags) AND hidden IS NOT TRUE`.execute(db);
  }
}

import { type Kysely, sql } from "kysely";

/**
 * Indexes that keep one user's LoRA list fast however many rows flat_file
 * holds: partial (LoRAs that are not hidden only), led by user_id, one per
 * sort key with id as tie-breaker for keyset pages (created_at is nullable
 * in the Prisma model: a missing time sorts as the epoch). Name search is a
 * substring match; a trigram index serves it when pg_trgm can be installed.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  // IMMUTABLE so it can be indexed; tolerates rows whose size is missing or not a number.
  await sql`
    CREATE OR REPLACE FUNCTION lora_size_bytes(data jsonb) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
      SELECT CASE WHEN jsonb_typeof(data -> 'size_bytes') = 'number'
                  THEN floor((data ->> 'size_bytes')::numeric)::bigint
                  ELSE 0 END
    $$`.execute(db);
  await sql`
    CREATE INDEX IF NOT EXISTS flat_file_lora_user_created_idx ON flat_file (user_id, coalesce(created_at, 'epoch'::timestamp), id)
    WHERE 'lora' = ANY (tags) AND hidden IS NOT TRUE`.execute(db);
  await sql`
    CREATE INDEX IF NOT EXISTS flat_file_lora_user_name_idx ON flat_file (user_id, lower(name), id)
    WHERE 'lora' = ANY (tags) AND hidden IS NOT TRUE`.execute(db);
  await sql`
    CREATE INDEX IF NOT EXISTS flat_file_lora_user_size_idx ON flat_file (user_id, lora_size_bytes(gen_out_data), id)
    WHERE 'lora' = ANY (tags) AND hidden IS NOT TRUE`.execute(db);

  // A failed CREATE EXTENSION (not installed, no privilege) must not abort the migration.
  await sql`SAVEPOINT lora_trgm`.execute(db);
  try {
    await sql`CREATE EXTENSION IF NOT EXISTS pg_trgm`.execute(db);
    await sql`RELEASE SAVEPOINT lora_trgm`.execute(db);
  } catch {
    await sql`ROLLBACK TO SAVEPOINT lora_trgm`.execute(db);
  }
  const trgm = await sql<{ ok: boolean }>`
    SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') AS ok`.execute(db);
  if (trgm.rows[0]?.ok) {
    await sql`
      CREATE INDEX IF NOT EXISTS flat_file_lora_name_trgm_idx ON flat_file USING gin (lower(name) gin_trgm_ops)
      WHERE 'lora' = ANY (tags) AND hidden IS NOT TRUE`.execute(db);
  }
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await sql`DROP INDEX IF EXISTS flat_file_lora_name_trgm_idx`.execute(db);
  await sql`DROP INDEX IF EXISTS flat_file_lora_user_size_idx`.execute(db);
  await sql`DROP INDEX IF EXISTS flat_file_lora_user_name_idx`.execute(db);
  await sql`DROP INDEX IF EXISTS flat_file_lora_user_created_idx`.execute(db);
  await sql`DROP FUNCTION IF EXISTS lora_size_bytes(jsonb)`.execute(db);
}

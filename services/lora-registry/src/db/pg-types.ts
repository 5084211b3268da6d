import pg from "pg";

const TIMESTAMP_WITHOUT_TIME_ZONE = 1114;

/**
 * flat_file keeps Prisma's `timestamp(3)` without zone, holding UTC. pg
 * would read such values as local time; this reads them as UTC whatever
 * the process's TZ.
 */
export const pgTypes: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: "text" | "binary") => {
    if (oid === TIMESTAMP_WITHOUT_TIME_ZONE && format !== "binary") {
      return (value: string) => new Date(`${value.replace(" ", "T")}Z`);
    }
    return pg.types.getTypeParser(oid, format);
  }) as pg.CustomTypesConfig["getTypeParser"],
};

/** A Date as a UTC `timestamp` literal (what flat_file.created_at holds). */
export function toDbTimestamp(date: Date): string {
  return date.toISOString().replace("Z", "");
}

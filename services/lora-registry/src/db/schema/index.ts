/** The database as kysely sees it: one interface per table, in this folder. */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface Database {}

import type { Pool, RowDataPacket } from 'mysql2/promise';

/**
 * Row ids and timestamps the old contract reports (`id`, `created_at`, `updated_at`,
 * `last_sync`, `attached_at`) and src/db's records do not carry. Read-only; the records
 * themselves still come from src/db (getMapping, listMappings, listExports).
 */
export interface RowMeta {
  id: string;
  createdAt: Date;
  updatedAt: Date;
}

const TABLES = { mappings: 'device_mappings', exports: 'nbd_exports' } as const;

export async function rowMeta(
  db: Pool,
  table: keyof typeof TABLES,
  volumeIds: string[],
): Promise<Map<string, RowMeta>> {
  if (volumeIds.length === 0) return new Map();
  const [rows] = await db.query<RowDataPacket[]>(
    `SELECT id, volume_id, created_at, updated_at FROM ${TABLES[table]} WHERE volume_id IN (?)`,
    [volumeIds],
  );
  return new Map(
    rows.map((r) => [
      String(r.volume_id),
      { id: String(r.id), createdAt: r.created_at as Date, updatedAt: r.updated_at as Date },
    ]),
  );
}

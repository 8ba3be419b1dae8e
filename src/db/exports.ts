import type { Pool, PoolConnection, ResultSetHeader, RowDataPacket } from 'mysql2/promise';
import type { ExportBackendKind } from '../domain/mapping.js';

export interface ExportRecord {
  exportName: string;
  volumeId: string;
  targetPath: string;
  configPath: string;
  backend: ExportBackendKind;
  status: 'active' | 'error';
}

export async function upsertExport(db: Pool | PoolConnection, e: ExportRecord): Promise<void> {
  await db.query(
    `INSERT INTO nbd_exports (export_name, volume_id, target_path, config_path, backend, status)
     VALUES (?, ?, ?, ?, ?, ?)
     ON DUPLICATE KEY UPDATE target_path = VALUES(target_path), config_path = VALUES(config_path),
       backend = VALUES(backend), status = VALUES(status)`,
    [e.exportName, e.volumeId, e.targetPath, e.configPath, e.backend, e.status],
  );
}

export async function deleteExport(db: Pool | PoolConnection, volumeId: string): Promise<boolean> {
  const [r] = await db.query<ResultSetHeader>('DELETE FROM nbd_exports WHERE volume_id = ?', [volumeId]);
  return r.affectedRows > 0;
}

export async function getExport(pool: Pool, volumeId: string): Promise<ExportRecord | undefined> {
  return (await listExports(pool, { volumeId }))[0];
}

/** One volume's export row, read on `db` (a transaction's connection); `lock`: FOR UPDATE. */
export async function readExport(
  db: Pool | PoolConnection,
  volumeId: string,
  lock = false,
): Promise<ExportRecord | undefined> {
  const [rows] = await db.query<RowDataPacket[]>(
    `SELECT * FROM nbd_exports WHERE volume_id = ?${lock ? ' FOR UPDATE' : ''}`,
    [volumeId],
  );
  return rows[0] ? exportFromRow(rows[0]) : undefined;
}

/** An export row as read. */
export const exportFromRow = (r: RowDataPacket): ExportRecord => ({
  exportName: r.export_name,
  volumeId: r.volume_id,
  targetPath: r.target_path,
  configPath: r.config_path,
  backend: r.backend,
  status: r.status,
});

export async function listExports(pool: Pool, filter: { volumeId?: string; applianceVmId?: string } = {}) {
  const where: string[] = [];
  const args: string[] = [];
  if (filter.volumeId) {
    where.push('e.volume_id = ?');
    args.push(filter.volumeId);
  }
  if (filter.applianceVmId) {
    where.push('m.appliance_vm_id = ?');
    args.push(filter.applianceVmId);
  }
  const [rows] = await pool.query<RowDataPacket[]>(
    `SELECT e.* FROM nbd_exports e JOIN device_mappings m ON m.volume_id = e.volume_id
     ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ORDER BY e.export_name`,
    args,
  );
  return rows.map(exportFromRow);
}

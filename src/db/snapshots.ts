import type { Pool, PoolConnection, ResultSetHeader, RowDataPacket } from 'mysql2/promise';

/**
 * The engine's snapshot bookkeeping: before a test failover it snapshots each volume in
 * CloudStack and tells us which (`track`), then reads them back by its VM context to revert or
 * delete them, and clears them (`removeForContext`). We only record; the snapshots themselves
 * are the engine's CloudStack calls.
 */
export interface SnapshotRecord {
  volumeId: string;
  vmContextId: string;
  snapshotId: string;
  snapshotName: string | null;
  diskId: string | null;
  snapshotStatus: string;
  createdAt: Date;
  updatedAt: Date;
}

interface Row extends RowDataPacket {
  volume_id: string;
  vm_context_id: string;
  snapshot_id: string;
  snapshot_name: string | null;
  disk_id: string | null;
  snapshot_status: string;
  created_at: Date;
  updated_at: Date;
}

const fromRow = (r: Row): SnapshotRecord => ({
  volumeId: r.volume_id,
  vmContextId: r.vm_context_id,
  snapshotId: r.snapshot_id,
  snapshotName: r.snapshot_name,
  diskId: r.disk_id,
  snapshotStatus: r.snapshot_status,
  createdAt: r.created_at,
  updatedAt: r.updated_at,
});

/** Record (or replace) the volume's snapshot: idempotent, one per volume. */
export async function trackSnapshot(
  db: Pool | PoolConnection,
  s: Pick<SnapshotRecord, 'volumeId' | 'vmContextId' | 'snapshotId'> &
    Partial<Pick<SnapshotRecord, 'snapshotName' | 'diskId' | 'snapshotStatus'>>,
): Promise<SnapshotRecord> {
  await db.query(
    `INSERT INTO volume_snapshots (volume_id, vm_context_id, snapshot_id, snapshot_name, disk_id, snapshot_status)
     VALUES (?, ?, ?, ?, ?, ?)
     ON DUPLICATE KEY UPDATE vm_context_id = VALUES(vm_context_id), snapshot_id = VALUES(snapshot_id),
       snapshot_name = VALUES(snapshot_name), disk_id = VALUES(disk_id), snapshot_status = VALUES(snapshot_status)`,
    [
      s.volumeId,
      s.vmContextId,
      s.snapshotId,
      s.snapshotName ?? null,
      s.diskId ?? null,
      s.snapshotStatus ?? 'ready',
    ],
  );
  return (await getSnapshot(db, s.volumeId))!;
}

export async function getSnapshot(
  db: Pool | PoolConnection,
  volumeId: string,
): Promise<SnapshotRecord | undefined> {
  const [rows] = await db.query<Row[]>('SELECT * FROM volume_snapshots WHERE volume_id = ?', [volumeId]);
  return rows[0] ? fromRow(rows[0]) : undefined;
}

export async function listSnapshotsForContext(
  db: Pool | PoolConnection,
  vmContextId: string,
): Promise<SnapshotRecord[]> {
  const [rows] = await db.query<Row[]>(
    'SELECT * FROM volume_snapshots WHERE vm_context_id = ? ORDER BY created_at, volume_id',
    [vmContextId],
  );
  return rows.map(fromRow);
}

/** Update a tracked snapshot's id or status; undefined when the volume has none. */
export async function updateSnapshot(
  db: Pool | PoolConnection,
  volumeId: string,
  patch: { snapshotId?: string; snapshotStatus?: string },
): Promise<SnapshotRecord | undefined> {
  await db.query(
    `UPDATE volume_snapshots SET snapshot_id = COALESCE(?, snapshot_id),
       snapshot_status = COALESCE(?, snapshot_status) WHERE volume_id = ?`,
    [patch.snapshotId ?? null, patch.snapshotStatus ?? null, volumeId],
  );
  return getSnapshot(db, volumeId);
}

/** Forget every snapshot of a VM context; returns how many. */
export async function removeSnapshotsForContext(
  db: Pool | PoolConnection,
  vmContextId: string,
): Promise<number> {
  const [r] = await db.query<ResultSetHeader>('DELETE FROM volume_snapshots WHERE vm_context_id = ?', [
    vmContextId,
  ]);
  return r.affectedRows;
}

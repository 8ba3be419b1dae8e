import type { Pool, PoolConnection, ResultSetHeader, RowDataPacket } from 'mysql2/promise';
import type { DeviceMapping, DmState, VolumeLocation } from '../domain/mapping.js';
import { alternativeName, baseName, mapperPathFor, type PersistentName } from '../domain/naming.js';

interface MappingRow extends RowDataPacket {
  volume_id: string;
  source_vm_name: string;
  disk_index: number;
  appliance_vm_id: string;
  location: VolumeLocation;
  target_vm_id: string | null;
  device_path: string | null;
  virtio_serial: string;
  size_bytes: number | string;
  persistent_device_name: string | null;
  mapper_path: string | null;
  dm_state: DmState;
  last_operation_id: string | null;
  version: number;
  created_at: Date;
  updated_at: Date;
}

/** A mapping as stored, JSON-safe (it travels through Temporal as activity input/output). */
export interface MappingRecord {
  volumeId: string;
  sourceVmName: string;
  diskIndex: number;
  applianceVmId: string;
  location: VolumeLocation;
  targetVmId: string | null;
  devicePath: string | null;
  virtioSerial: string;
  sizeBytes: number;
  persistentName: string | null;
  mapperPath: string | null;
  dmState: DmState;
  lastOperationId: string | null;
  version: number;
}

function fromRow(r: MappingRow): MappingRecord {
  return {
    volumeId: r.volume_id,
    sourceVmName: r.source_vm_name,
    diskIndex: Number(r.disk_index),
    applianceVmId: r.appliance_vm_id,
    location: r.location,
    targetVmId: r.target_vm_id,
    devicePath: r.device_path,
    virtioSerial: r.virtio_serial,
    sizeBytes: Number(r.size_bytes),
    persistentName: r.persistent_device_name,
    mapperPath: r.mapper_path,
    dmState: r.dm_state,
    lastOperationId: r.last_operation_id,
    version: Number(r.version),
  };
}

export function toDeviceMapping(
  r: MappingRecord,
  createdAt = new Date(),
  updatedAt = new Date(),
): DeviceMapping {
  if (!r.persistentName) throw new Error(`volume ${r.volumeId} has no persistent name yet`);
  return { ...r, persistentName: r.persistentName, mapperPath: r.mapperPath ?? '', createdAt, updatedAt };
}

/** Thrown when a compare-and-swap finds the row changed by someone else. */
export class StaleMappingError extends Error {
  constructor(volumeId: string, expected: number) {
    super(`device mapping of volume ${volumeId} changed since version ${expected} (concurrent writer)`);
    this.name = 'StaleMappingError';
  }
}

/** The (VM, disk) pair already belongs to another volume: a caller mistake, never retried. */
export class DiskAlreadyMappedError extends Error {
  constructor(sourceVmName: string, diskIndex: number, otherVolumeId: string) {
    super(`VM "${sourceVmName}" disk ${diskIndex} is already mapped to volume ${otherVolumeId}`);
    this.name = 'DiskAlreadyMappedError';
  }
}

export async function getMapping(
  db: Pool | PoolConnection,
  volumeId: string,
): Promise<MappingRecord | undefined> {
  const [rows] = await db.query<MappingRow[]>('SELECT * FROM device_mappings WHERE volume_id = ?', [
    volumeId,
  ]);
  return rows[0] ? fromRow(rows[0]) : undefined;
}

export async function listMappings(
  db: Pool,
  filter: { applianceVmId?: string; devicePath?: string; targetVmId?: string } = {},
): Promise<MappingRecord[]> {
  const where: string[] = [];
  const args: string[] = [];
  if (filter.applianceVmId) {
    where.push('appliance_vm_id = ?');
    args.push(filter.applianceVmId);
  }
  if (filter.devicePath) {
    where.push('device_path = ?');
    args.push(filter.devicePath);
  }
  if (filter.targetVmId) {
    where.push('target_vm_id = ?');
    args.push(filter.targetVmId);
  }
  const [rows] = await db.query<MappingRow[]>(
    `SELECT * FROM device_mappings ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ORDER BY id`,
    args,
  );
  return rows.map(fromRow);
}

const MAX_ALTERNATIVES = 8;

export interface AssignNameInput {
  volumeId: string;
  sourceVmName: string;
  diskIndex: number;
  applianceVmId: string;
  virtioSerial: string;
  sizeBytes: number;
  operationId: string;
}

/**
 * Assign the volume its persistent name, once, inside a transaction: an existing row keeps its
 * name forever; otherwise take the base name (`pgtest3disk0`) or, when another (VM, disk) pair
 * holds it, the first free hashed alternative. Two concurrent attaches racing for one name are
 * settled by the UNIQUE index: the loser rolls back, retries and takes the next candidate.
 */
export async function assignName(
  pool: Pool,
  input: AssignNameInput,
): Promise<{ mapping: MappingRecord; created: boolean }> {
  const ATTEMPTS = 30;
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    if (attempt > 0) await new Promise((r) => setTimeout(r, Math.random() * 10 * Math.min(attempt, 10)));
    const conn = await pool.getConnection();
    try {
      // READ COMMITTED: no gap locks, so racing inserts do not deadlock; the UNIQUE indexes
      // on volume_id and persistent_device_name decide who wins, and the loser retries.
      await conn.query('SET TRANSACTION ISOLATION LEVEL READ COMMITTED');
      await conn.beginTransaction();
      const existing = await conn.query<MappingRow[]>(
        'SELECT * FROM device_mappings WHERE volume_id = ? FOR UPDATE',
        [input.volumeId],
      );
      const row = existing[0][0];
      if (row && row.persistent_device_name) {
        await conn.commit();
        return { mapping: fromRow(row), created: false };
      }
      const [sameDisk] = await conn.query<MappingRow[]>(
        'SELECT volume_id FROM device_mappings WHERE source_vm_name = ? AND disk_index = ? AND volume_id <> ?',
        [input.sourceVmName, input.diskIndex, input.volumeId],
      );
      if (sameDisk[0])
        throw new DiskAlreadyMappedError(input.sourceVmName, input.diskIndex, sameDisk[0].volume_id);

      const candidates: PersistentName[] = [baseName(input.sourceVmName, input.diskIndex)];
      for (let k = 1; k <= MAX_ALTERNATIVES; k++)
        candidates.push(alternativeName(input.sourceVmName, input.diskIndex, k));
      const [taken] = await conn.query<RowDataPacket[]>(
        'SELECT persistent_device_name FROM device_mappings WHERE persistent_device_name IN (?)',
        [candidates],
      );
      const takenSet = new Set(taken.map((t) => String(t.persistent_device_name)));
      const name = candidates.find((c) => !takenSet.has(c));
      if (!name)
        throw new Error(`no free persistent name for VM "${input.sourceVmName}" disk ${input.diskIndex}`);

      if (row) {
        // A row adopted from the old daemon, without a name yet: name it in place.
        await conn.query(
          `UPDATE device_mappings SET persistent_device_name = ?, mapper_path = ?, version = version + 1,
             last_operation_id = ? WHERE volume_id = ?`,
          [name, mapperPathFor(name), input.operationId, input.volumeId],
        );
      } else {
        await conn.query(
          `INSERT INTO device_mappings (volume_id, source_vm_name, disk_index, appliance_vm_id, location,
             virtio_serial, size_bytes, persistent_device_name, mapper_path, dm_state, last_operation_id,
             created_by_operation_id)
           VALUES (?, ?, ?, ?, 'detached', ?, ?, ?, ?, 'absent', ?, ?)`,
          [
            input.volumeId,
            input.sourceVmName,
            input.diskIndex,
            input.applianceVmId,
            input.virtioSerial,
            input.sizeBytes,
            name,
            mapperPathFor(name),
            input.operationId,
            input.operationId,
          ],
        );
      }
      const mapping = await getMapping(conn, input.volumeId);
      await conn.commit();
      return { mapping: mapping!, created: true };
    } catch (err) {
      await conn.rollback().catch(() => {});
      const code = (err as { code?: string }).code;
      if (code === 'ER_DUP_ENTRY' || code === 'ER_LOCK_DEADLOCK' || code === 'ER_LOCK_WAIT_TIMEOUT') continue;
      throw err;
    } finally {
      conn.release();
    }
  }
  throw new Error(
    `could not assign a persistent name to volume ${input.volumeId} after ${ATTEMPTS} attempts (contention)`,
  );
}

/**
 * Compensation of assignName: delete the row only if this operation created it and it is back in
 * its initial state (detached, no dm device, no export). Anything else is left alone.
 */
export async function releaseName(pool: Pool, volumeId: string, operationId: string): Promise<boolean> {
  const [r] = await pool.query<ResultSetHeader>(
    `DELETE m FROM device_mappings m LEFT JOIN nbd_exports e ON e.volume_id = m.volume_id
     WHERE m.volume_id = ? AND m.created_by_operation_id = ? AND m.location = 'detached'
       AND m.dm_state = 'absent' AND e.id IS NULL`,
    [volumeId, operationId],
  );
  return r.affectedRows > 0;
}

export interface MappingPatch {
  location?: VolumeLocation;
  targetVmId?: string | null;
  devicePath?: string | null;
  dmState?: DmState;
  sizeBytes?: number;
}

/** Update with compare-and-swap on `version`; returns the new record. */
export async function updateMapping(
  pool: Pool,
  volumeId: string,
  expectedVersion: number,
  patch: MappingPatch,
  operationId: string,
): Promise<MappingRecord> {
  const sets: string[] = [];
  const args: unknown[] = [];
  const col: Record<keyof MappingPatch, string> = {
    location: 'location',
    targetVmId: 'target_vm_id',
    devicePath: 'device_path',
    dmState: 'dm_state',
    sizeBytes: 'size_bytes',
  };
  for (const [k, v] of Object.entries(patch) as [keyof MappingPatch, unknown][]) {
    if (v === undefined) continue;
    sets.push(`${col[k]} = ?`);
    args.push(v);
  }
  const [r] = await pool.query<ResultSetHeader>(
    `UPDATE device_mappings SET ${[...sets, 'version = version + 1', 'last_operation_id = ?'].join(', ')}
     WHERE volume_id = ? AND version = ?`,
    [...args, operationId, volumeId, expectedVersion],
  );
  if (r.affectedRows === 0) throw new StaleMappingError(volumeId, expectedVersion);
  return (await getMapping(pool, volumeId))!;
}

/** Remove the mapping row (the audit trail stays). Missing → success. */
export async function deleteMapping(pool: Pool, volumeId: string): Promise<boolean> {
  const [r] = await pool.query<ResultSetHeader>('DELETE FROM device_mappings WHERE volume_id = ?', [
    volumeId,
  ]);
  return r.affectedRows > 0;
}

/** Forget a device path that another volume's row still claims (the kernel reused /dev/vdX). */
export async function clearStaleDevicePath(
  pool: Pool,
  devicePath: string,
  exceptVolumeId: string,
): Promise<string[]> {
  const [rows] = await pool.query<MappingRow[]>(
    'SELECT * FROM device_mappings WHERE device_path = ? AND volume_id <> ?',
    [devicePath, exceptVolumeId],
  );
  for (const r of rows) {
    await pool.query(
      'UPDATE device_mappings SET device_path = NULL, version = version + 1 WHERE volume_id = ?',
      [r.volume_id],
    );
  }
  return rows.map((r) => r.volume_id);
}

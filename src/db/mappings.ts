import type { Pool, PoolConnection, ResultSetHeader, RowDataPacket } from 'mysql2/promise';
import { exportFromRow, type ExportRecord } from './exports.js';
import type { DmState, VolumeLocation } from '../domain/mapping.js';
import {
  describeDisk,
  mapperPathFor,
  namingFromEngineVolumeName,
  persistentNameFor,
} from '../domain/naming.js';
import type { FailureType } from '../domain/failures.js';
import type { RowFollower } from './follow.js';
import { recordCompleted, type StepAudit } from './operations.js';

interface MappingRow extends RowDataPacket {
  volume_id: string;
  source_vm_name: string;
  disk_index: number;
  appliance_vm_id: string;
  location: VolumeLocation;
  target_vm_id: string | null;
  cloudstack_device_id: number | null;
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
  /** CloudStack's device id of the current attachment (0: root disk); null when detached or unknown. */
  cloudstackDeviceId: number | null;
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
    cloudstackDeviceId: r.cloudstack_device_id === null ? null : Number(r.cloudstack_device_id),
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

/** Thrown when a compare-and-swap finds the row changed by someone else. */
export class StaleMappingError extends Error {
  constructor(volumeId: string, expected: number) {
    super(`device mapping of volume ${volumeId} changed since version ${expected} (concurrent writer)`);
    this.name = 'StaleMappingError';
  }
}

/** The (VM, disk) pair already belongs to another volume: a caller mistake, never retried. */
export class DiskAlreadyMappedError extends Error {
  /** Its failure type (src/domain/failures.ts). */
  override name: FailureType;
  readonly retryable = false;
  constructor(sourceVmName: string, diskIndex: number, otherVolumeId: string) {
    super(
      `VM "${sourceVmName}" ${describeDisk(diskIndex)} is already mapped to volume ${otherVolumeId}: ` +
        `one VM disk is one volume (delete or detach that volume, or check the disk key)`,
    );
    this.name = 'DiskAlreadyMapped';
  }
}

/**
 * Two different VM names whose names come out equal: an 80-bit tag collision, or a name an older
 * system (the old daemon, an import) assigned by another rule. Permanent: retrying cannot help,
 * and no alternative is ever invented (it would depend on arrival order).
 */
export class NameCollisionError extends Error {
  /** Its failure type (src/domain/failures.ts). */
  override name: FailureType;
  readonly retryable = false;
  constructor(
    name: string,
    mine: { sourceVmName: string; diskIndex: number },
    holder: { volumeId: string; sourceVmName: string; diskIndex: number },
  ) {
    super(
      `persistent name "${name}" of VM "${mine.sourceVmName}" ${describeDisk(mine.diskIndex)} is already held by ` +
        `volume ${holder.volumeId} (VM "${holder.sourceVmName}" ${describeDisk(holder.diskIndex)}): two VM names ` +
        `give one persistent name; rename one of the VMs, or remove the other volume's mapping first`,
    );
    this.name = 'NameCollision';
  }
}

/** A re-attach that names the volume differently from its row: refused, naming both. */
export class MappingMismatchError extends Error {
  /** Its failure type (src/domain/failures.ts). */
  override name: FailureType;
  readonly retryable = false;
  constructor(
    volumeId: string,
    row: { sourceVmName: string; diskIndex: number; persistentName: string | null },
    asked: { sourceVmName: string; diskIndex: number },
  ) {
    super(
      `volume ${volumeId} is mapped as VM "${row.sourceVmName}" ${describeDisk(row.diskIndex)}` +
        `${row.persistentName ? ` (name ${row.persistentName})` : ''}, but this request says VM "${asked.sourceVmName}" ` +
        `${describeDisk(asked.diskIndex)}: a volume's name never changes; send the recorded VM name and key, or none`,
    );
    this.name = 'MappingMismatch';
  }
}

/** Nothing says which VM disk a new volume is: refused rather than invent a name. */
export class NameUnknownError extends Error {
  /** Its failure type (src/domain/failures.ts). */
  override name: FailureType;
  readonly retryable = false;
  constructor(volumeId: string, volumeName: string | undefined) {
    super(
      `volume ${volumeId} has no persistent name yet and nothing says which VM disk it is: send the VM name and ` +
        `disk key with the attach (vm_name and disk_id "disk-2000"), or create it through us with metadata ` +
        `source_vm_name and disk_unit_number` +
        (volumeName !== undefined
          ? `; its CloudStack name "${volumeName}" is not of the form migration-<vm>-<vm>-disk-<unit>`
          : ''),
    );
    this.name = 'NameUnknown';
  }
}

export async function getMapping(
  db: Pool | PoolConnection,
  volumeId: string,
  /** Inside a transaction: lock the row (FOR UPDATE). */
  lock = false,
): Promise<MappingRecord | undefined> {
  const [rows] = await db.query<MappingRow[]>(
    `SELECT * FROM device_mappings WHERE volume_id = ?${lock ? ' FOR UPDATE' : ''}`,
    [volumeId],
  );
  return rows[0] ? fromRow(rows[0]) : undefined;
}

/**
 * A volume's mapping and export rows in one read (an export row always has its mapping row);
 * `lock`: FOR UPDATE, both rows.
 */
export async function readVolumeRows(
  db: Pool | PoolConnection,
  volumeId: string,
  lock = false,
): Promise<{ mapping: MappingRecord | undefined; exported: ExportRecord | undefined }> {
  const [rows] = await db.query<RowDataPacket[]>({
    sql: `SELECT * FROM device_mappings m LEFT JOIN nbd_exports e ON e.volume_id = m.volume_id
           WHERE m.volume_id = ?${lock ? ' FOR UPDATE' : ''}`,
    values: [volumeId],
    nestTables: true,
  });
  const r = rows[0] as { m: MappingRow; e: RowDataPacket & { id: unknown } } | undefined;
  return {
    mapping: r ? fromRow(r.m) : undefined,
    exported: r && r.e.id !== null ? exportFromRow(r.e) : undefined,
  };
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

export interface AssignNameInput {
  volumeId: string;
  /** Normalized VM name and disk index; both absent to keep the row's, or derive from volumeName. */
  sourceVmName?: string;
  diskIndex?: number;
  /** The volume's CloudStack name (the engine's `migration-<vm>-<vm>-disk-<unit>`). */
  volumeName?: string;
  applianceVmId: string;
  virtioSerial: string;
  sizeBytes: number;
  operationId: string;
}

/**
 * Assign the volume its persistent name, once, inside a transaction. The name is
 * `persistentNameFor(VM name, disk index)` — nothing here depends on what else is in the table —
 * and the UNIQUE indexes only *detect* what must be refused: the same VM disk on another volume,
 * or another VM name holding the same name. An existing row keeps its name forever (names the old
 * daemon or an import assigned included); a request that names it differently is refused.
 */
export async function assignName(
  pool: Pool,
  input: AssignNameInput,
  /** The step's audit row, recorded completed in this transaction (see writeRecordingStep). */
  audit?: StepAudit,
  /** Rows that follow ours (the engine's view), written in this transaction too. */
  follower?: RowFollower,
): Promise<{ mapping: MappingRecord; created: boolean }> {
  // A lost race (duplicate key) or a deadlock is retried a few times: the next attempt sees the
  // winner's committed row and ends in its permanent answer.
  const ATTEMPTS = 5;
  for (let attempt = 0; ; attempt++) {
    const conn = await pool.getConnection();
    try {
      // READ COMMITTED: no gap locks, so racing inserts do not deadlock.
      await conn.query('SET TRANSACTION ISOLATION LEVEL READ COMMITTED');
      await conn.beginTransaction();
      const write = () => assignInTransaction(conn, input, audit);
      const result = follower ? await follower.around(conn, [input.volumeId], write) : await write();
      await conn.commit();
      return result;
    } catch (err) {
      await conn.rollback().catch(() => {});
      const code = (err as { code?: string }).code;
      const racing =
        code === 'ER_DUP_ENTRY' || code === 'ER_LOCK_DEADLOCK' || code === 'ER_LOCK_WAIT_TIMEOUT';
      if (racing && attempt + 1 < ATTEMPTS) continue;
      throw err;
    } finally {
      conn.release();
    }
  }
}

/** assignName's reads and writes, inside its transaction on `conn`. */
async function assignInTransaction(
  conn: PoolConnection,
  input: AssignNameInput,
  audit: StepAudit | undefined,
): Promise<{ mapping: MappingRecord; created: boolean }> {
  const existing = await conn.query<MappingRow[]>(
    'SELECT * FROM device_mappings WHERE volume_id = ? FOR UPDATE',
    [input.volumeId],
  );
  const row = existing[0][0] ? fromRow(existing[0][0]) : undefined;
  const asked =
    input.sourceVmName !== undefined && input.diskIndex !== undefined
      ? { sourceVmName: input.sourceVmName, diskIndex: input.diskIndex }
      : undefined;
  if (row && asked && (row.sourceVmName !== asked.sourceVmName || row.diskIndex !== asked.diskIndex))
    throw new MappingMismatchError(input.volumeId, row, asked);
  if (row?.persistentName) {
    if (audit) await recordCompleted(conn, audit);
    return { mapping: row, created: false };
  }
  const naming =
    asked ??
    (row ? { sourceVmName: row.sourceVmName, diskIndex: row.diskIndex } : undefined) ??
    (input.volumeName !== undefined ? namingFromEngineVolumeName(input.volumeName) : undefined);
  if (!naming) throw new NameUnknownError(input.volumeId, input.volumeName);

  const name = await refuseTaken(conn, naming, input.volumeId);
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
        naming.sourceVmName,
        naming.diskIndex,
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
  if (audit) await recordCompleted(conn, audit);
  return { mapping: mapping!, created: true };
}

/**
 * The name of (VM, disk), or the refusal that assigning it would meet: the disk is another
 * volume's, or another VM name holds the name. Read-only; `assignName` runs it inside its
 * transaction, and create runs it before anything is created.
 */
export async function refuseTaken(
  db: Pool | PoolConnection,
  naming: { sourceVmName: string; diskIndex: number },
  volumeId?: string,
): Promise<string> {
  const [sameDisk] = await db.query<MappingRow[]>(
    'SELECT volume_id FROM device_mappings WHERE source_vm_name = ? AND disk_index = ? AND volume_id <> ?',
    [naming.sourceVmName, naming.diskIndex, volumeId ?? ''],
  );
  if (sameDisk[0])
    throw new DiskAlreadyMappedError(naming.sourceVmName, naming.diskIndex, sameDisk[0].volume_id);
  const name = persistentNameFor(naming.sourceVmName, naming.diskIndex);
  const [holder] = await db.query<MappingRow[]>(
    'SELECT * FROM device_mappings WHERE persistent_device_name = ? AND volume_id <> ?',
    [name, volumeId ?? ''],
  );
  if (holder[0]) {
    const other = fromRow(holder[0]);
    // Committed between the two reads by a racing attach of the same disk: that is this disk.
    if (other.sourceVmName === naming.sourceVmName && other.diskIndex === naming.diskIndex)
      throw new DiskAlreadyMappedError(naming.sourceVmName, naming.diskIndex, other.volumeId);
    throw new NameCollisionError(name, naming, other);
  }
  return name;
}

/**
 * Compensation of assignName: delete the row only if this operation created it and it is back in
 * its initial state (detached, no dm device, no export). Anything else is left alone.
 */
export async function releaseName(
  db: Pool | PoolConnection,
  volumeId: string,
  operationId: string,
): Promise<boolean> {
  const [r] = await db.query<ResultSetHeader>(
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
  cloudstackDeviceId?: number | null;
  devicePath?: string | null;
  dmState?: DmState;
  sizeBytes?: number;
}

/** Update with compare-and-swap on `version`; returns the new record. */
export async function updateMapping(
  db: Pool | PoolConnection,
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
    cloudstackDeviceId: 'cloudstack_device_id',
    devicePath: 'device_path',
    dmState: 'dm_state',
    sizeBytes: 'size_bytes',
  };
  for (const [k, v] of Object.entries(patch) as [keyof MappingPatch, unknown][]) {
    if (v === undefined) continue;
    sets.push(`${col[k]} = ?`);
    args.push(v);
  }
  const [r] = await db.query<ResultSetHeader>(
    `UPDATE device_mappings SET ${[...sets, 'version = version + 1', 'last_operation_id = ?'].join(', ')}
     WHERE volume_id = ? AND version = ?`,
    [...args, operationId, volumeId, expectedVersion],
  );
  if (r.affectedRows === 0) throw new StaleMappingError(volumeId, expectedVersion);
  return (await getMapping(db, volumeId))!;
}

/** Remove the mapping row (the audit trail stays). Missing → success. */
export async function deleteMapping(db: Pool | PoolConnection, volumeId: string): Promise<boolean> {
  const [r] = await db.query<ResultSetHeader>('DELETE FROM device_mappings WHERE volume_id = ?', [volumeId]);
  return r.affectedRows > 0;
}

/** Forget a device path that another volume's row still claims (the kernel reused /dev/vdX). */
export async function clearStaleDevicePath(
  db: Pool | PoolConnection,
  devicePath: string,
  exceptVolumeId: string,
): Promise<string[]> {
  const [rows] = await db.query<MappingRow[]>(
    'SELECT * FROM device_mappings WHERE device_path = ? AND volume_id <> ?',
    [devicePath, exceptVolumeId],
  );
  for (const r of rows) {
    await db.query(
      'UPDATE device_mappings SET device_path = NULL, version = version + 1 WHERE volume_id = ?',
      [r.volume_id],
    );
  }
  return rows.map((r) => r.volume_id);
}

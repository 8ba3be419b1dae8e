import { randomBytes, randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Pool, ResultSetHeader, RowDataPacket } from 'mysql2/promise';
import { loadConfig } from '../../src/config/index.js';
import { createPool, dropDatabase, ensureDatabase } from '../../src/db/pool.js';
import { EXPORT_PREFIX } from '../../src/domain/device-names.js';
import { EngineRows } from '../../src/engine-contract/engine-rows.js';

/**
 * A stand-in of the migration engine's database, for tests and the demo: its production schema's
 * shape for the tables the daemon's rows reach (schema.sql, with its foreign keys), optionally
 * with the triggers an old daemon migration left on `device_mappings`, and the engine's own
 * queries and writes, done the way its code does them (file and line in docs/engine-contract.md).
 */
export interface EngineDb {
  name: string;
  pool: Pool;
  rows: EngineRows;
  close(): Promise<void>;
}

/** The old daemon's triggers (in our words): a mapping row deleted or moved takes its export rows along. */
const OLD_TRIGGERS = [
  `CREATE TRIGGER cleanup_nbd_exports_on_device_delete AFTER DELETE ON device_mappings FOR EACH ROW
     DELETE FROM nbd_exports WHERE volume_id = OLD.volume_uuid`,
  `CREATE TRIGGER sync_nbd_export_paths_on_device_update AFTER UPDATE ON device_mappings FOR EACH ROW
     BEGIN
       IF OLD.device_path != NEW.device_path THEN
         UPDATE nbd_exports SET device_path = NEW.device_path, updated_at = NOW() WHERE volume_id = NEW.volume_uuid;
       END IF;
     END`,
];

export async function createEngineDatabase(
  name: string,
  opts: { nbdPort?: number; oldTriggers?: boolean } = {},
): Promise<EngineDb> {
  const cfg = { ...loadConfig(), DB_NAME: name, DB_POOL_SIZE: 5 };
  await ensureDatabase(cfg);
  const pool = createPool(cfg, { multipleStatements: true });
  await pool.query(await readFile(path.join(import.meta.dirname, 'schema.sql'), 'utf8'));
  if (opts.oldTriggers) for (const t of OLD_TRIGGERS) await pool.query(t);
  return {
    name,
    pool,
    rows: new EngineRows({ database: name, nbdPort: opts.nbdPort ?? 10809 }),
    close: async () => {
      await pool.end();
      await dropDatabase(cfg);
    },
  };
}

/** One VMware VM the engine migrates: its context, job and disks (keys such as 2000 and 2016). */
export interface EngineVm {
  contextId: string;
  jobId: string;
  name: string;
  /** vm_disks ids by VMware disk key. */
  diskIds: Map<number, number>;
}

export async function seedVm(db: Pool, name: string, diskKeys: number[]): Promise<EngineVm> {
  const contextId = randomUUID();
  const jobId = `job-${randomBytes(4).toString('hex')}`;
  await db.query(
    `INSERT INTO vm_replication_contexts (context_id, vm_name, vmware_vm_id, vm_path, vcenter_host, datacenter)
     VALUES (?, ?, ?, ?, 'vcenter.test', 'dc1')`,
    [contextId, name, randomUUID(), `/dc1/vm/${name}`],
  );
  await db.query(
    `INSERT INTO replication_jobs (id, vm_context_id, source_vm_id, source_vm_name, source_vm_path, v_center_host,
       datacenter, replication_type, created_at) VALUES (?, ?, ?, ?, ?, 'vcenter.test', 'dc1', 'initial', NOW(3))`,
    [jobId, contextId, randomUUID(), name, `/dc1/vm/${name}`],
  );
  const diskIds = new Map<number, number>();
  for (const [unit, key] of diskKeys.entries()) {
    // The engine numbers units by the disk's place in the VM's list (migration.go), keys as VMware has them.
    const [r] = await db.query<ResultSetHeader>(
      `INSERT INTO vm_disks (vm_context_id, job_id, disk_id, vm_dk_path, size_gb, unit_number, created_at)
       VALUES (?, ?, ?, ?, 1, ?, NOW(3))`,
      [contextId, jobId, `disk-${key}`, `[ds1] ${name}/${name}_${unit}.vmdk`, unit],
    );
    diskIds.set(key, r.insertId);
  }
  return { contextId, jobId, name, diskIds };
}

/** The engine, after a create: its `ossea_volumes` row for the new volume, tied to the VM disk. */
export async function recordCreatedVolume(
  db: Pool,
  vm: EngineVm,
  key: number,
  volumeId: string,
  volumeName: string,
) {
  const [r] = await db.query<ResultSetHeader>(
    `INSERT INTO ossea_volumes (vm_context_id, volume_id, volume_name, size_gb, status, created_at)
     VALUES (?, ?, ?, 1, 'creating', NOW(3))`,
    [vm.contextId, volumeId, volumeName],
  );
  await db.query('UPDATE vm_disks SET ossea_volume_id = ? WHERE id = ?', [r.insertId, vm.diskIds.get(key)]);
}

/** The engine's own reads and writes of the daemon's rows, as its code makes them. */
export const engine = {
  /** unified_failover_engine.go:402, failover/helpers.go:159 ("unknown" when missing). */
  async devicePath(db: Pool, volumeId: string): Promise<string> {
    const [r] = await db.query<RowDataPacket[]>(
      'SELECT device_path FROM device_mappings WHERE volume_uuid = ? LIMIT 1',
      [volumeId],
    );
    return r[0] ? String(r[0].device_path) : 'unknown';
  },
  /** unified_failover_engine.go:960, enhanced_cleanup_service.go:152,295. */
  async setOperationMode(db: Pool, contextId: string, mode: 'oma' | 'failover'): Promise<number> {
    const [r] = await db.query<ResultSetHeader>(
      'UPDATE device_mappings SET operation_mode = ? WHERE vm_context_id = ?',
      [mode, contextId],
    );
    return r.affectedRows;
  },
  /** multi_volume_snapshot_service.go:469: the volumes to snapshot and revert. */
  async snapshots(db: Pool, contextId: string) {
    const [r] = await db.query<RowDataPacket[]>(
      `SELECT ov.volume_id, ov.snapshot_id, COALESCE(dm.device_path, 'unknown') AS device_path,
              COALESCE(dm.operation_mode, 'oma') AS operation_mode
         FROM ossea_volumes ov LEFT JOIN device_mappings dm ON ov.volume_id = dm.volume_uuid
        WHERE ov.vm_context_id = ? AND ov.snapshot_id IS NOT NULL AND ov.snapshot_id != ''`,
      [contextId],
    );
    return r.map((x) => ({ ...x })) as { volume_id: string; device_path: string; operation_mode: string }[];
  },
  /** migration.go:1239-1247: after an attach, the device path the daemon answered, "attached". */
  async recordAttached(db: Pool, volumeId: string, devicePath: string) {
    await db.query(
      "UPDATE ossea_volumes SET device_path = ?, status = 'attached', updated_at = NOW(3) WHERE volume_id = ?",
      [devicePath, volumeId],
    );
  },
  /** The snapshot the engine takes before a test failover, on its own row (multi_volume_snapshot_service.go). */
  async recordSnapshot(db: Pool, volumeId: string, snapshotId: string) {
    await db.query(
      "UPDATE ossea_volumes SET snapshot_id = ?, snapshot_status = 'ready' WHERE volume_id = ?",
      [snapshotId, volumeId],
    );
  },
  /**
   * migration.go:1340-1405: each export's volume id is its name without `migration-vol-`; the
   * VM disk of that volume (vm_disks ⋈ ossea_volumes) goes into the export row.
   */
  async correlateExports(db: Pool, contextId: string, exportNames: string[]): Promise<number> {
    const [disks] = await db.query<RowDataPacket[]>(
      `SELECT vd.id, ov.volume_id FROM vm_disks vd JOIN ossea_volumes ov ON vd.ossea_volume_id = ov.id
        WHERE vd.vm_context_id = ?`,
      [contextId],
    );
    const byVolume = new Map(disks.map((d) => [String(d.volume_id), Number(d.id)]));
    let updated = 0;
    for (const name of exportNames) {
      const volumeId = name.startsWith(EXPORT_PREFIX) ? name.slice(EXPORT_PREFIX.length) : name;
      const diskId = byVolume.get(volumeId);
      if (diskId === undefined) continue;
      const [r] = await db.query<ResultSetHeader>(
        'UPDATE nbd_exports SET vm_disk_id = ? WHERE export_name = ? AND volume_id = ?',
        [diskId, name, volumeId],
      );
      updated += r.affectedRows;
    }
    return updated;
  },
  /**
   * migration.go:1010-1020 and 1441-1466: the VMware disk key replication writes each export to
   * — from the export's name, else the export's place in the list ("200<i>").
   */
  async diskKeys(db: Pool, exportNames: string[]): Promise<string[]> {
    const out: string[] = [];
    for (const [i, name] of exportNames.entries()) out.push((await engine.diskKeyOf(db, name)) ?? `200${i}`);
    return out;
  },
  /** The lookup alone (migration.go:1441-1466): the key of the export's volume, if it has one. */
  async diskKeyOf(db: Pool, exportName: string): Promise<string | undefined> {
    const volumeId = exportName.startsWith(EXPORT_PREFIX)
      ? exportName.slice(EXPORT_PREFIX.length)
      : exportName;
    const [r] = await db.query<RowDataPacket[]>(
      `SELECT vm_disks.disk_id FROM vm_disks JOIN ossea_volumes ON vm_disks.ossea_volume_id = ossea_volumes.id
        WHERE ossea_volumes.volume_id = ? LIMIT 1`,
      [volumeId],
    );
    return r[0] ? String(r[0].disk_id).replace(/^disk-/, '') : undefined;
  },
  /** migration.go:1493: exports of a context still without their VM disk. */
  async uncorrelated(db: Pool, contextId: string): Promise<string[]> {
    const [r] = await db.query<RowDataPacket[]>(
      'SELECT export_name FROM nbd_exports WHERE vm_context_id = ? AND vm_disk_id IS NULL',
      [contextId],
    );
    return r.map((x) => String(x.export_name));
  },
};

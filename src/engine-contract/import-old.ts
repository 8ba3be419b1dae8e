import type { Pool, PoolConnection, RowDataPacket } from 'mysql2/promise';
import { inTransaction, type RowFollower } from '../db/follow.js';
import { diskSerialFor } from '../cloudstack/serial.js';
import { persistentNameSchema, mapperPathFor, namingFromEngineVolumeName } from '../domain/naming.js';
import { uuid } from '../domain/ids.js';
import { getMapping } from '../db/mappings.js';

/**
 * Import of the old volume daemon's database (MariaDB `migratekit_oma`, shared with the engine):
 * its `device_mappings` (one row per current attachment), `nbd_exports` and the engine's
 * `ossea_volumes` (which carry the volume names). Each old mapping becomes a row of ours in the
 * state reconciliation adopts: named (the old persistent name kept as it was, else none yet),
 * placed where the old row says it is, with no dm device and no export recorded — the reconcile
 * pass then maps and exports it through the one repair path. Without `engine`, read-only on the
 * old database; with it (the old database is the engine's, ENGINE_DB_NAME), each adopted named
 * row's engine rows are brought to what every saga keeps them as (engine-rows.ts), so the switch
 * leaves one truth: what the engine wrote itself stays.
 */

export interface OldMappingRow {
  volume_uuid: string;
  vm_id: string | null;
  operation_mode: string | null;
  cloudstack_device_id: number | null;
  device_path: string | null;
  size: number | string | null;
  persistent_device_name: string | null;
  volume_name: string | null;
  export_name: string | null;
}

export type ImportDecision =
  | {
      volumeId: string;
      action: 'adopt';
      persistentName: string | null;
      sourceVmName: string;
      diskIndex: number;
      location: 'appliance' | 'target';
      targetVmId: string | null;
      sizeBytes: number;
      oldExport: string | null;
    }
  | { volumeId: string; action: 'skip'; why: string };

/** Database names are identifiers we splice into SQL: only a plain name is accepted. */
const DB_NAME = /^[A-Za-z0-9_]{1,64}$/;

/** The old rows, joined to their export and the engine's volume name. */
export async function readOldMappings(db: Pool, oldDatabase: string): Promise<OldMappingRow[]> {
  if (!DB_NAME.test(oldDatabase))
    throw new Error(`--from-db: "${oldDatabase}" is not a database name (letters, digits, _; at most 64)`);
  const [rows] = await db.query<(OldMappingRow & RowDataPacket)[]>(
    `SELECT m.volume_uuid, m.vm_id, m.operation_mode, m.cloudstack_device_id, m.device_path, m.size,
            m.persistent_device_name, v.volume_name, e.export_name
       FROM \`${oldDatabase}\`.device_mappings m
       LEFT JOIN \`${oldDatabase}\`.ossea_volumes v ON v.volume_id = m.volume_uuid
       LEFT JOIN \`${oldDatabase}\`.nbd_exports e ON e.volume_id = m.volume_uuid
      ORDER BY m.volume_uuid`,
  );
  return rows;
}

/** What to do with one old row, and why not when it cannot be adopted. Pure. */
export function decide(row: OldMappingRow, applianceVmIds: ReadonlySet<string>): ImportDecision {
  const volumeId = String(row.volume_uuid ?? '');
  const skip = (why: string): ImportDecision => ({ volumeId, action: 'skip', why });
  if (!uuid.safeParse(volumeId).success) return skip(`volume_uuid "${volumeId}" is not a UUID`);
  const naming = row.volume_name ? namingFromEngineVolumeName(row.volume_name) : undefined;
  if (!naming)
    return skip(
      row.volume_name
        ? `its volume name "${row.volume_name}" is not the engine's migration-<vm>-<vm>-disk-<unit>: no VM name or disk to name it by`
        : 'no ossea_volumes row names it: no VM name or disk to name it by',
    );
  const kept = row.persistent_device_name;
  if (kept && !persistentNameSchema.safeParse(kept).success)
    return skip(`its persistent name "${kept}" is not valid for device-mapper and NBD`);
  const size = Number(row.size);
  if (!Number.isSafeInteger(size) || size <= 0) return skip(`size "${row.size}" is not a size in bytes`);
  const vm = row.vm_id?.toLowerCase() ?? null;
  let location: 'appliance' | 'target';
  if (row.operation_mode === 'failover' || (vm && !applianceVmIds.has(vm))) location = 'target';
  else if (vm && applianceVmIds.has(vm)) location = 'appliance';
  else return skip(`vm_id "${row.vm_id}" is neither a configured appliance nor a VM it was given to`);
  return {
    volumeId: volumeId.toLowerCase(),
    action: 'adopt',
    persistentName: kept || null,
    sourceVmName: naming.sourceVmName,
    diskIndex: naming.diskIndex,
    location,
    targetVmId: location === 'target' ? vm : null,
    sizeBytes: size,
    oldExport: row.export_name,
  };
}

export interface ImportReport {
  dryRun: boolean;
  adopted: ImportDecision[];
  skipped: ImportDecision[];
  /** Already ours (a second run): left alone. */
  present: string[];
}

/**
 * Plan (dry run) or apply the import. Rows are written as reconcile expects an adopted row:
 * dm_state absent, no export row; the appliance they hang on is `applianceVmId` (the one this
 * appliance's reconcile Schedule covers). Idempotent: a row already in our table is left alone.
 */
export async function importOldDatabase(
  db: Pool,
  opts: {
    from: string;
    applianceVmId: string;
    applianceVmIds?: string[];
    apply: boolean;
    /** The engine's rows to keep (ENGINE_DB_NAME); without it the old database is only read. */
    engine?: RowFollower;
  },
): Promise<ImportReport> {
  const appliances = new Set(
    [opts.applianceVmId, ...(opts.applianceVmIds ?? [])].map((s) => s.toLowerCase()),
  );
  const decisions = (await readOldMappings(db, opts.from)).map((r) => decide(r, appliances));
  const report: ImportReport = { dryRun: !opts.apply, adopted: [], skipped: [], present: [] };
  const names = new Map<string, string>();
  for (const d of decisions) {
    if (d.action === 'skip') {
      report.skipped.push(d);
      continue;
    }
    if (await getMapping(db, d.volumeId)) {
      report.present.push(d.volumeId);
      continue;
    }
    if (d.persistentName && names.has(d.persistentName)) {
      report.skipped.push({
        volumeId: d.volumeId,
        action: 'skip',
        why: `its persistent name "${d.persistentName}" is also volume ${names.get(d.persistentName)}'s in the old database`,
      });
      continue;
    }
    if (d.persistentName) names.set(d.persistentName, d.volumeId);
    if (opts.apply) {
      try {
        const insert = (tx: PoolConnection) =>
          tx.query(
            `INSERT INTO device_mappings (volume_id, source_vm_name, disk_index, appliance_vm_id, location,
             target_vm_id, virtio_serial, size_bytes, persistent_device_name, mapper_path, dm_state)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'absent')`,
            [
              d.volumeId,
              d.sourceVmName,
              d.diskIndex,
              opts.applianceVmId,
              d.location,
              d.targetVmId,
              diskSerialFor(d.volumeId),
              d.sizeBytes,
              d.persistentName,
              d.persistentName ? mapperPathFor(d.persistentName) : null,
            ],
          );
        // With the engine's database configured, its rows of the volume take our form in the
        // same transaction (what the engine wrote itself is kept; unnamed rows stay as they are).
        await inTransaction(db, (tx) =>
          opts.engine ? opts.engine.around(tx, [d.volumeId], () => insert(tx)) : insert(tx),
        );
      } catch (err) {
        if ((err as { code?: string }).code !== 'ER_DUP_ENTRY') throw err;
        report.skipped.push({
          volumeId: d.volumeId,
          action: 'skip',
          why: `already taken in our database: ${(err as Error).message}`,
        });
        continue;
      }
    }
    report.adopted.push(d);
  }
  return report;
}

import type { Pool, PoolConnection, RowDataPacket } from 'mysql2/promise';
import type { ExportRecord } from '../db/exports.js';
import type { FailureType } from '../domain/failures.js';
import type { RowFollower } from '../db/follow.js';
import { readVolumeRows, type MappingRecord } from '../db/mappings.js';
import { engineExportNameOf } from '../domain/device-names.js';
import {
  differences,
  engineExportOf,
  engineMappingOf,
  isHeld,
  isNamed,
  operationModeOf,
  osseaChange,
  type OsseaAttachment,
} from './engine-view.js';

/**
 * The engine's rows in its own database (`ENGINE_DB_NAME`, on our MySQL server), kept as the old
 * daemon kept them, inside the transaction of every write of ours (RowFollower): the engine
 * never reads a state that did not exist. What the engine writes itself — `operation_mode`,
 * `nbd_exports.vm_disk_id` and `job_id`, the snapshot columns outside snapshot tracking, and
 * `ossea_volumes` between our attaches and detaches — is never overwritten.
 */

/** A database name we splice into SQL as an identifier: only a plain name. */
export const ENGINE_DB_NAME = /^[A-Za-z0-9_]{1,64}$/;

/** The engine's tables we write (the rest it owns alone). */
export const ENGINE_TABLES = ['device_mappings', 'nbd_exports', 'ossea_volumes'] as const;
export type EngineTable = (typeof ENGINE_TABLES)[number] | 'vm_disks' | 'vm_replication_contexts';

/** A write the engine's database refused for a reason retrying cannot change: named, permanent. */
export class EngineRowConflictError extends Error {
  readonly retryable = false;
  constructor(message: string) {
    super(message);
    this.name = 'EngineRowConflict' satisfies FailureType;
  }
}

/** Our rows of one volume, as a write found and left them. */
interface Ours {
  mapping: MappingRecord | undefined;
  exported: ExportRecord | undefined;
}

export interface EngineRowsOptions {
  /** The engine's database (ENGINE_DB_NAME). */
  database: string;
  /** The port replication connects to (NBD_PORT), as the engine's export rows carry it. */
  nbdPort: number;
}

export class EngineRows implements RowFollower {
  readonly database: string;
  readonly nbdPort: number;

  constructor(o: EngineRowsOptions) {
    if (!ENGINE_DB_NAME.test(o.database))
      throw new Error(
        `ENGINE_DB_NAME: "${o.database}" is not a database name (letters, digits, _; at most 64)`,
      );
    this.database = o.database;
    this.nbdPort = o.nbdPort;
  }

  /** `db`.`table`, for SQL. */
  t(table: EngineTable): string {
    return `\`${this.database}\`.\`${table}\``;
  }

  async around<T>(tx: PoolConnection, volumeIds: readonly string[], write: () => Promise<T>): Promise<T> {
    const before = new Map<string, Ours>();
    for (const id of volumeIds) before.set(id, await this.ours(tx, id, true));
    const result = await write();
    for (const id of volumeIds) await this.follow(tx, id, before.get(id)!);
    return result;
  }

  private ours(db: Pool | PoolConnection, volumeId: string, lock: boolean): Promise<Ours> {
    return readVolumeRows(db, volumeId, lock);
  }

  /** Bring the engine's rows of one volume to what our rows now say (module comment). */
  private async follow(tx: PoolConnection, volumeId: string, before: Ours): Promise<void> {
    const now = await this.ours(tx, volumeId, false);
    const m = now.mapping;
    // Adopted from the old daemon and not named yet: its rows stay as the old daemon left them.
    if (m && !isNamed(m)) return;
    const wasHeld = before.mapping !== undefined && isHeld(before.mapping, before.exported !== undefined);
    if (!m || !isHeld(m, now.exported !== undefined)) {
      if (!wasHeld) return; // it never had rows of ours: leave whatever is there alone
      const detached = osseaChange(before.mapping, undefined);
      await tx.query(`DELETE FROM ${this.t('nbd_exports')} WHERE volume_id = ?`, [volumeId]);
      await tx.query(`DELETE FROM ${this.t('device_mappings')} WHERE volume_uuid = ?`, [volumeId]);
      if (detached) await this.writeOssea(tx, volumeId, detached);
      return;
    }
    await this.writeMapping(tx, m);
    // After the mapping row: an old trigger copies its device_path into the export rows.
    const name = engineExportNameOf(volumeId);
    const [rows] = await tx.query<RowDataPacket[]>(
      `SELECT * FROM ${this.t('nbd_exports')} WHERE volume_id = ? OR export_name = ? FOR UPDATE`,
      [volumeId, name],
    );
    // Rows of this volume under any other export name are left over (from the seed's naming, or
    // a daemon before it): the engine maps disks by the one name it parses. And the engine's
    // name goes with our export.
    const gone = rows.filter((r) => r.export_name !== name || !now.exported).map((r) => r.id as number);
    if (gone.length) await tx.query(`DELETE FROM ${this.t('nbd_exports')} WHERE id IN (?)`, [gone]);
    if (now.exported)
      await this.writeExport(
        tx,
        now.exported,
        rows.find((r) => r.export_name === name),
      );
    const ossea = osseaChange(before.mapping, m);
    if (ossea) await this.writeOssea(tx, volumeId, ossea);
  }

  private async writeMapping(tx: PoolConnection, m: MappingRecord & { persistentName: string }) {
    const wanted = engineMappingOf(m);
    const written = await this.writeRow(tx, {
      table: 'device_mappings',
      key: ['volume_uuid', m.volumeId],
      wanted,
      // operation_mode: on the first write only; the engine changes it itself after that.
      inserted: { operation_mode: operationModeOf(m) },
      newId: true,
      // The engine's context of the volume, as the old daemon took it.
      context: [
        `SELECT vm_context_id FROM ${this.t('ossea_volumes')} WHERE volume_id = ? LIMIT 1`,
        m.volumeId,
      ],
      stamps: ['last_sync', 'created_at', 'updated_at'],
      now: 'NOW()',
      what: `device_mappings row of volume ${m.volumeId} (device_path ${wanted.device_path})`,
    });
    if (written !== 'inserted') return;
    // Tracked before the engine had a row for it: the row is born with the snapshot.
    const [snap] = await tx.query<RowDataPacket[]>(
      'SELECT vm_context_id, snapshot_id, snapshot_status FROM volume_snapshots WHERE volume_id = ?',
      [m.volumeId],
    );
    if (snap[0])
      await this.snapshotWritten(tx, m.volumeId, {
        kind: 'track',
        vmContextId: String(snap[0].vm_context_id),
        snapshotId: String(snap[0].snapshot_id),
        status: String(snap[0].snapshot_status),
      });
  }

  private async writeExport(tx: PoolConnection, e: ExportRecord, current: RowDataPacket | undefined) {
    const wanted = engineExportOf(e, this.nbdPort);
    await this.writeRow(tx, {
      current,
      table: 'nbd_exports',
      key: ['export_name', wanted.export_name],
      wanted,
      inserted: {},
      newId: false,
      context: [`SELECT vm_context_id FROM ${this.t('device_mappings')} WHERE volume_uuid = ?`, e.volumeId],
      stamps: ['created_at', 'updated_at'],
      now: 'NOW(3)',
      what: `nbd_exports row ${wanted.export_name}`,
    });
  }

  /**
   * One engine row to hold `wanted`: inserted with `inserted` and its context when missing,
   * else only the columns that differ rewritten, and a NULL `vm_context_id` filled. Untouched
   * when it already holds them (a write that changes nothing leaves the engine's times alone).
   */
  private async writeRow(
    tx: PoolConnection,
    r: {
      table: 'device_mappings' | 'nbd_exports';
      /** The row as already read and locked in this transaction, when it was (else read here). */
      current?: RowDataPacket | undefined;
      key: [column: string, value: string];
      wanted: object;
      inserted: Record<string, unknown>;
      /** The table's id is a UUID the row is given (device_mappings), not AUTO_INCREMENT. */
      newId: boolean;
      context: [sql: string, arg: string];
      stamps: string[];
      now: string;
      what: string;
    },
  ): Promise<'inserted' | 'updated' | 'same'> {
    const t = this.t(r.table);
    const row =
      'current' in r
        ? r.current
        : (
            await tx.query<RowDataPacket[]>(`SELECT * FROM ${t} WHERE ${r.key[0]} = ? FOR UPDATE`, [r.key[1]])
          )[0][0];
    const context = `vm_context_id = (${r.context[0]})`;
    try {
      if (!row) {
        const values = { [r.key[0]]: r.key[1], ...r.wanted, ...r.inserted };
        const sets = [
          ...Object.keys(values).map((c) => `${c} = ?`),
          context,
          ...r.stamps.map((c) => `${c} = ${r.now}`),
          ...(r.newId ? ['id = UUID()'] : []),
        ];
        await tx.query(`INSERT INTO ${t} SET ${sets.join(', ')}`, [...Object.values(values), r.context[1]]);
        return 'inserted';
      }
      const changed = differences(row, r.wanted);
      const fillContext = row.vm_context_id === null;
      if (changed.length === 0 && !fillContext) return 'same';
      const sets = [
        ...changed.map((c) => `${c.field} = ?`),
        ...(fillContext ? [context] : []),
        ...r.stamps.filter((c) => c !== 'created_at').map((c) => `${c} = ${r.now}`),
      ];
      await tx.query(`UPDATE ${t} SET ${sets.join(', ')} WHERE ${r.key[0]} = ?`, [
        ...changed.map((c) => c.wanted),
        ...(fillContext ? [r.context[1]] : []),
        r.key[1],
      ]);
      return 'updated';
    } catch (err) {
      throw this.conflict(err, r.what);
    }
  }

  /** As the old daemon did on attach and detach; a volume the engine has no row for is not an error. */
  private async writeOssea(tx: PoolConnection, volumeId: string, a: OsseaAttachment) {
    await tx.query(
      `UPDATE ${this.t('ossea_volumes')} SET device_path = ?, status = ?, updated_at = NOW(3) WHERE volume_id = ?`,
      [a.device_path, a.status, volumeId],
    );
  }

  /** One volume's engine rows as they are (volumectl show). */
  async rowsOf(
    db: Pool,
    volumeId: string,
  ): Promise<{ mapping: RowDataPacket | undefined; exports: RowDataPacket[] }> {
    const [m] = await db.query<RowDataPacket[]>(
      `SELECT * FROM ${this.t('device_mappings')} WHERE volume_uuid = ?`,
      [volumeId],
    );
    const [e] = await db.query<RowDataPacket[]>(
      `SELECT * FROM ${this.t('nbd_exports')} WHERE volume_id = ?`,
      [volumeId],
    );
    return { mapping: m[0], exports: e };
  }

  /** The engine's rows as they are, for reconciliation and the demo (engine-drift.ts). */
  async read(db: Pool): Promise<{ mappings: RowDataPacket[]; exports: RowDataPacket[] }> {
    const [mappings] = await db.query<RowDataPacket[]>(`SELECT * FROM ${this.t('device_mappings')}`);
    const [exports] = await db.query<RowDataPacket[]>(`SELECT * FROM ${this.t('nbd_exports')}`);
    return { mappings, exports };
  }

  /**
   * Snapshot tracking, kept on the mapping row as the old daemon kept it: `track` sets the
   * snapshot and moves the row to the snapshot's VM context, `update` sets what it is given,
   * `clear` forgets the snapshot. A volume the engine has no row for yet gets it with the row.
   */
  async snapshotWritten(
    tx: PoolConnection,
    volumeId: string,
    s:
      | { kind: 'track'; vmContextId: string; snapshotId: string; status: string }
      | { kind: 'update'; snapshotId?: string; status?: string }
      | { kind: 'clear' },
  ): Promise<void> {
    const sets: string[] = [];
    const args: unknown[] = [];
    const set = (col: string, v: unknown) => (sets.push(`${col} = ?`), args.push(v));
    if (s.kind === 'track') {
      set('ossea_snapshot_id', s.snapshotId);
      set('snapshot_status', s.status);
      set('vm_context_id', s.vmContextId);
      sets.push('snapshot_created_at = NOW()');
    } else if (s.kind === 'update') {
      if (s.snapshotId !== undefined) {
        set('ossea_snapshot_id', s.snapshotId);
        sets.push('snapshot_created_at = NOW()');
      }
      if (s.status !== undefined) set('snapshot_status', s.status);
    } else {
      sets.push("ossea_snapshot_id = NULL, snapshot_created_at = NULL, snapshot_status = 'none'");
    }
    if (sets.length === 0) return;
    try {
      await tx.query(
        `UPDATE ${this.t('device_mappings')} SET ${[...sets, 'updated_at = NOW()'].join(', ')} WHERE volume_uuid = ?`,
        [...args, volumeId],
      );
    } catch (err) {
      throw this.conflict(err, `snapshot of volume ${volumeId}`);
    }
  }

  /** A duplicate key or a foreign key the engine's schema enforces: named, never retried. */
  private conflict(err: unknown, what: string): unknown {
    const code = (err as { code?: string }).code;
    if (code === 'ER_DUP_ENTRY' || code?.startsWith('ER_NO_REFERENCED_ROW'))
      return new EngineRowConflictError(
        `the engine's database ${this.database} refused the ${what}: ${(err as Error).message}`,
      );
    return err;
  }
}

/** The engine's rows when ENGINE_DB_NAME names its database; none otherwise (the demo). */
export function engineRowsFor(cfg: { ENGINE_DB_NAME?: string | undefined; NBD_PORT: number }) {
  return cfg.ENGINE_DB_NAME
    ? new EngineRows({ database: cfg.ENGINE_DB_NAME, nbdPort: cfg.NBD_PORT })
    : undefined;
}

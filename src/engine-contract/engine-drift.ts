import type { ExportRecord } from '../db/exports.js';
import type { MappingRecord } from '../db/mappings.js';
import { engineExportNameOf } from '../domain/device-names.js';
import type { Finding } from '../reconcile/drift.js';
import { differences, engineExportOf, engineMappingOf, isHeld, operationModeOf } from './engine-view.js';

/**
 * Reconciliation of the engine's rows, as a pure function: our rows against what its database
 * holds. Each way they can be wrong is a drift kind (src/reconcile/drift.ts lists them); a
 * repair runs the volume's repair saga, whose export step writes the engine's rows again in its
 * transaction (engine-rows.ts) — the sagas' own step, no second path.
 */
export interface EngineRowsRead {
  /** The engine's device_mappings rows, by volume_uuid. */
  mappings: Record<string, unknown>[];
  /** Its nbd_exports rows. */
  exports: Record<string, unknown>[];
}

export interface OurVolume {
  mapping: MappingRecord;
  exported: ExportRecord | undefined;
}

export function engineDrift(
  ours: OurVolume[],
  engine: EngineRowsRead,
  opts: {
    nbdPort: number;
    database: string;
    /** Volume ids with any of our rows. */
    known: ReadonlySet<string>;
    /** Volumes reconciliation must not repair now (CloudStack disagrees): reported instead. */
    hold?: ReadonlySet<string>;
  },
): Finding[] {
  const findings: Finding[] = [];
  const mappingOf = new Map(engine.mappings.map((r) => [String(r.volume_uuid), r]));
  const exportsOf = new Map<string, Record<string, unknown>[]>();
  for (const r of engine.exports) {
    const v = String(r.volume_id);
    exportsOf.set(v, [...(exportsOf.get(v) ?? []), r]);
  }
  const db = opts.database;
  const repair = (
    kind: Finding['kind'],
    volumeId: string,
    subject: string,
    remedy: string,
    details?: object,
  ) => {
    const held = opts.hold?.has(volumeId) ?? false;
    findings.push({
      kind,
      volumeId,
      subject,
      decision: held ? 'report' : 'repair',
      remedy: held ? `${remedy}, once the CloudStack finding of this volume is resolved` : remedy,
      ...(details ? { details: { ...details } } : {}),
    });
  };

  for (const { mapping: m, exported } of ours) {
    if (!isHeld(m, exported !== undefined)) continue; // unnamed rows are adopted first (unnamed-volume)
    const row = mappingOf.get(m.volumeId);
    if (!row) {
      repair(
        'engine-mapping-missing',
        m.volumeId,
        m.volumeId,
        `write the engine's device_mappings row of ${m.volumeId} in ${db}`,
      );
    } else {
      const stale = differences(row, engineMappingOf(m));
      if (stale.length)
        repair(
          'engine-mapping-stale',
          m.volumeId,
          m.volumeId,
          `rewrite ${stale.map((d) => d.field).join(', ')} of the engine's device_mappings row of ${m.volumeId}`,
          { fields: stale },
        );
      if (row.operation_mode !== operationModeOf(m))
        findings.push({
          kind: 'engine-kept',
          volumeId: m.volumeId,
          subject: `${m.volumeId} operation_mode`,
          decision: 'report',
          remedy: `kept: the engine set operation_mode to "${String(row.operation_mode)}" itself (the volume is ${m.location}); we never write it after the row's first write`,
        });
    }
    const name = engineExportNameOf(m.volumeId);
    const rows = exportsOf.get(m.volumeId) ?? [];
    for (const r of rows.filter((x) => x.export_name !== name))
      repair(
        'engine-export-orphan',
        m.volumeId,
        String(r.export_name),
        `remove the engine's nbd_exports row ${String(r.export_name)}: the volume's export is ${name}`,
      );
    if (!exported) continue;
    const mine = rows.find((x) => x.export_name === name);
    if (!mine) {
      repair(
        'engine-export-missing',
        m.volumeId,
        name,
        `write the engine's nbd_exports row ${name} in ${db}`,
      );
      continue;
    }
    const stale = differences(mine, engineExportOf(exported, opts.nbdPort));
    if (stale.length)
      repair(
        'engine-export-stale',
        m.volumeId,
        name,
        `rewrite ${stale.map((d) => d.field).join(', ')} of the engine's nbd_exports row ${name}`,
        { fields: stale },
      );
  }

  // Rows of volumes we hold no row of: the old daemon's, never imported, or left behind.
  const strangers = new Set([
    ...engine.mappings.map((r) => String(r.volume_uuid)),
    ...engine.exports.map((r) => String(r.volume_id)),
  ]);
  for (const v of strangers) {
    if (opts.known.has(v)) continue;
    findings.push({
      kind: 'engine-row-orphan',
      volumeId: null,
      subject: v,
      decision: 'report',
      remedy: `the engine's database ${db} has rows of volume ${v}, which this service does not hold: import it (volumectl import-old --from-db ${db} --apply) or, if the volume is gone, delete its device_mappings row (its export rows go with it)`,
    });
  }
  return findings;
}

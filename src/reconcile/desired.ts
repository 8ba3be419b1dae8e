import type { CsVolume } from '../cloudstack/types.js';
import type { ExportRecord } from '../db/exports.js';
import type { MappingRecord } from '../db/mappings.js';
import type { CloudStackView, DesiredVolume } from './drift.js';

/**
 * Reconciliation's desired state, projected from the database's rows for computeDrift: one
 * volume per mapping row, with the export row's name when it has one. Pure: the reconCompare
 * activity and the workflow tier's fake (test/support/fake-activities.ts) both project with it.
 */
export function desiredVolumesOf(
  rows: readonly MappingRecord[],
  /** nbd_exports rows by volume id. */
  exportRows: ReadonlyMap<string, Pick<ExportRecord, 'exportName'>>,
): DesiredVolume[] {
  return rows.map((r) => ({
    volumeId: r.volumeId,
    persistentName: r.persistentName,
    location: r.location,
    targetVmId: r.targetVmId,
    devicePath: r.devicePath,
    dmState: r.dmState,
    sizeBytes: r.sizeBytes,
    serial: r.virtioSerial,
    exportName: exportRows.get(r.volumeId)?.exportName ?? null,
  }));
}

/**
 * CloudStack's view of the rows' volumes: each one CloudStack lists, with the VM it is attached
 * to (null: detached). A row's volume CloudStack does not list has no key (computeDrift reports
 * it missing); volumes of no row are left out.
 */
export function attachmentsOf(
  rows: readonly Pick<MappingRecord, 'volumeId'>[],
  volumes: Iterable<Pick<CsVolume, 'id' | 'virtualmachineid'>>,
): CloudStackView['attachments'] {
  const attachments: CloudStackView['attachments'] = {};
  const wanted = new Set(rows.map((r) => r.volumeId));
  for (const v of volumes) {
    if (wanted.has(v.id)) attachments[v.id] = v.virtualmachineid ?? null;
  }
  return attachments;
}

import type { DmTable } from '../device/types.js';
import {
  DM_UUID_PREFIX,
  EXPORT_PREFIX,
  engineExportNameOf,
  exportNameOf,
  mapperPathOf,
} from '../domain/device-names.js';
import type { DmState, ExportBackendKind, VolumeLocation } from '../domain/mapping.js';

/**
 * Reconciliation's core, as a pure function: desired state (the database) against actual state
 * (kernel dm tables, devices by serial, NBD config, the NBD server's memory, CloudStack), giving
 * one finding per drift with a decision. Repair only when it is safe and unambiguous; otherwise
 * report, with the exact remedy. Kept pure so the whole drift matrix is unit-tested.
 */

export interface DesiredVolume {
  volumeId: string;
  persistentName: string | null;
  location: VolumeLocation;
  targetVmId: string | null;
  devicePath: string | null;
  dmState: DmState;
  sizeBytes: number;
  serial: string;
  exportName: string | null; // the nbd_exports row, if any
}

export interface DmEntry {
  name: string;
  table: DmTable;
  openCount: number;
  /** dm UUID; ours start with VOLLIFE-. */
  uuid: string;
}

export interface PresentDevice {
  kernelName: string; // vdb
  devicePath: string; // /dev/vdb
  serial: string;
  /** major:minor, as dm tables print devices. */
  devNumber: string;
}

export interface Inventory {
  dm: DmEntry[];
  devices: PresentDevice[];
  exportsConfigured: { exportName: string; targetPath: string }[];
  /** Names the running server lists over NBD; null when the server did not answer. */
  exportsServed: string[] | null;
}

export interface CloudStackView {
  /** volumeId → VM it is attached to (null = detached); absent key = CloudStack has no such volume. */
  attachments: Record<string, string | null>;
}

export const DRIFT_KINDS = [
  'unnamed-volume', // row from the old daemon without a persistent name → adopt
  'dm-missing', // attached volume without its dm device → create
  'dm-wrong-device', // dm table over another device than the one carrying the serial → reload
  'dm-error-while-attached', // error target though the volume is back on the appliance → reload linear
  'dm-linear-while-away', // linear table though the volume is detached / failed over → error target
  'export-missing', // no export config for a volume that has one in the database → write it
  'export-wrong-target', // export config points elsewhere than /dev/mapper/<name> → rewrite
  'export-orphan', // export config with no database row → remove
  'dm-orphan', // dm device with no database row, not open → remove
  'dm-orphan-open', // … but open by a client → report
  'served-stale', // export in the server's memory with no config (nbd-server keeps it) → report
  'export-not-served', // configured, but the server does not list it → report
  'device-missing', // database says on the appliance, but no device carries the serial → report
  'cloudstack-unknown-vm', // CloudStack: attached to a VM that is neither appliance nor recorded target → report
  'cloudstack-location-mismatch', // CloudStack and database disagree on where the volume is → report
  'cloudstack-volume-missing', // CloudStack has no such volume → report
  'nbd-server-down', // the NBD server did not answer the listing → report
  // The engine's database (ENGINE_DB_NAME; src/engine-contract/engine-drift.ts):
  'engine-mapping-missing', // a volume we hold has no device_mappings row there → write it
  'engine-mapping-stale', // its row says another path, VM or state than ours → rewrite it
  'engine-export-missing', // its export has no nbd_exports row under the engine's name → write it
  'engine-export-stale', // that row points elsewhere or has another port or status → rewrite it
  'engine-export-orphan', // an nbd_exports row of a volume we hold under another name → remove it
  'engine-row-orphan', // rows of a volume we do not hold → report (import it, or remove them)
  'engine-kept', // a column the engine writes itself differs from what we first wrote → report, kept
] as const;
export type DriftKind = (typeof DRIFT_KINDS)[number];

export interface Finding {
  kind: DriftKind;
  volumeId: string | null;
  subject: string;
  decision: 'repair' | 'report';
  remedy: string;
  details?: Record<string, unknown>;
}

export function computeDrift(
  desired: DesiredVolume[],
  actual: Inventory,
  cs: CloudStackView,
  opts: { applianceVmId: string; backend: ExportBackendKind },
): Finding[] {
  const findings: Finding[] = [];
  const dmByName = new Map(actual.dm.map((d) => [d.name, d]));
  const devBySerial = new Map(actual.devices.map((d) => [d.serial, d]));
  const configured = new Map(actual.exportsConfigured.map((e) => [e.exportName, e]));
  const served = actual.exportsServed ? new Set(actual.exportsServed) : null;
  const namesInDb = new Set(desired.flatMap((v) => (v.persistentName ? [v.persistentName] : [])));
  // A named volume's export goes by two names: its persistent one and the engine's.
  const exportsInDb = new Set(
    desired.flatMap((v) =>
      v.persistentName ? [exportNameOf(v.persistentName), engineExportNameOf(v.volumeId)] : [],
    ),
  );

  const add = (f: Finding) => findings.push(f);

  for (const v of desired) {
    const csAttachedTo = cs.attachments[v.volumeId];
    // --- CloudStack's view first: it decides whether device-level repairs are safe at all.
    if (csAttachedTo === undefined) {
      add({
        kind: 'cloudstack-volume-missing',
        volumeId: v.volumeId,
        subject: v.volumeId,
        decision: 'report',
        remedy:
          'CloudStack no longer knows this volume: run the delete operation to remove its mapping and export',
      });
      continue;
    }
    if (csAttachedTo && csAttachedTo !== opts.applianceVmId && csAttachedTo !== v.targetVmId) {
      add({
        kind: 'cloudstack-unknown-vm',
        volumeId: v.volumeId,
        subject: v.volumeId,
        decision: 'report',
        remedy: `CloudStack says the volume is attached to VM ${csAttachedTo}, which we did not put it on: find out who attached it; then fail it back or detach it there`,
        details: { attachedTo: csAttachedTo, recordedTarget: v.targetVmId },
      });
      continue;
    }
    const onAppliance = csAttachedTo === opts.applianceVmId;
    const dbOnAppliance = v.location === 'appliance';
    if (onAppliance !== dbOnAppliance || (v.location === 'target' && csAttachedTo !== v.targetVmId)) {
      add({
        kind: 'cloudstack-location-mismatch',
        volumeId: v.volumeId,
        subject: v.volumeId,
        decision: 'report',
        remedy: `database says "${v.location}", CloudStack says ${csAttachedTo ? `attached to ${csAttachedTo}` : 'detached'}: finish the interrupted operation (attach, failover or failback) so both agree`,
        details: { dbLocation: v.location, csAttachedTo },
      });
      continue;
    }

    if (!v.persistentName) {
      add({
        kind: 'unnamed-volume',
        volumeId: v.volumeId,
        subject: v.volumeId,
        decision: 'repair',
        remedy: 'adopt: assign a persistent name, map and export it like any other volume',
      });
      continue;
    }
    const name = v.persistentName;
    const dm = dmByName.get(name);
    const device = devBySerial.get(v.serial);

    if (onAppliance) {
      if (!device) {
        add({
          kind: 'device-missing',
          volumeId: v.volumeId,
          subject: name,
          decision: 'report',
          remedy: `no block device carries serial ${v.serial} although CloudStack has the volume attached: check the appliance (rescan / udevadm trigger) or detach and attach it again`,
        });
      } else if (!dm) {
        add(repair('dm-missing', v, name, `create ${mapperPathOf(name)} linear over ${device.devicePath}`));
      } else if (dm.table.kind === 'error') {
        add(repair('dm-error-while-attached', v, name, `reload ${name} linear over ${device.devicePath}`));
      } else if (dm.table.kind === 'linear' && !pointsAt(dm.table.device, device)) {
        add(
          repair(
            'dm-wrong-device',
            v,
            name,
            `reload ${name} from ${dm.table.device} to ${device.devicePath}`,
            {
              tableDevice: dm.table.device,
              wanted: device.devicePath,
            },
          ),
        );
      }
    } else if (dm && dm.table.kind === 'linear') {
      add(
        repair(
          'dm-linear-while-away',
          v,
          name,
          `point ${name} at an error target: the volume is not on the appliance`,
        ),
      );
    }

    for (const exportName of v.exportName ? [v.exportName, engineExportNameOf(v.volumeId)] : []) {
      const conf = configured.get(exportName);
      if (!conf) add(repair('export-missing', v, exportName, `write the export config for ${exportName}`));
      else if (conf.targetPath !== mapperPathOf(name)) {
        add(
          repair('export-wrong-target', v, exportName, `point ${exportName} at ${mapperPathOf(name)}`, {
            configuredTarget: conf.targetPath,
          }),
        );
      } else if (served && !served.has(exportName) && dm) {
        // Only with the dm device present: nbdkit hides an export whose target is missing, so
        // without it this is a symptom of dm-missing, which the repair fixes.
        add({
          kind: 'export-not-served',
          volumeId: v.volumeId,
          subject: exportName,
          decision: 'report',
          remedy:
            opts.backend === 'nbd-server'
              ? `nbd-server has not loaded ${exportName}: restart it safely (volumectl reconcile applies the safe-restart path), never SIGHUP on 3.24`
              : `nbdkit does not list ${exportName}: check that ${mapperPathOf(name)} exists and nbdkit runs with dir= on the exports directory`,
        });
      }
    }
  }

  // --- Things that exist with no row: orphans.
  for (const d of actual.dm) {
    if (namesInDb.has(d.name) || !isOurs(d)) continue;
    if (d.openCount > 0) {
      add({
        kind: 'dm-orphan-open',
        volumeId: null,
        subject: d.name,
        decision: 'report',
        remedy: `dm device ${d.name} has no database row but is open by ${d.openCount} client(s): stop the client (NBD connection), then the next reconcile removes it`,
      });
    } else {
      add({
        kind: 'dm-orphan',
        volumeId: null,
        subject: d.name,
        decision: 'repair',
        remedy: `remove dm device ${d.name}`,
      });
    }
  }
  for (const e of actual.exportsConfigured) {
    if (exportsInDb.has(e.exportName)) continue;
    add({
      kind: 'export-orphan',
      volumeId: null,
      subject: e.exportName,
      decision: 'repair',
      remedy: `remove the export config of ${e.exportName}`,
    });
  }
  if (served === null) {
    add({
      kind: 'nbd-server-down',
      volumeId: null,
      subject: 'nbd-server',
      decision: 'report',
      remedy:
        opts.backend === 'nbd-server'
          ? 'nbd-server did not answer an export listing: start it (systemctl start nbd-server)'
          : 'nbdkit did not answer an export listing: restart the appliance host worker, whose supervisor starts nbdkit on the exports directory',
    });
  } else {
    for (const name of served) {
      if (configured.has(name) || !name.startsWith(EXPORT_PREFIX)) continue;
      add({
        kind: 'served-stale',
        volumeId: null,
        subject: name,
        decision: 'report',
        remedy:
          opts.backend === 'nbd-server'
            ? `nbd-server still holds ${name} in memory (SIGHUP never removes exports): only a restart drops it — run the backend's safe restart when no replication job is connected`
            : `nbdkit lists ${name} but the exports directory has no link for it: if a plain file or device node of that name sits in the directory, remove it; otherwise the server on the port is not serving our exports directory — stop it and restart the host worker`,
      });
    }
  }
  return findings;
}

function repair(
  kind: DriftKind,
  v: DesiredVolume,
  subject: string,
  remedy: string,
  details?: Record<string, unknown>,
): Finding {
  return { kind, volumeId: v.volumeId, subject, decision: 'repair', remedy, ...(details ? { details } : {}) };
}

/** dm prints a device as `major:minor`; accept that or a path. */
function pointsAt(tableDevice: string, dev: PresentDevice): boolean {
  return tableDevice === dev.devNumber || tableDevice === dev.devicePath;
}

/**
 * Only dm devices we created are candidates for orphan removal: ownership is the dm UUID we set
 * (`VOLLIFE-<name>`), never guessed from a name — other software on the appliance (LVM, crypt,
 * multipath, an operator) must never be touched.
 */
export function isOurs(d: Pick<DmEntry, 'uuid'>): boolean {
  return d.uuid.startsWith(DM_UUID_PREFIX);
}

/** Volume ids that need a repair workflow (one per volume, under the volume's workflow id). */
export function volumesToRepair(findings: Finding[]): string[] {
  return [...new Set(findings.filter((f) => f.decision === 'repair' && f.volumeId).map((f) => f.volumeId!))];
}

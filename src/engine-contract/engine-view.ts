import type { ExportRecord } from '../db/exports.js';
import type { MappingRecord } from '../db/mappings.js';
import { engineExportNameOf, mapperPathOf } from '../domain/device-names.js';

/**
 * The migration engine's view of a volume, as a pure function of our rows: what its
 * `device_mappings`, `nbd_exports` and `ossea_volumes` rows hold, and what /api/v1 reports, so
 * the two faces can never say different things. docs/engine-contract.md explains each choice.
 *
 * - A volume is *held* once it has been anywhere (on the appliance, given to a VM, or detached
 *   with its dm device and export living on). Held volumes have one `device_mappings` row and,
 *   once exported, one `nbd_exports` row under the engine's export name. A volume only created
 *   (detached, no dm device, no export) has none, as under the old daemon.
 * - `device_path` is UNIQUE and NOT NULL: on the appliance the mapper path (the export's fixed
 *   target); on a VM it was given to, the old daemon's `remote-vm-` marker with the volume id
 *   added, so two disks of one VM differ; detached, `detached-vol-<volume id>`.
 */

/** The columns of the engine's `device_mappings` row that follow our row on every write. */
export interface EngineMapping {
  vm_id: string;
  cloudstack_device_id: number | null;
  requires_device_correlation: 0 | 1;
  device_path: string;
  cloudstack_state: 'attached' | 'detached';
  linux_state: string;
  size: number;
  persistent_device_name: string;
  symlink_path: string;
}

/** The columns of the engine's `nbd_exports` row that follow our export row. */
export interface EngineExport {
  export_name: string;
  volume_id: string;
  device_path: string;
  port: number;
  status: 'active' | 'failed';
  config_path: string;
  device_mapping_uuid: string;
}

/** What the engine's `ossea_volumes` row says of the attachment (set on attach and detach only). */
export interface OsseaAttachment {
  device_path: string | null;
  status: 'attached' | 'detached';
}

type Named = MappingRecord & { persistentName: string };

export const isNamed = (m: MappingRecord): m is Named => m.persistentName !== null;

/** Whether the engine sees rows for the volume at all (see above). */
export function isHeld(m: MappingRecord, exported: boolean): m is Named {
  return isNamed(m) && (m.location !== 'detached' || m.dmState !== 'absent' || exported);
}

/** `device_path` of the engine's row, and of /api/v1's device answers. */
export function engineDevicePath(m: Named): string {
  switch (m.location) {
    case 'appliance':
      return m.mapperPath ?? mapperPathOf(m.persistentName);
    case 'target':
      return `remote-vm-${m.cloudstackDeviceId === 0 ? 'root-' : ''}${m.targetVmId ?? 'unknown'}-vol-${m.volumeId}`;
    case 'detached':
      return `detached-vol-${m.volumeId}`;
  }
}

/** The old daemon's `linux_state`: the kernel side as the appliance sees it. */
export function linuxStateOf(m: MappingRecord): string {
  if (m.location !== 'appliance') return 'n/a';
  return m.dmState === 'linear' ? 'detected' : m.dmState;
}

export function engineMappingOf(m: Named): EngineMapping {
  return {
    vm_id: m.location === 'target' ? (m.targetVmId ?? '') : m.applianceVmId,
    cloudstack_device_id: m.location === 'detached' ? null : m.cloudstackDeviceId,
    requires_device_correlation: m.location === 'appliance' ? 1 : 0,
    device_path: engineDevicePath(m),
    cloudstack_state: m.location === 'detached' ? 'detached' : 'attached',
    linux_state: linuxStateOf(m),
    size: m.sizeBytes,
    persistent_device_name: m.persistentName,
    symlink_path: m.mapperPath ?? mapperPathOf(m.persistentName),
  };
}

/** `operation_mode` when the row is first written; after that it is the engine's to change. */
export const operationModeOf = (m: MappingRecord): 'oma' | 'failover' =>
  m.location === 'target' ? 'failover' : 'oma';

export function engineExportOf(e: ExportRecord, nbdPort: number): EngineExport {
  return {
    export_name: engineExportNameOf(e.volumeId),
    volume_id: e.volumeId,
    device_path: e.targetPath,
    port: nbdPort,
    status: e.status === 'active' ? 'active' : 'failed',
    config_path: e.configPath,
    device_mapping_uuid: e.volumeId,
  };
}

export function osseaAttachmentOf(m: Named): OsseaAttachment {
  return m.location === 'detached'
    ? { device_path: null, status: 'detached' }
    : { device_path: engineDevicePath(m), status: 'attached' };
}

/**
 * Whether a write moved the volume onto, off or between VMs (or renamed its path): the only
 * writes after which the old daemon set `ossea_volumes`, so the only ones after which we do.
 * Anything the engine wrote there in between is left as it is.
 */
export function osseaChange(
  before: MappingRecord | undefined,
  after: Named | undefined,
): OsseaAttachment | undefined {
  const was = before && isNamed(before) ? osseaAttachmentOf(before) : undefined;
  const now: OsseaAttachment = after ? osseaAttachmentOf(after) : { device_path: null, status: 'detached' };
  if (!was) return now.status === 'attached' ? now : undefined;
  return was.status !== now.status || was.device_path !== now.device_path ? now : undefined;
}

/** Field by field, what differs between the engine's row and what it should hold. */
export function differences<T extends object>(
  actual: Record<string, unknown>,
  wanted: T,
): { field: keyof T & string; actual: unknown; wanted: unknown }[] {
  const out: { field: keyof T & string; actual: unknown; wanted: unknown }[] = [];
  for (const [k, v] of Object.entries(wanted) as [keyof T & string, unknown][]) {
    const a = actual[k];
    const same = a === v || (a !== null && v !== null && a !== undefined && String(a) === String(v));
    if (!same) out.push({ field: k, actual: a ?? null, wanted: v });
  }
  return out;
}

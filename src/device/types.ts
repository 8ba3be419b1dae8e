/**
 * Narrow interfaces of the appliance's device layer. Implementations drive real tools
 * (sysfs, dmsetup, blockdev) through execa with argument arrays; every method is idempotent
 * because Temporal retries activities.
 */

export type CorrelationMethod = 'sysfs-serial' | 'by-id' | 'new-device-fallback';

export interface ResolvedDevice {
  devicePath: string; // /dev/vdX
  kernelName: string; // vdX
  serial: string;
  sizeBytes: number;
  method: CorrelationMethod;
}

export interface WaitForDeviceRequest {
  serial: string;
  /** Size CloudStack reports; a mismatch is an error, not a guess. */
  expectedSizeBytes?: number;
  /** Kernel names present before the attach began, for the degraded fallback. */
  devicesBefore?: string[];
  timeoutMs: number;
  /** Called while waiting (activities heartbeat from here). */
  onWaiting?: (elapsedMs: number, seen: string[]) => void;
  signal?: AbortSignal;
}

export interface DeviceCorrelator {
  /** Kernel names of virtio/block devices present now (vda, vdb, …). */
  listDevices(): Promise<string[]>;
  /** Every present virtio disk with its serial and size (reconciliation's inventory). */
  describeDevices(): Promise<ResolvedDevice[]>;
  /** Resolve now; undefined when no device carries the serial. */
  findBySerial(serial: string): Promise<ResolvedDevice | undefined>;
  /** Wait (event-driven) until the device appears, or fail after timeoutMs with what was seen. */
  waitForDevice(req: WaitForDeviceRequest): Promise<ResolvedDevice>;
  /** Wait until no device carries the serial (after a detach). */
  waitForGone(serial: string, timeoutMs: number, signal?: AbortSignal): Promise<void>;
}

/** A parsed dm table line: `0 <sectors> linear <dev> <offset>` or `0 <sectors> error`. */
export type DmTable =
  | { kind: 'linear'; sectors: number; device: string; offset: number }
  | { kind: 'error'; sectors: number }
  | { kind: 'other'; sectors: number; raw: string };

export interface DmDeviceInfo {
  name: string;
  exists: true;
  suspended: boolean;
  openCount: number;
  major: number;
  minor: number;
  /** dm UUID; ours are `VOLLIFE-<persistent name>`, so every device traces back to its volume. */
  uuid: string;
  table: DmTable;
  /** A table loaded by `reload` but not yet swapped in by `resume` (attr `-I--`). */
  inactiveTable?: boolean;
  readOnly?: boolean;
}

export interface DeviceMapperApi {
  info(name: string): Promise<DmDeviceInfo | undefined>;
  list(): Promise<string[]>;
  /** `major:minor` of a block device, as dmsetup prints it in tables (e.g. `254:16`). */
  deviceNumber(devicePath: string): Promise<string>;
  /** Size of a block device in 512-byte sectors (`blockdev --getsz`). */
  sectorsOf(devicePath: string): Promise<number>;
  /** Create linear over the whole device, or reload+resume if it exists with another table. */
  ensureLinear(name: string, devicePath: string): Promise<{ changed: boolean; previous?: DmTable }>;
  /** Point at an error target of `sectors` (create if missing). */
  ensureError(name: string, sectors: number): Promise<{ changed: boolean; previous?: DmTable }>;
  /** Load exactly this table (create or reload+resume); used by compensations to restore. */
  ensureTable(name: string, table: DmTable): Promise<{ changed: boolean; previous?: DmTable }>;
  /** Remove; missing → success; busy → retries, then deferred removal. */
  remove(name: string): Promise<{ removed: boolean; deferred: boolean }>;
}

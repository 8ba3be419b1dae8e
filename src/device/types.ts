import { z } from 'zod';
import { targetPathSchema } from '../domain/paths.js';

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

/**
 * A block device path as the device layer is handed one: `/dev/vdb` from correlation (under
 * DEV_ROOT, so not necessarily `/dev`), `/dev/loop0` in the lab. Absolute, normalised, no `..`,
 * no blanks or control characters, from the same conservative alphabet as export targets: it
 * becomes a `stat`/`blockdev` argument and may be written into a dm table.
 */
export const DEVICE_PATH_MAX = 255;
export const devicePathSchema = targetPathSchema
  .refine((p) => p.length <= DEVICE_PATH_MAX, `must be at most ${DEVICE_PATH_MAX} characters`)
  .refine((p) => p !== '/', 'must name a device, not "/"');

/** `major:minor` in decimal, as dm prints a device in a table (`254:16`). */
const MAJOR_MINOR = /^\d{1,10}:\d{1,10}$/;
/** One segment of a raw table: `<start> <length> <target> [args…]`, printable ASCII only. */
const RAW_TABLE_LINE = /^\d+ +\d+ +[a-z][a-z0-9_-]* *( [!-~]+ *)*$/;

const sectorsSchema = z
  .number('must be a number')
  .int('must be an integer')
  .positive('must be a positive number of sectors');

/**
 * A table the device layer may load. Every field lands in the text dmsetup reads, one line per
 * segment, so none may carry a blank or a newline: a `device` like `254:16 0\n2048 2048 linear 8:0`
 * would otherwise add a segment of the caller's choosing. `other` (a table read back from dm,
 * restored by a compensation) is checked line by line.
 */
export const dmTableSchema: z.ZodType<DmTable> = z.discriminatedUnion('kind', [
  z.object({
    kind: z.literal('linear'),
    sectors: sectorsSchema,
    device: z
      .string()
      .refine(
        (d) => MAJOR_MINOR.test(d) || devicePathSchema.safeParse(d).success,
        'must be "major:minor" (like 254:16) or an absolute device path (like /dev/vdb)',
      ),
    offset: z.number('must be a number').int('must be an integer').min(0, 'must be at least 0'),
  }),
  z.object({ kind: z.literal('error'), sectors: sectorsSchema }),
  z.object({
    kind: z.literal('other'),
    sectors: z.number('must be a number').int('must be an integer').min(0, 'must be at least 0'),
    raw: z
      .string()
      .max(64 * 1024, 'must be at most 64 KiB')
      .refine((raw) => {
        const lines = raw.replace(/\n$/, '').split('\n');
        return lines.length > 0 && lines.every((l) => RAW_TABLE_LINE.test(l));
      }, 'must be dm table lines "<start> <length> <target> [args]" of printable characters'),
  }),
]);

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

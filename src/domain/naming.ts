import { createHash } from 'node:crypto';
import { z } from 'zod';

/**
 * Persistent device names: the one identity of a volume on the appliance that never changes.
 * They become a device-mapper name (`/dev/mapper/<name>`), an NBD export name
 * (`migration-vol-<name>`), an nbd-server config section and a file name, so the alphabet is
 * the intersection of what all of those accept: lower-case letters, digits and `-`, starting
 * with a letter or digit, at most 64 bytes (dm allows 127; export names get a prefix).
 */
export const PERSISTENT_NAME_MAX = 64;
export const persistentNameSchema = z
  .string()
  .regex(
    /^[a-z0-9][a-z0-9-]*$/,
    'must be lower-case letters, digits and "-", starting with a letter or digit',
  )
  .max(PERSISTENT_NAME_MAX, `must be at most ${PERSISTENT_NAME_MAX} characters`);
export type PersistentName = z.output<typeof persistentNameSchema>;

export const EXPORT_PREFIX = 'migration-vol-';
export const exportNameSchema = z
  .string()
  .regex(/^migration-vol-[a-z0-9][a-z0-9-]*$/, 'must be "migration-vol-" followed by a persistent name')
  .max(EXPORT_PREFIX.length + PERSISTENT_NAME_MAX);

export function exportNameFor(name: PersistentName): string {
  return EXPORT_PREFIX + persistentNameSchema.parse(name);
}

export function mapperPathFor(name: PersistentName): string {
  return `/dev/mapper/${persistentNameSchema.parse(name)}`;
}

/** Longest cleaned VM-name stem, leaving room for a conflict tag and `disk<NNNN>`. */
const STEM_MAX = 40;

/** `pg-test3` → `pgtest3`; `Web_Server.01` → `webserver01`. Empty results get a fixed stem. */
export function cleanVmName(vmName: string): string {
  const cleaned = vmName
    .normalize('NFKD')
    .toLowerCase()
    .replace(/[^a-z0-9]/g, '')
    .slice(0, STEM_MAX);
  return cleaned === '' ? 'vm' : cleaned;
}

/**
 * VMware virtual disk keys start at 2000 on the first controller (2000 = unit 0, 2001 = unit 1,
 * … 2015, 2016 = next controller) and run to 3024 (4 controllers × 16 units × 16). The disk
 * index is `key - 2000`, parsed as a number: the old daemon trimmed the text `disk-200`, which
 * turned `disk-2010` into `10`→`0` style mistakes.
 */
export const DISK_KEY_FIRST = 2000;
export const DISK_KEY_LAST = DISK_KEY_FIRST + 4 * 16 * 16;
/** Largest disk index (`DISK_KEY_LAST - DISK_KEY_FIRST`). */
export const DISK_INDEX_MAX = DISK_KEY_LAST - DISK_KEY_FIRST;

/**
 * The number a disk key stands for: `2010`, `"2010"` or `"disk-2010"` → 2010; anything else
 * (other text, other types) → undefined. No range check: see `diskIndexFromKey`.
 */
export function diskKeyNumber(key: unknown): number | undefined {
  if (typeof key === 'number') return key;
  if (typeof key !== 'string') return undefined;
  const m = /^(?:disk-)?(\d{1,9})$/.exec(key);
  return m ? Number(m[1]) : undefined;
}

/** Accepts `2010`, `"2010"` or `"disk-2010"` from 2000 to 3024; returns the disk index. */
export function diskIndexFromKey(key: number | string): number {
  const n = diskKeyNumber(typeof key === 'string' ? key.trim() : key);
  if (n === undefined || !Number.isSafeInteger(n))
    throw new RangeError(`diskKey ${JSON.stringify(key)} is not a VMware disk key like 2000 or "disk-2000"`);
  if (n < DISK_KEY_FIRST)
    throw new RangeError(`diskKey ${n} is below ${DISK_KEY_FIRST}, the first VMware virtual disk key`);
  if (n > DISK_KEY_LAST)
    throw new RangeError(`diskKey ${n} is above ${DISK_KEY_LAST}, the last VMware virtual disk key`);
  return n - DISK_KEY_FIRST;
}

/** The name a (VM, disk) pair asks for first: `pgtest3disk0`. */
export function baseName(vmName: string, diskIndex: number): PersistentName {
  return persistentNameSchema.parse(`${cleanVmName(vmName)}disk${diskIndex}`);
}

/**
 * The k-th alternative (k ≥ 1) when the base is held by another (VM, disk) pair. The tag is a
 * hash of the *raw* VM name, so `pg-test3` always gets the same alternative whatever order
 * the attaches arrive in; k > 1 only on a hash collision.
 */
export function alternativeName(vmName: string, diskIndex: number, k: number): PersistentName {
  const tag = createHash('sha256').update(vmName).digest('hex').slice(0, 6);
  const suffix = k === 1 ? tag : `${tag}${k}`;
  return persistentNameSchema.parse(`${cleanVmName(vmName)}-${suffix}disk${diskIndex}`);
}

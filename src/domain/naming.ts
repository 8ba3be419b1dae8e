import { createHash } from 'node:crypto';
import { z } from 'zod';
import { EXPORT_PREFIX, exportNameOf, mapperPathOf } from './device-names.js';

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

export const exportNameSchema = z
  .string()
  .regex(
    new RegExp(`^${EXPORT_PREFIX}[a-z0-9][a-z0-9-]*$`),
    `must be "${EXPORT_PREFIX}" followed by a persistent name`,
  )
  .max(EXPORT_PREFIX.length + PERSISTENT_NAME_MAX);

export function exportNameFor(name: PersistentName): string {
  return exportNameOf(persistentNameSchema.parse(name));
}

export function mapperPathFor(name: PersistentName): string {
  return mapperPathOf(persistentNameSchema.parse(name));
}

/**
 * VM names, as every comparison, index and hash sees them: one normal form, applied once where a
 * name enters (client, API, CLI, activity input) and stored as is. Unicode NFC (the two spellings
 * of "café" are one VM), trimmed; refused — never silently stripped — when it holds characters a
 * person cannot see or that change how text reads: control, format (zero-width, bidi marks and
 * overrides), line/paragraph separators, private-use, unassigned code points and lone UTF-16
 * surrogates (which MySQL cannot store). The database column compares the same way (NO PAD
 * binary collation: "pgtest3 " and "pgtest3" would otherwise be one key there and two here).
 */
export const VM_NAME_MAX = 80;

export class VmNameError extends Error {
  readonly retryable = false;
  constructor(message: string) {
    super(message);
    this.name = 'VmNameError';
  }
}

const INVISIBLE = /[\p{Cc}\p{Cf}\p{Co}\p{Cn}\p{Zl}\p{Zp}]/u;
/** Spaces other than U+0020 (no-break, ideographic, em…): they look like one and compare as another. */
const ODD_SPACE = /(?! )\p{Zs}/u;
const PATH_LIKE = /[/\\[\]=]/;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function describeCodePoint(c: string): string {
  return `U+${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`;
}

/** The stored form of a VM name; throws VmNameError saying what is wrong with it. */
export function normalizeVmName(raw: string): string {
  if (typeof raw !== 'string') throw new VmNameError('must be a string');
  if (LONE_SURROGATE.test(raw))
    throw new VmNameError('must not contain a lone UTF-16 surrogate (U+D800–U+DFFF): not valid Unicode text');
  // Checked before trimming: a BOM, tab or line separator at either end is refused, not trimmed.
  const all = [...raw.normalize('NFC')];
  const bad = all.findIndex((c) => INVISIBLE.test(c));
  if (bad >= 0)
    throw new VmNameError(
      `must not contain control, invisible or bidirectional characters (${describeCodePoint(all[bad]!)} at position ${bad + 1})`,
    );
  const odd = all.findIndex((c) => ODD_SPACE.test(c));
  if (odd >= 0)
    throw new VmNameError(
      `must not contain the space ${describeCodePoint(all[odd]!)} at position ${odd + 1}: only the plain space U+0020 separates words`,
    );
  const name = all.join('').trim();
  if (name === '') throw new VmNameError('must not be empty or only spaces');
  const chars = [...name];
  if (PATH_LIKE.test(name)) throw new VmNameError('must not contain "/", "\\", "[", "]" or "="');
  if (name === '.' || name === '..') throw new VmNameError('must not be "." or ".."');
  if (chars.length > VM_NAME_MAX) throw new VmNameError(`must be at most ${VM_NAME_MAX} characters`);
  return name;
}

/** A VM name already in canonical form (its own stem) keeps the plain `<vm>disk<N>` name. */
const CANONICAL_MAX = 40;
const CANONICAL = new RegExp(`^[a-z0-9]{1,${CANONICAL_MAX}}$`);
/** Stem kept in front of the tag of a non-canonical name (readability only; the tag decides). */
const TAGGED_STEM_MAX = 32;
/** 20 hex characters = 80 bits of SHA-256: collisions are not practical (about 1 in 10^12 at a million VM names). */
export const NAME_TAG_LENGTH = 20;

/** `pg-test3` → `pgtest3`; `Web_Server.01` → `webserver01`. Empty results get a fixed stem. */
export function cleanVmName(vmName: string, max = CANONICAL_MAX): string {
  const cleaned = vmName
    .normalize('NFKD')
    .toLowerCase()
    .replace(/[^a-z0-9]/g, '')
    .slice(0, max);
  return cleaned === '' ? 'vm' : cleaned;
}

export function isCanonicalVmName(normalizedVmName: string): boolean {
  return CANONICAL.test(normalizedVmName);
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

/**
 * The persistent name of a (VM, disk): a pure function of the normalized VM name and the disk
 * index, so it is the same in every database, in every arrival order and on every control host.
 * - VM names in canonical form (`[a-z0-9]{1,40}`) get `<vm>disk<N>`: `pgtest3` → `pgtest3disk0`.
 * - Every other name gets `<stem>-<tag>disk<N>`, the tag being the first 20 hex characters of
 *   SHA-256 of the normalized name: `PG_TEST3` → `pgtest3-<tag>disk0`.
 * The two forms never meet (only the second has a "-"); within each, the string decodes back to
 * its (name, index) — the index is the trailing digits after "disk" — so two pairs share a name
 * only if two VM names share a 80-bit tag, which assignment detects and refuses, naming both.
 */
export function persistentNameFor(normalizedVmName: string, diskIndex: number): PersistentName {
  if (!Number.isSafeInteger(diskIndex) || diskIndex < 0 || diskIndex > DISK_INDEX_MAX)
    throw new RangeError(`diskIndex ${diskIndex} is outside 0..${DISK_INDEX_MAX}`);
  if (isCanonicalVmName(normalizedVmName))
    return persistentNameSchema.parse(`${normalizedVmName}disk${diskIndex}`);
  const tag = createHash('sha256').update(normalizedVmName, 'utf8').digest('hex').slice(0, NAME_TAG_LENGTH);
  return persistentNameSchema.parse(
    `${cleanVmName(normalizedVmName, TAGGED_STEM_MAX)}-${tag}disk${diskIndex}`,
  );
}

/** How a caller's disk is named in messages: their own key, e.g. "disk key 2000 (disk 0)". */
export function describeDisk(diskIndex: number): string {
  return `disk key ${DISK_KEY_FIRST + diskIndex} (disk ${diskIndex})`;
}

/**
 * The migration engine names the volumes it creates `migration-<vm>-<vm>-disk-<unit>` (the VM's
 * name twice: from its inventory and from its path). For a volume created elsewhere whose caller
 * sends no VM name, that is the only source of one; anything ambiguous (the two halves differ, so
 * the split is unknown) is no source at all: never guess a name that can collide.
 */
export function namingFromEngineVolumeName(
  volumeName: string,
): { sourceVmName: string; diskIndex: number } | undefined {
  const m = /^migration-(.+)-disk-(\d{1,4})$/.exec(volumeName);
  if (!m) return undefined;
  const middle = m[1]!;
  const unit = Number(m[2]);
  if (unit > DISK_INDEX_MAX || middle.length % 2 === 0) return undefined;
  const half = (middle.length - 1) / 2;
  const a = middle.slice(0, half);
  if (middle[half] !== '-' || middle.slice(half + 1) !== a) return undefined;
  try {
    return { sourceVmName: normalizeVmName(a), diskIndex: unit };
  } catch {
    return undefined;
  }
}

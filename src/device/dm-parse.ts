import type { DmTable } from './types.js';

/** Pure parsing of dmsetup's output, kept apart so it is tested on real output strings. */

/** One line of `dmsetup table <name>`: `0 2097152 linear 254:16 0` / `0 2097152 error`. */
export function parseTable(text: string): DmTable {
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  if (lines.length !== 1) {
    const total = lines.reduce((n, l) => n + Number(l.trim().split(/\s+/)[1] ?? 0), 0);
    return { kind: 'other', sectors: total, raw: lines.join('\n') };
  }
  const [start, length, target, ...args] = lines[0]!.trim().split(/\s+/);
  const sectors = Number(length);
  if (start !== '0' || !Number.isSafeInteger(sectors))
    return { kind: 'other', sectors: sectors || 0, raw: lines[0]! };
  if (target === 'linear' && args.length === 2) {
    return { kind: 'linear', sectors, device: args[0]!, offset: Number(args[1]) };
  }
  if (target === 'error' && args.length === 0) return { kind: 'error', sectors };
  return { kind: 'other', sectors, raw: lines[0]! };
}

/** The table line we load: dmsetup reads it on stdin. */
export function formatTable(t: DmTable): string {
  switch (t.kind) {
    case 'linear':
      return `0 ${t.sectors} linear ${t.device} ${t.offset}\n`;
    case 'error':
      return `0 ${t.sectors} error\n`;
    default:
      return t.raw.endsWith('\n') ? t.raw : `${t.raw}\n`;
  }
}

export interface InfoColumns {
  name: string;
  openCount: number;
  liveTable: boolean;
  inactiveTable: boolean;
  suspended: boolean;
  readOnly: boolean;
  major: number;
  minor: number;
  uuid: string;
}

/**
 * `dmsetup info -c --noheadings --separator '|' -o name,open,attr,major,minor,uuid <name>`,
 * e.g. `pgtest3disk0|0|L--w|253|0|VOLLIFE-pgtest3disk0`. attr is four letters, as libdevmapper
 * prints them: (L)ive table, (I)nactive table, (s)uspended, (r)ead-only / read-(w)rite — so a
 * reloaded but not yet resumed device reads `LI-w`, a suspended one `L-sw` (seen on kernel 6.1).
 */
export function parseInfoColumns(line: string): InfoColumns {
  const [name, open, attr, major, minor, ...rest] = line.trim().split('|');
  const numbers = [open, major, minor].map((v) => (v !== undefined && /^\d+$/.test(v) ? Number(v) : NaN));
  if (!name || attr === undefined || !/^[L-][I-][s-][rw]$/.test(attr) || numbers.some(Number.isNaN)) {
    throw new Error(`unexpected dmsetup info line: ${JSON.stringify(line)}`);
  }
  return {
    name,
    openCount: numbers[0]!,
    liveTable: attr[0] === 'L',
    inactiveTable: attr[1] === 'I',
    suspended: attr[2] === 's',
    readOnly: attr[3] === 'r',
    major: numbers[1]!,
    minor: numbers[2]!,
    uuid: rest.join('|'),
  };
}

/** `dmsetup ls` lines: `name\t(254:0)` or `name\t(254, 0)`; "No devices found" → []. */
export function parseLs(text: string): string[] {
  if (/No devices found/i.test(text)) return [];
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '')
    .map((l) => l.split(/\s+/)[0]!)
    .filter((n) => n !== '');
}

/** Same table, comparing what dm would print (`0 8 error ` with its trailing blank included). */
export function sameTable(a: DmTable, b: DmTable): boolean {
  if (a.kind !== b.kind || a.sectors !== b.sectors) return false;
  if (a.kind === 'linear' && b.kind === 'linear') return a.device === b.device && a.offset === b.offset;
  if (a.kind === 'other' && b.kind === 'other') return normaliseRaw(a.raw) === normaliseRaw(b.raw);
  return true;
}
const normaliseRaw = (raw: string) =>
  raw
    .split('\n')
    .map((l) => l.trim().split(/\s+/).join(' '))
    .filter((l) => l !== '')
    .join('\n');

/**
 * `stat -L -c %t:%T:%F <dev>` → `major:minor` in decimal, as dm prints devices in tables.
 * stat prints the numbers in HEX (`fe:10` is 254:16); %F tells a block device from anything else.
 */
export function parseStatDevNumber(text: string): { devNumber: string; type: string } {
  const m = /^([0-9a-f]+):([0-9a-f]+):(.+)$/i.exec(text.trim());
  if (!m) throw new Error(`unexpected stat output: ${JSON.stringify(text)}`);
  return { devNumber: `${parseInt(m[1]!, 16)}:${parseInt(m[2]!, 16)}`, type: m[3]! };
}

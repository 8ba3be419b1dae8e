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
  suspended: boolean;
  major: number;
  minor: number;
  uuid: string;
}

/**
 * `dmsetup info -c --noheadings --separator '|' -o name,open,attr,major,minor,uuid <name>`,
 * e.g. `pgtest3disk0|0|L--w|254|0|VOLLIFE-8a4f…`. attr's second letter is `s` when suspended.
 */
export function parseInfoColumns(line: string): InfoColumns {
  const [name, open, attr, major, minor, uuid = ''] = line.trim().split('|');
  if (!name || open === undefined || attr === undefined || major === undefined || minor === undefined) {
    throw new Error(`unexpected dmsetup info line: ${JSON.stringify(line)}`);
  }
  return {
    name,
    openCount: Number(open),
    suspended: attr[1] === 's',
    major: Number(major),
    minor: Number(minor),
    uuid,
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

/** Same device? dm prints `major:minor`; a wanted device may be given either way. */
export function sameDevice(table: DmTable, devNumber: string): boolean {
  return table.kind === 'linear' && table.device === devNumber;
}

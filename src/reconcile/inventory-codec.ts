import { gunzipSync, gzipSync } from 'node:zlib';
import type { Inventory } from './drift.js';

/**
 * The appliance's inventory travels through workflow history (host activity result → control
 * activity input). At 10,000 volumes its JSON is ~3.4 MiB, over Temporal's default 2 MiB payload
 * limit; it is highly repetitive, so gzip brings it well under (see bench/reconcile.ts).
 */
export interface PackedInventory {
  encoding: 'gzip-json';
  data: string; // base64
}

export function packInventory(inv: Inventory): PackedInventory {
  return { encoding: 'gzip-json', data: gzipSync(JSON.stringify(inv)).toString('base64') };
}

export function unpackInventory(p: PackedInventory): Inventory {
  if (p.encoding !== 'gzip-json') throw new Error(`inventory: unknown encoding ${String(p.encoding)}`);
  return JSON.parse(gunzipSync(Buffer.from(p.data, 'base64')).toString('utf8')) as Inventory;
}

import { mapperPathFor, persistentNameSchema } from '../domain/naming.js';
import type { CommandRunner } from '../command/runner.js';
import { localRunner } from '../command/runner.js';
import {
  DmBusyError,
  DmConflictError,
  DmError,
  DmInvalidTableError,
  DmNotFoundError,
  classifyDmFailure,
} from './dm-errors.js';
import {
  formatTable,
  parseInfoColumns,
  parseLs,
  parseStatDevNumber,
  parseTable,
  sameTable,
} from './dm-parse.js';
import {
  devicePathSchema,
  dmTableSchema,
  type DeviceMapperApi,
  type DmDeviceInfo,
  type DmTable,
} from './types.js';

import { DM_UUID_PREFIX } from '../domain/device-names.js';

export { DM_UUID_PREFIX };

const INFO_FIELDS = 'name,open,attr,major,minor,uuid';

export interface DeviceMapperOptions {
  runner?: CommandRunner;
  /** Attempts of a busy remove before deferred removal (default 5). */
  removeAttempts?: number;
  /** Pause between busy retries (default 200 ms). */
  removeRetryDelayMs?: number;
}

/**
 * device-mapper through dmsetup (argv arrays through a CommandRunner; the lab's runner executes
 * them in a real guest kernel). Every method is idempotent: Temporal retries activities.
 */
export class DeviceMapper implements DeviceMapperApi {
  private readonly runner: CommandRunner;
  private readonly removeAttempts: number;
  private readonly removeRetryDelayMs: number;

  constructor(opts: DeviceMapperOptions = {}) {
    this.runner = opts.runner ?? localRunner;
    this.removeAttempts = opts.removeAttempts ?? 5;
    this.removeRetryDelayMs = opts.removeRetryDelayMs ?? 200;
  }

  private async dmsetup(args: string[], input?: string): Promise<string> {
    const r = await this.runner.run('dmsetup', args, input === undefined ? {} : { input });
    if (r.exitCode !== 0) throw classifyDmFailure(args, r.stderr || r.stdout, r.exitCode);
    return r.stdout;
  }

  async info(name: string): Promise<DmDeviceInfo | undefined> {
    // Reading any dm device is allowed (reconciliation lists them all); names still may not
    // carry anything dmsetup or a path could misread.
    if (!/^[A-Za-z0-9._+:@-]{1,127}$/.test(name))
      throw new DmInvalidTableError(`name: not a dm device name (${JSON.stringify(name)})`);
    const args = ['info', '-c', '--noheadings', '--separator', '|', '-o', INFO_FIELDS, name];
    const r = await this.runner.run('dmsetup', args);
    if (r.exitCode !== 0) {
      // `Device does not exist.` is dmsetup's answer for a missing name.
      if (/does not exist|No such device/i.test(r.stderr)) return undefined;
      throw classifyDmFailure(args, r.stderr, r.exitCode);
    }
    const { liveTable: _live, ...cols } = parseInfoColumns(r.stdout.split('\n')[0] ?? '');
    let tableText: string;
    try {
      tableText = await this.dmsetup(['table', name]);
    } catch (err) {
      if (err instanceof DmNotFoundError) return undefined; // removed between the two calls
      throw err;
    }
    return { ...cols, exists: true, table: parseTable(tableText) };
  }

  async list(): Promise<string[]> {
    const r = await this.runner.run('dmsetup', ['ls']);
    if (r.exitCode !== 0 && !/No devices found/i.test(r.stdout + r.stderr)) {
      throw classifyDmFailure(['ls'], r.stderr, r.exitCode);
    }
    return parseLs(r.stdout + r.stderr);
  }

  async deviceNumber(devicePath: string): Promise<string> {
    const r = await this.runner.run('stat', ['-L', '-c', '%t:%T:%F', devicePath]);
    if (r.exitCode !== 0) {
      const text = r.stderr.trim();
      if (/No such file or directory/i.test(text))
        throw new DmNotFoundError(`device ${devicePath} does not exist: ${text}`);
      throw new DmError(`cannot stat ${devicePath}: ${text}`);
    }
    const { devNumber, type } = parseStatDevNumber(r.stdout);
    if (type !== 'block special file')
      throw new DmInvalidTableError(`${devicePath} is not a block device (${type})`);
    return devNumber;
  }

  async sectorsOf(devicePath: string): Promise<number> {
    const r = await this.runner.run('blockdev', ['--getsz', devicePath]);
    if (r.exitCode !== 0) {
      const text = r.stderr.trim();
      if (/No such file or directory|No such device/i.test(text))
        throw new DmNotFoundError(`blockdev --getsz ${devicePath}: ${text}`);
      throw new DmError(`blockdev --getsz ${devicePath}: ${text}`);
    }
    const n = Number(r.stdout.trim());
    if (!Number.isSafeInteger(n) || n <= 0)
      throw new DmInvalidTableError(`${devicePath} has no usable size (${r.stdout.trim()})`);
    return n;
  }

  async ensureLinear(name: string, devicePath: string) {
    validName(name);
    const p = devicePathSchema.safeParse(devicePath);
    if (!p.success)
      throw new DmInvalidTableError(
        `devicePath: ${p.error.issues[0]?.message ?? 'invalid'} (${JSON.stringify(devicePath).slice(0, 200)})`,
      );
    const [device, sectors] = await Promise.all([this.deviceNumber(devicePath), this.sectorsOf(devicePath)]);
    return this.ensureTable(name, { kind: 'linear', sectors, device, offset: 0 });
  }

  async ensureError(name: string, sectors: number) {
    validName(name);
    if (!Number.isSafeInteger(sectors) || sectors <= 0)
      throw new DmInvalidTableError(`sectors: must be > 0, got ${sectors}`);
    return this.ensureTable(name, { kind: 'error', sectors });
  }

  /**
   * Make `name` carry exactly `table`: create it (tagged with our dm UUID) if missing, otherwise
   * reload + resume when the live table differs. A reload keeps the same /dev/dm-N, so open NBD
   * connections stay on the device and see the new table after the resume.
   *
   * Leftovers of an interrupted earlier attempt are repaired, not trusted: a pending deferred
   * removal is cancelled (the caller wants the device to stay), and an inactive table from a
   * reload that never got its resume is cleared when the live table is already the wanted one —
   * otherwise the next resume would swap that stale table in.
   */
  async ensureTable(name: string, table: DmTable): Promise<{ changed: boolean; previous?: DmTable }> {
    const n = validName(name);
    const wanted = await this.normalise(validTable(table));
    const current = await this.info(n);
    if (!current) {
      try {
        await this.dmsetup(['create', n, '--uuid', DM_UUID_PREFIX + n], tableText(wanted));
      } catch (err) {
        if (!(err instanceof DmBusyError)) throw err;
        // EBUSY from create: the name or the UUID is taken. The name → a retried attempt of
        // ourselves won the race; converge on it. Only the UUID → a device renamed behind our back.
        if (await this.info(n)) return this.ensureTable(n, wanted);
        throw new DmConflictError(
          `dm device ${n} cannot be created: another dm device already carries uuid ${DM_UUID_PREFIX + n} (${err.message})`,
          err.args,
          err.stderr,
        );
      }
      return { changed: true };
    }
    const same = sameTable(current.table, wanted);
    const ours = current.uuid.startsWith(DM_UUID_PREFIX);
    // Already as wanted: success, whoever owns it (e.g. an undo of a step that changed nothing).
    if (same && !current.suspended && !current.inactiveTable) {
      if (ours) await this.cancelDeferredRemove(n);
      // A retried attempt finds the table its predecessor swapped in, but not whether that one's
      // cache drop ran (its flushbufs failed, or its worker died first): held open, drop it now.
      if (ours && current.openCount > 0) await this.dropPageCache(n);
      return { changed: false, previous: current.table };
    }
    if (!ours) {
      // Someone else's device under our name (LVM, an operator, another tool): never hijack it.
      throw new DmConflictError(
        `dm device ${n} exists but is not ours (uuid ${JSON.stringify(current.uuid)}); rename or remove it, then retry`,
      );
    }
    await this.cancelDeferredRemove(n);
    if (!same) {
      await this.dmsetup(['reload', n], tableText(wanted));
    } else if (current.inactiveTable) {
      await this.dmsetup(['clear', n]);
    }
    if (!same || current.suspended) await this.dmsetup(['resume', n]);
    if (!same) await this.dropPageCache(n);
    return { changed: !same || current.suspended, previous: current.table };
  }

  /**
   * After a table swap, drop the device's page cache (BLKFLSBUF: write back what is dirty, then
   * invalidate the clean pages). The kernel keeps a block device's cache while anyone holds it
   * open, and an NBD server with a client connected does: without this, that client would keep
   * reading blocks cached from the previous table — the volume's data from before a failover
   * instead of EIO while it is away, and after failback the old contents instead of what the
   * migrated VM wrote (measured by the live replication cases of test/lab/sagas-cycle.lab.test.ts).
   * Dirty pages never cross tables: the suspend before the swap writes them to the old device.
   */
  private async dropPageCache(n: string): Promise<void> {
    const dev = mapperPathFor(n);
    const r = await this.runner.run('blockdev', ['--flushbufs', dev]);
    if (r.exitCode !== 0) throw new DmError(`blockdev --flushbufs ${dev}: ${(r.stderr || r.stdout).trim()}`);
  }

  async suspend(name: string): Promise<void> {
    await this.dmsetup(['suspend', validName(name)]);
  }
  async resume(name: string): Promise<void> {
    await this.dmsetup(['resume', validName(name)]);
  }

  /**
   * Remove; missing → success. Busy (an NBD client, udev's blkid, a reader still holds it) →
   * `removeAttempts` tries with a growing pause, then deferred removal: the kernel removes the
   * device at its last close. `deferred: true` means it still exists right now.
   */
  async remove(name: string): Promise<{ removed: boolean; deferred: boolean }> {
    const n = validName(name);
    for (let attempt = 1; ; attempt++) {
      const info = await this.info(n);
      if (!info) return { removed: attempt > 1, deferred: false };
      if (!info.uuid.startsWith(DM_UUID_PREFIX))
        throw new DmConflictError(
          `dm device ${n} is not ours (uuid ${JSON.stringify(info.uuid)}): not removing it`,
        );
      try {
        await this.dmsetup(['remove', n]);
        return { removed: true, deferred: false };
      } catch (err) {
        if (err instanceof DmNotFoundError) return { removed: attempt > 1, deferred: false };
        if (!(err instanceof DmBusyError)) throw err;
        if (attempt >= this.removeAttempts) break;
        await new Promise((r) => setTimeout(r, this.removeRetryDelayMs * attempt));
      }
    }
    try {
      await this.dmsetup(['remove', '--deferred', n]);
    } catch (err) {
      if (err instanceof DmNotFoundError) return { removed: true, deferred: false };
      throw err;
    }
    // If the last holder let go meanwhile, the kernel removed it at once.
    return { removed: true, deferred: (await this.info(n)) !== undefined };
  }

  /** Undo a pending `remove --deferred` (a no-op when none is pending; kernel ≥ 3.13). */
  private async cancelDeferredRemove(name: string): Promise<void> {
    await this.dmsetup(['message', name, '0', '@cancel_deferred_remove']);
  }

  /** Paths are resolved to major:minor as dm prints them, so tables compare exactly. */
  private async normalise(t: DmTable): Promise<DmTable> {
    if (t.kind === 'linear' && t.device.startsWith('/'))
      return { ...t, device: await this.deviceNumber(t.device) };
    return t;
  }
}

/** A table the caller may load (types.ts `dmTableSchema`): refused before anything runs. */
function validTable(table: DmTable): DmTable {
  const r = dmTableSchema.safeParse(table);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new DmInvalidTableError(
      `table.${issue?.path.join('.') || 'kind'}: ${issue?.message ?? 'invalid'} (${JSON.stringify(table).slice(0, 200)})`,
    );
  }
  return table;
}

/**
 * The text handed to dmsetup. Defence in depth over `validTable`: a linear or error table is
 * one line, and none of its fields may carry a blank or a newline, which would add arguments or
 * whole segments to what dm loads.
 */
function tableText(table: DmTable): string {
  const t = validTable(table);
  if (t.kind !== 'other') {
    for (const [field, value] of Object.entries(t)) {
      if (/\s/.test(String(value)))
        throw new DmInvalidTableError(
          `table.${field}: must not contain blanks or newlines (${JSON.stringify(value)})`,
        );
    }
  }
  const text = formatTable(t);
  if (t.kind !== 'other' && text.indexOf('\n') !== text.length - 1)
    throw new DmInvalidTableError(`table: must be one line, got ${JSON.stringify(text)}`);
  return text;
}

function validName(name: string): string {
  const r = persistentNameSchema.safeParse(name);
  if (!r.success)
    throw new DmInvalidTableError(
      `name: ${r.error.issues[0]?.message ?? 'invalid'} (${JSON.stringify(name)})`,
    );
  return r.data;
}

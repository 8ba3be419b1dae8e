import { persistentNameSchema } from '../domain/naming.js';
import type { CommandRunner } from './exec.js';
import { localRunner } from './exec.js';
import {
  DmBusyError,
  DmConflictError,
  DmError,
  DmInvalidTableError,
  classifyDmFailure,
} from './dm-errors.js';
import { formatTable, parseInfoColumns, parseLs, parseTable } from './dm-parse.js';
import type { DeviceMapperApi, DmDeviceInfo, DmTable } from './types.js';

/** dm UUID prefix of the devices we create: ownership is explicit, never guessed from names. */
export const DM_UUID_PREFIX = 'VOLLIFE-';

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
    const n = name;
    const args = [
      'info',
      '-c',
      '--noheadings',
      '--separator',
      '|',
      '-o',
      'name,open,attr,major,minor,uuid',
      n,
    ];
    const r = await this.runner.run('dmsetup', args);
    if (r.exitCode !== 0) {
      if (/does not exist|No such device/i.test(r.stderr)) return undefined;
      throw classifyDmFailure(args, r.stderr, r.exitCode);
    }
    const cols = parseInfoColumns(r.stdout.split('\n')[0] ?? '');
    const table = parseTable(await this.dmsetup(['table', n]));
    return { ...cols, exists: true, table };
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
    if (r.exitCode !== 0) throw new DmError(`cannot stat ${devicePath}: ${r.stderr.trim()}`);
    const [maj, min, type] = r.stdout.trim().split(':');
    if (type !== 'block special file')
      throw new DmInvalidTableError(`${devicePath} is not a block device (${type})`);
    return `${parseInt(maj!, 16)}:${parseInt(min!, 16)}`;
  }

  async sectorsOf(devicePath: string): Promise<number> {
    const r = await this.runner.run('blockdev', ['--getsz', devicePath]);
    if (r.exitCode !== 0) throw new DmError(`blockdev --getsz ${devicePath}: ${r.stderr.trim()}`);
    const n = Number(r.stdout.trim());
    if (!Number.isSafeInteger(n) || n <= 0)
      throw new DmInvalidTableError(`${devicePath} has no usable size (${r.stdout.trim()})`);
    return n;
  }

  async ensureLinear(name: string, devicePath: string) {
    const [device, sectors] = await Promise.all([this.deviceNumber(devicePath), this.sectorsOf(devicePath)]);
    return this.ensureTable(name, { kind: 'linear', sectors, device, offset: 0 });
  }

  async ensureError(name: string, sectors: number) {
    if (!Number.isSafeInteger(sectors) || sectors <= 0)
      throw new DmInvalidTableError(`sectors: must be > 0, got ${sectors}`);
    return this.ensureTable(name, { kind: 'error', sectors });
  }

  /**
   * Make `name` carry exactly `table`: create it (tagged with our dm UUID) if missing, otherwise
   * reload + resume when the table differs. A reload keeps the same /dev/dm-N, so open NBD
   * connections stay on the device and see the new table after the resume.
   */
  async ensureTable(name: string, table: DmTable): Promise<{ changed: boolean; previous?: DmTable }> {
    const n = validName(name);
    const wanted = await this.normalise(table);
    const current = await this.info(n);
    if (!current) {
      try {
        await this.dmsetup(['create', n, '--uuid', DM_UUID_PREFIX + n], formatTable(wanted));
      } catch (err) {
        // Lost race with a retried attempt of ourselves: the device now exists; converge below.
        if (!(err instanceof DmBusyError) || !(await this.info(n))) throw err;
        return this.ensureTable(n, wanted);
      }
      return { changed: true };
    }
    // Already as wanted: success, whoever owns it (e.g. an undo of a step that changed nothing).
    if (sameTable(current.table, wanted) && !current.suspended) {
      return { changed: false, previous: current.table };
    }
    if (!current.uuid.startsWith(DM_UUID_PREFIX)) {
      // Someone else's device under our name (LVM, an operator, another tool): never hijack it.
      throw new DmConflictError(
        `dm device ${n} exists but is not ours (uuid ${JSON.stringify(current.uuid)}); rename or remove it, then retry`,
      );
    }
    if (!sameTable(current.table, wanted)) await this.dmsetup(['reload', n], formatTable(wanted));
    await this.dmsetup(['resume', n]);
    return { changed: true, previous: current.table };
  }

  async suspend(name: string): Promise<void> {
    await this.dmsetup(['suspend', validName(name)]);
  }
  async resume(name: string): Promise<void> {
    await this.dmsetup(['resume', validName(name)]);
  }

  /** Remove; missing → success. Busy → retries, then deferred removal (gone at last close). */
  async remove(name: string): Promise<{ removed: boolean; deferred: boolean }> {
    const n = validName(name);
    for (let attempt = 1; ; attempt++) {
      const info = await this.info(n);
      if (!info) return { removed: false, deferred: false };
      if (!info.uuid.startsWith(DM_UUID_PREFIX))
        throw new DmConflictError(
          `dm device ${n} is not ours (uuid ${JSON.stringify(info.uuid)}): not removing it`,
        );
      try {
        await this.dmsetup(['remove', n]);
        return { removed: true, deferred: false };
      } catch (err) {
        if (!(err instanceof DmBusyError)) {
          if (err instanceof DmError && /does not exist|No such device/i.test(err.message)) {
            return { removed: false, deferred: false };
          }
          throw err;
        }
        if (attempt >= this.removeAttempts) break;
        await new Promise((r) => setTimeout(r, this.removeRetryDelayMs * attempt));
      }
    }
    await this.dmsetup(['remove', '--deferred', n]);
    return { removed: true, deferred: true };
  }

  /** Paths are resolved to major:minor as dm prints them, so tables compare exactly. */
  private async normalise(t: DmTable): Promise<DmTable> {
    if (t.kind === 'linear' && t.device.startsWith('/'))
      return { ...t, device: await this.deviceNumber(t.device) };
    return t;
  }
}

function sameTable(a: DmTable, b: DmTable): boolean {
  if (a.kind !== b.kind || a.sectors !== b.sectors) return false;
  if (a.kind === 'linear' && b.kind === 'linear') return a.device === b.device && a.offset === b.offset;
  if (a.kind === 'other' && b.kind === 'other') return a.raw.trim() === b.raw.trim();
  return true;
}

function validName(name: string): string {
  const r = persistentNameSchema.safeParse(name);
  if (!r.success)
    throw new DmInvalidTableError(
      `name: ${r.error.issues[0]?.message ?? 'invalid'} (${JSON.stringify(name)})`,
    );
  return r.data;
}

import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { HypervisorBackend } from '../../harness/cloudstack-sim/index.js';
import type { CommandRunner } from '../../src/command/runner.js';

/**
 * Stand-ins for what this host's kernel lacks (no device-mapper here), for the benchmark and the
 * host-side saga tests that need hundreds of disks or fast faults (the lab runs the real kernel):
 * a hypervisor that makes virtio disks appear in a prepared sysfs tree, as the kernel would, and
 * a runner that answers dmsetup/stat/blockdev like the real tools from an in-memory table (which,
 * like the kernel's, outlives any worker). Never used by the product.
 */
export class SysfsTreeHypervisor implements HypervisorBackend {
  private readonly byVolume = new Map<string, string>();
  private next = 0;
  constructor(private readonly sys: string) {}
  async attach(a: { volumeId: string; serial: string; sizeBytes: number }): Promise<void> {
    if (this.byVolume.has(a.volumeId)) return;
    const name = `vd${letters(this.next++)}`;
    const tmp = path.join(this.sys, `.${name}`);
    await mkdir(tmp, { recursive: true });
    await writeFile(path.join(tmp, 'serial'), `${a.serial}\n`);
    await writeFile(path.join(tmp, 'size'), `${a.sizeBytes / 512}\n`);
    await rename(tmp, path.join(this.sys, 'block', name));
    this.byVolume.set(a.volumeId, name);
  }
  async detach(a: { volumeId: string }): Promise<void> {
    const name = this.byVolume.get(a.volumeId);
    if (name) await rm(path.join(this.sys, 'block', name), { recursive: true, force: true });
    this.byVolume.delete(a.volumeId);
  }
}

function letters(n: number): string {
  let s = '';
  n += 1;
  while (n > 0) {
    n -= 1;
    s = String.fromCharCode(97 + (n % 26)) + s;
    n = Math.floor(n / 26);
  }
  return s;
}

/** Inverse of letters(): 'a' → 0, 'z' → 25, 'aa' → 26. */
function diskIndex(l: string): number {
  let n = 0;
  for (const c of l) n = n * 26 + (c.charCodeAt(0) - 96);
  return n - 1;
}

export class MemoryDmRunner implements CommandRunner {
  readonly devices = new Map<string, { table: string; uuid: string }>();
  private readonly faults: { cmd: string; count: number; stderr: string }[] = [];
  constructor(private readonly sys: string) {}
  /** The next `count` `dmsetup <cmd>` calls fail with `stderr` (as the kernel's EBUSY would). */
  failNext(cmd: string, count: number, stderr: string): void {
    this.faults.push({ cmd, count, stderr });
  }
  clearFaults(): void {
    this.faults.length = 0;
  }
  /** Faults not yet consumed. */
  pendingFaults(): number {
    return this.faults.reduce((n, f) => n + f.count, 0);
  }
  async run(file: string, args: readonly string[], opts: { input?: string } = {}) {
    const ok = (stdout = '') => ({ stdout, stderr: '', exitCode: 0 });
    const fail = (stderr: string) => ({ stdout: '', stderr, exitCode: 1 });
    const fault = file === 'dmsetup' ? this.faults.find((f) => f.cmd === args[0] && f.count > 0) : undefined;
    if (fault) {
      fault.count--;
      return fail(fault.stderr);
    }
    if (file === 'stat') {
      // virtio-blk numbering: vda = 254:0, vdb = 254:16, …, vdaa = 254:416 (16 minors a disk).
      const dev = path.basename(args[args.length - 1]!);
      return ok(`fe:${(diskIndex(dev.slice(2)) * 16).toString(16)}:block special file\n`);
    }
    if (file === 'blockdev') {
      if (args[0] === '--flushbufs')
        return this.devices.has(path.basename(args[1]!)) ? ok() : fail('No such device');
      const { readFile } = await import('node:fs/promises');
      const dev = path.basename(args[args.length - 1]!);
      return ok(await readFile(path.join(this.sys, 'block', dev, 'size'), 'utf8'));
    }
    const [cmd, ...rest] = args;
    const name = rest.find((a) => !a.startsWith('-') && !a.includes('|') && !/^(name|VOLLIFE)/.test(a)) ?? '';
    const d = this.devices.get(name);
    switch (cmd) {
      case 'ls':
        return this.devices.size
          ? ok([...this.devices.keys()].map((n) => `${n}\t(254:0)`).join('\n'))
          : ok('No devices found\n');
      case 'info':
        return d ? ok(`${name}|0|L--w|254|0|${d.uuid}\n`) : fail('Device does not exist.\nCommand failed.\n');
      case 'table':
        return d ? ok(d.table) : fail('Device does not exist.');
      case 'create': {
        const uuid = rest[rest.indexOf('--uuid') + 1] ?? '';
        this.devices.set(name, { table: opts.input ?? '', uuid });
        return ok();
      }
      case 'reload':
        if (!d) return fail('device-mapper: reload ioctl failed: No such device or address');
        d.table = opts.input ?? '';
        return ok();
      case 'resume':
      case 'suspend':
      case 'clear':
      case 'message': // @cancel_deferred_remove: no removal is ever pending here
        return d ? ok() : fail('Device does not exist.\nCommand failed.\n');
      case 'remove':
        this.devices.delete(rest[rest.length - 1]!);
        return ok();
    }
    return fail(`unsupported: ${cmd}`);
  }
}

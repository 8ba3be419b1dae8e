/**
 * DeviceMapper against a REAL kernel device-mapper: the class runs here, every dmsetup / stat /
 * blockdev argv runs inside the appliance-lab guest through `lab.runner` (qemu-ga). Loop devices
 * and a hot-plugged virtio disk (with a CloudStack-style serial) stand in for /dev/vdX.
 * Slow (boots a VM): ~30-60 s.
 */
import assert from 'node:assert/strict';
import { mkdtemp, open, rm, truncate } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startLab, type GuestProcess, type Lab } from '../../harness/lab/index.js';
import { DeviceMapper } from '../../src/device/devicemapper.js';
import { DmInvalidTableError, DmPermissionError } from '../../src/device/dm-errors.js';
import type { CommandRunner } from '../../src/command/runner.js';

const SECTORS = 32768; // 16 MiB loop files
const SERIAL = '5c0ffee0d15c0000aa11';

/** 4 KiB of printable bytes (the runner's stdin/stdout are strings), distinct per seed. */
function pattern(seed: number): string {
  let s = '';
  for (let i = 0; i < 4096; i++) s += String.fromCharCode(33 + ((i * 7 + seed * 13) % 94));
  return s;
}

describe('device-mapper on a real kernel (appliance lab)', { timeout: 600_000 }, () => {
  let lab: Lab;
  let dm: DeviceMapper;
  let hostDir: string;
  let guestDir: string;
  const loops: string[] = [];
  const holders: GuestProcess[] = [];

  const exec = (argv: string[], input?: string) => lab.exec(argv, input === undefined ? {} : { input });
  const ok = (argv: string[], input?: string) => lab.execOk(argv, input === undefined ? {} : { input });
  const read4k = (dev: string) =>
    exec(['dd', `if=${dev}`, 'bs=4096', 'count=1', 'iflag=direct', 'status=none']);
  const write4k = (dev: string, data: string) =>
    ok(
      [
        'dd',
        `of=${dev}`,
        'bs=4096',
        'count=1',
        'iflag=fullblock',
        'oflag=direct',
        'conv=fsync',
        'status=none',
      ],
      data,
    );
  /**
   * Hold the device open, argv only: flock opens it and keeps the fd while sleep runs; `--close`
   * keeps it out of sleep, so killing flock is the last close.
   */
  async function hold(dev: string, name: string): Promise<GuestProcess> {
    const p = await lab.spawnInGuest(['flock', '--shared', '--close', dev, 'sleep', '600']);
    holders.push(p);
    for (let i = 0; i < 100; i++) {
      if (((await dm.info(name))?.openCount ?? 0) >= 1) return p;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`${dev} never became open`);
  }
  async function waitGone(name: string) {
    for (let i = 0; i < 100; i++) {
      if (!(await dm.info(name))) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`${name} still exists`);
  }
  const state = async (name: string) => /State:\s+(.*)/.exec(await ok(['dmsetup', 'info', name]))?.[1];

  before(async () => {
    hostDir = await mkdtemp(path.join(os.tmpdir(), 'vl-dm-lab-'));
    lab = await startLab({ temporal: false });
    dm = new DeviceMapper({ runner: lab.runner, removeAttempts: 3, removeRetryDelayMs: 100 });
    guestDir = (await ok(['mktemp', '-d', '/tmp/vl-dm-XXXXXX'])).trim();
    for (const f of ['a.img', 'b.img']) {
      await ok(['truncate', '-s', `${SECTORS * 512}`, `${guestDir}/${f}`]);
      loops.push((await ok(['losetup', '-f', '--show', `${guestDir}/${f}`])).trim());
    }
    await write4k(loops[0]!, pattern(1));
    await write4k(loops[1]!, pattern(2));
  });

  after(async () => {
    for (const h of holders) await h.kill('KILL').catch(() => {});
    await lab?.close();
    await rm(hostDir, { recursive: true, force: true });
  });

  it('starts with no dm devices ("No devices found" → [])', async () => {
    assert.deepEqual(await dm.list(), []);
  });

  it('ensureLinear creates a linear map over the whole device; again → unchanged', async () => {
    const first = await dm.ensureLinear('labdisk0', loops[0]!);
    assert.deepEqual(first, { changed: true });
    const majMin = (await ok(['lsblk', '-dno', 'MAJ:MIN', loops[0]!])).trim();
    assert.equal(await ok(['dmsetup', 'table', 'labdisk0']), `0 ${SECTORS} linear ${majMin} 0\n`);
    const info = await dm.info('labdisk0');
    assert.equal(info?.uuid, 'VOLLIFE-labdisk0');
    assert.equal(info?.suspended, false);
    assert.deepEqual(info?.table, { kind: 'linear', sectors: SECTORS, device: majMin, offset: 0 });
    assert.equal((await dm.ensureLinear('labdisk0', loops[0]!)).changed, false);
    assert.deepEqual(await dm.list(), ['labdisk0']);
  });

  it('data written through /dev/mapper/<name> lands on the device and reads back', async () => {
    const data = pattern(3);
    await write4k('/dev/mapper/labdisk0', data);
    assert.equal((await read4k(loops[0]!)).stdout, data);
    assert.equal((await read4k('/dev/mapper/labdisk0')).stdout, data);
  });

  it('reload to another device while a holder keeps it open: same dm device, new data', async () => {
    const before = await dm.info('labdisk0');
    const holder = await hold('/dev/mapper/labdisk0', 'labdisk0');
    const out = await dm.ensureLinear('labdisk0', loops[1]!);
    assert.equal(out.changed, true);
    assert.equal(out.previous?.kind, 'linear');
    const after = await dm.info('labdisk0');
    assert.equal(after?.minor, before?.minor, 'reload keeps /dev/dm-N');
    assert.ok((after?.openCount ?? 0) >= 1, 'holder still has it open');
    assert.equal((await holder.status()).exited, false);
    assert.equal(
      (await read4k('/dev/mapper/labdisk0')).stdout,
      pattern(2),
      'reads now come from the second device',
    );
  });

  it('ensureError: same size, reads fail with EIO, the device and its holder stay', async () => {
    const out = await dm.ensureError('labdisk0', SECTORS);
    assert.equal(out.changed, true);
    assert.equal(out.previous?.kind, 'linear');
    assert.match(await ok(['dmsetup', 'table', 'labdisk0']), new RegExp(`^0 ${SECTORS} error\\s*$`));
    const r = await read4k('/dev/mapper/labdisk0');
    assert.notEqual(r.exitCode, 0);
    assert.match(r.stderr, /Input\/output error/);
    assert.equal((await dm.ensureError('labdisk0', SECTORS)).changed, false);
    // Compensation: restore exactly the previous table.
    assert.equal((await dm.ensureTable('labdisk0', out.previous!)).changed, true);
    assert.equal((await read4k('/dev/mapper/labdisk0')).stdout, pattern(2));
  });

  it('a reload interrupted before its resume (suspended, stale inactive table) is repaired, not swapped in', async () => {
    await ok(['dmsetup', 'reload', 'labdisk0'], `0 ${SECTORS} error\n`);
    await ok(['dmsetup', 'suspend', 'labdisk0']);
    const stale = await dm.info('labdisk0');
    assert.equal(stale?.suspended, true);
    assert.equal(stale?.inactiveTable, true);
    await dm.ensureLinear('labdisk0', loops[1]!); // the live table is already this one
    const fixed = await dm.info('labdisk0');
    assert.equal(fixed?.suspended, false);
    assert.equal(fixed?.inactiveTable, false);
    assert.equal(fixed?.table.kind, 'linear');
    assert.equal((await read4k('/dev/mapper/labdisk0')).stdout, pattern(2));
  });

  it('remove while held open → retries, then deferred; a later ensure cancels the deferral', async () => {
    const out = await dm.remove('labdisk0');
    assert.deepEqual(out, { removed: true, deferred: true });
    assert.match((await state('labdisk0')) ?? '', /DEFERRED REMOVE/);
    // Re-attach under the same name before the last close: the device must not vanish later.
    assert.equal((await dm.ensureLinear('labdisk0', loops[0]!)).changed, true);
    assert.equal(await state('labdisk0'), 'ACTIVE');
    assert.deepEqual(await dm.remove('labdisk0'), { removed: true, deferred: true });
    for (const h of holders.splice(0)) await h.kill('KILL');
    await waitGone('labdisk0'); // the kernel removes it at the last close
    assert.deepEqual(await dm.remove('labdisk0'), { removed: false, deferred: false });
  });

  it('remove of an idle device is immediate', async () => {
    await dm.ensureError('labdisk1', 8);
    assert.deepEqual(await dm.remove('labdisk1'), { removed: true, deferred: false });
    assert.equal(await dm.info('labdisk1'), undefined);
  });

  it('a hot-plugged virtio disk (dynamic major, stat prints hex) maps by major:minor', async () => {
    const file = path.join(hostDir, 'vol.img');
    await (await open(file, 'w')).close();
    await truncate(file, 32 * 1024 * 1024);
    await lab.hotplug({ id: 'dmvol', file, serial: SERIAL });
    const kname = await lab.waitForGuestDisk(SERIAL, 30_000);
    const dev = `/dev/${kname}`;
    const majMin = (await ok(['lsblk', '-dno', 'MAJ:MIN', dev])).trim();
    assert.equal(await dm.deviceNumber(dev), majMin);
    assert.equal(await dm.sectorsOf(dev), 65536);
    await dm.ensureLinear('labvol0', dev);
    assert.equal(await ok(['dmsetup', 'table', 'labvol0']), `0 65536 linear ${majMin} 0\n`);
    assert.equal((await dm.ensureLinear('labvol0', dev)).changed, false);
    // Failover: the volume leaves the appliance; the map turns into an error target first.
    await dm.ensureError('labvol0', 65536);
    await lab.unplug('dmvol');
    await lab.waitForGuestDiskGone(SERIAL, 30_000);
    assert.notEqual((await read4k('/dev/mapper/labvol0')).exitCode, 0);
    assert.deepEqual(await dm.remove('labvol0'), { removed: true, deferred: false });
  });

  it("the kernel's refusals become typed errors", async () => {
    await assert.rejects(
      dm.ensureTable('labdisk2', { kind: 'other', sectors: 8, raw: '0 8 no-such-target' }),
      (e: unknown) => e instanceof DmInvalidTableError && !e.retryable,
    );
    assert.equal(await dm.info('labdisk2'), undefined, 'a failed create leaves nothing behind');
    const unprivileged: CommandRunner = {
      run: (file, args, opts) =>
        lab.runner.run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', file, ...args], opts),
    };
    await assert.rejects(
      new DeviceMapper({ runner: unprivileged }).list(),
      (e: unknown) => e instanceof DmPermissionError && !e.retryable,
    );
  });
});

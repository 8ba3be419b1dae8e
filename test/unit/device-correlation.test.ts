/**
 * Correlation over a prepared sysfs + /dev tree in a temp dir, shaped like the kernel's
 * (/sys/block/vdX/{serial,size}, /dev/vdX, /dev/disk/by-id/virtio-<serial> → ../../vdX).
 * Each test gets its own tree, so the cases do not depend on one another.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rename, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import {
  CorrelationError,
  CorrelationTimeoutError,
  DeviceStillPresentError,
  SysfsCorrelator,
} from '../../src/device/correlation.js';

const roots: string[] = [];
after(() => Promise.all(roots.map((r) => rm(r, { recursive: true, force: true }))));

async function tree() {
  const root = await mkdtemp(path.join(os.tmpdir(), 'vl-sysfs-'));
  roots.push(root);
  const sys = path.join(root, 'sys');
  const dev = path.join(root, 'dev');
  await mkdir(path.join(sys, 'block'), { recursive: true });
  await mkdir(path.join(dev, 'disk', 'by-id'), { recursive: true });
  return {
    sys,
    dev,
    corr: (o: { heartbeatMs?: number } = {}) =>
      new SysfsCorrelator({ sysfsRoot: sys, devRoot: dev, pollMs: 20, ...o }),
    /** A disk appears atomically (sysfs dir renamed into place), then its /dev node. */
    async addDisk(name: string, serial: string | null, sectors = 2048) {
      const tmp = path.join(root, `.${name}`);
      await mkdir(tmp, { recursive: true });
      if (serial !== null) await writeFile(path.join(tmp, 'serial'), `${serial}\n`);
      await writeFile(path.join(tmp, 'size'), `${sectors}\n`);
      await rename(tmp, path.join(sys, 'block', name));
      await writeFile(path.join(dev, name), '');
    },
    async removeDisk(name: string) {
      await rm(path.join(sys, 'block', name), { recursive: true });
      await rm(path.join(dev, name), { force: true });
    },
    byId: (serial: string, name: string) =>
      symlink(`../../${name}`, path.join(dev, 'disk', 'by-id', `virtio-${serial}`)),
  };
}

const A = 'aaaaaaaaaaaaaaaaaaaa';
const B = 'bbbbbbbbbbbbbbbbbbbb';
const C = 'cccccccccccccccccccc';

test('finds a disk by its sysfs serial (authoritative)', async () => {
  const t = await tree();
  await t.addDisk('vda', null); // the root disk: no serial
  await t.addDisk('vdb', A);
  // A stale by-id link pointing elsewhere must not win over sysfs.
  await t.byId(A, 'vda');
  assert.deepEqual(await t.corr().findBySerial(A), {
    devicePath: path.join(t.dev, 'vdb'),
    kernelName: 'vdb',
    serial: A,
    sizeBytes: 2048 * 512,
    method: 'sysfs-serial',
  });
  assert.deepEqual(await t.corr().listDevices(), ['vda', 'vdb']);
  assert.deepEqual(
    (await t.corr().describeDevices()).map((d) => [d.kernelName, d.serial]),
    [['vdb', A]],
  );
  assert.equal(await t.corr().findBySerial(C), undefined);
});

test('falls back to /dev/disk/by-id/virtio-<serial> when sysfs has no serial', async () => {
  const t = await tree();
  await t.addDisk('vdc', null, 4096);
  await t.byId(B, 'vdc');
  const d = await t.corr().findBySerial(B);
  assert.equal(d?.kernelName, 'vdc');
  assert.equal(d?.method, 'by-id');
  assert.equal(d?.sizeBytes, 4096 * 512);
});

test('a disk that appeared since the attach began wins over one from before showing the same serial', async () => {
  const t = await tree();
  await t.addDisk('vda', null);
  await t.addDisk('vdb', A); // from before: the kernel has not let go of it yet
  const before = await t.corr().listDevices();
  await t.addDisk('vdc', A);
  const d = await t.corr().waitForDevice({ serial: A, devicesBefore: before, timeoutMs: 1000 });
  assert.equal(d.kernelName, 'vdc');
  assert.equal(d.method, 'sysfs-serial');
  // Already there before (an attach of a disk the appliance has): found among the old ones.
  const again = await t
    .corr()
    .waitForDevice({ serial: A, devicesBefore: ['vda', 'vdb', 'vdc'], timeoutMs: 1000 });
  assert.equal(again.kernelName, 'vdb');
});

test('degraded fallback: the one new disk without a serial', async () => {
  const t = await tree();
  await t.addDisk('vda', null);
  const before = await t.corr().listDevices();
  await t.addDisk('vdb', A); // new, but carries another volume's serial: not a candidate
  await t.addDisk('vdc', null);
  const d = await t.corr().waitForDevice({ serial: C, devicesBefore: before, timeoutMs: 1000 });
  assert.equal(d.kernelName, 'vdc');
  assert.equal(d.method, 'new-device-fallback');
  assert.equal(d.serial, C);
});

test('degraded fallback fails on no new disk (timeout) and on two (refuses to guess)', async () => {
  const t = await tree();
  await t.addDisk('vda', null);
  const before = await t.corr().listDevices();
  await assert.rejects(
    t.corr().waitForDevice({ serial: C, devicesBefore: before, timeoutMs: 100 }),
    CorrelationTimeoutError,
  );
  await t.addDisk('vdb', null);
  await t.addDisk('vdc', null);
  await assert.rejects(
    t.corr().waitForDevice({ serial: C, devicesBefore: before, timeoutMs: 1000 }),
    (e: unknown) => {
      assert.ok(e instanceof CorrelationError);
      assert.match(e.message, /refusing to guess/);
      assert.match(e.message, /vdb, vdc/);
      return true;
    },
  );
});

test("a size different from CloudStack's is an error, not a guess", async () => {
  const t = await tree();
  await t.addDisk('vdb', A, 2048);
  await assert.rejects(
    t.corr().waitForDevice({ serial: A, expectedSizeBytes: 4096 * 512, timeoutMs: 200 }),
    (e: unknown) => {
      assert.ok(e instanceof CorrelationError);
      assert.equal(e.retryable, false);
      assert.match(e.message, /1048576 bytes, CloudStack says 2097152/);
      return true;
    },
  );
  const ok = await t.corr().waitForDevice({ serial: A, expectedSizeBytes: 2048 * 512, timeoutMs: 200 });
  assert.equal(ok.kernelName, 'vdb');
});

test('waits for a disk that appears later, resolves it after it appears, heartbeating meanwhile', async () => {
  const t = await tree();
  await t.addDisk('vda', null);
  const beats: [number, string[]][] = [];
  let createdAt = 0;
  // The disk appears a little later, from a timer (as a hot-plug would).
  setTimeout(() => {
    createdAt = performance.now();
    void t.addDisk('vdd', B, 4096);
  }, 150);
  const d = await t.corr({ heartbeatMs: 20 }).waitForDevice({
    serial: B,
    timeoutMs: 10_000,
    onWaiting: (ms, seen) => beats.push([ms, seen]),
  });
  const resolvedAt = performance.now();
  assert.equal(d.kernelName, 'vdd');
  assert.equal(d.sizeBytes, 4096 * 512);
  assert.ok(createdAt > 0 && resolvedAt >= createdAt, 'resolved only after the disk was created');
  assert.ok(beats.length >= 1, 'heartbeat while waiting');
  assert.deepEqual(beats[0]![1], ['vda'], 'heartbeat reports the devices seen');
});

test('times out with a typed error naming the serial, the wait and the devices seen', async () => {
  const t = await tree();
  await t.addDisk('vda', null);
  await t.addDisk('vdb', A);
  await assert.rejects(t.corr().waitForDevice({ serial: C, timeoutMs: 150 }), (e: unknown) => {
    assert.ok(e instanceof CorrelationTimeoutError);
    assert.equal(e.serial, C);
    assert.deepEqual(e.seen, ['vda', 'vdb']);
    assert.ok(e.waitedMs >= 150);
    assert.match(e.message, new RegExp(C));
    assert.match(e.message, /within \d+ ms/);
    assert.match(e.message, /vda \(no serial\), vdb \(serial a{20}\)/);
    assert.equal(e.retryable, false);
    return true;
  });
});

test('abort stops a wait at once, and an already-aborted signal never starts one', async () => {
  const t = await tree();
  const ac = new AbortController();
  const p = t.corr().waitForDevice({ serial: C, timeoutMs: 60_000, signal: ac.signal });
  setTimeout(() => ac.abort(new Error('cancelled by test')), 30);
  await assert.rejects(p, /cancelled by test/);
  await assert.rejects(
    t.corr().waitForDevice({ serial: C, timeoutMs: 60_000, signal: AbortSignal.abort(new Error('pre')) }),
    /pre/,
  );
  await assert.rejects(t.corr().waitForGone(C, 60_000, AbortSignal.abort(new Error('pre-gone'))), /pre-gone/);
});

test('waitForGone returns once the disk is removed; a disk that stays is a typed error', async () => {
  const t = await tree();
  await t.addDisk('vdb', A);
  await t.addDisk('vdc', B);
  setTimeout(() => void t.removeDisk('vdb'), 50);
  await t.corr().waitForGone(A, 5000);
  assert.equal(await t.corr().findBySerial(A), undefined);
  await t.corr().waitForGone(C, 100); // never there: immediate success
  await assert.rejects(t.corr().waitForGone(B, 100), (e: unknown) => {
    assert.ok(e instanceof DeviceStillPresentError);
    assert.match(e.message, /vdc with serial b{20} still present/);
    return true;
  });
});

import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, symlink, writeFile, rename } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { CorrelationError, CorrelationTimeoutError, SysfsCorrelator } from '../../src/device/correlation.js';

/** A prepared sysfs + /dev tree, shaped like the kernel's (the lab runs the same code for real). */
let root: string;
let sys: string;
let dev: string;
before(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'vl-sysfs-'));
  sys = path.join(root, 'sys');
  dev = path.join(root, 'dev');
  await mkdir(path.join(sys, 'block'), { recursive: true });
  await mkdir(path.join(dev, 'disk', 'by-id'), { recursive: true });
});
after(() => rm(root, { recursive: true, force: true }));

/** Appear atomically, as the kernel's sysfs entries do. */
async function addDisk(name: string, serial: string | null, sectors = 2048) {
  const tmp = path.join(root, `.${name}`);
  await mkdir(tmp, { recursive: true });
  if (serial !== null) await writeFile(path.join(tmp, 'serial'), `${serial}\n`);
  await writeFile(path.join(tmp, 'size'), `${sectors}\n`);
  await rename(tmp, path.join(sys, 'block', name));
}
const corr = () => new SysfsCorrelator({ sysfsRoot: sys, devRoot: dev, pollMs: 20 });

test('finds by sysfs serial first, then by the by-id link', async () => {
  await addDisk('vda', 'aaaaaaaaaaaaaaaaaaaa');
  assert.deepEqual(await corr().findBySerial('aaaaaaaaaaaaaaaaaaaa'), {
    devicePath: path.join(dev, 'vda'),
    kernelName: 'vda',
    serial: 'aaaaaaaaaaaaaaaaaaaa',
    sizeBytes: 2048 * 512,
    method: 'sysfs-serial',
  });
  await addDisk('vdb', null);
  await symlink('../../vdb', path.join(dev, 'disk', 'by-id', 'virtio-bbbbbbbbbbbbbbbbbbbb'));
  const byId = await corr().findBySerial('bbbbbbbbbbbbbbbbbbbb');
  assert.equal(byId?.kernelName, 'vdb');
  assert.equal(byId?.method, 'by-id');
  assert.equal(await corr().findBySerial('cccccccccccccccccccc'), undefined);
  assert.deepEqual(await corr().listDevices(), ['vda', 'vdb']);
});

test('waits for a device that appears later and resolves it, heartbeating meanwhile', async () => {
  const beats: number[] = [];
  const waiting = corr().waitForDevice({
    serial: 'dddddddddddddddddddd',
    timeoutMs: 10_000,
    onWaiting: (ms) => beats.push(ms),
  });
  let resolved = false;
  void waiting.then(() => (resolved = true));
  await new Promise((r) => setTimeout(r, 1200));
  assert.equal(resolved, false, 'not resolved before the device exists');
  await addDisk('vdd', 'dddddddddddddddddddd', 4096);
  const d = await waiting;
  assert.equal(d.kernelName, 'vdd');
  assert.equal(d.sizeBytes, 4096 * 512);
  assert.ok(beats.length >= 1, 'heartbeat while waiting');
});

test('times out with the serial, the wait and the devices seen', async () => {
  await assert.rejects(
    corr().waitForDevice({ serial: 'eeeeeeeeeeeeeeeeeeee', timeoutMs: 200 }),
    (e: unknown) => {
      assert.ok(e instanceof CorrelationTimeoutError);
      assert.match(e.message, /eeeeeeeeeeeeeeeeeeee/);
      assert.match(e.message, /vda/);
      assert.equal(e.retryable, false);
      return true;
    },
  );
});

test("a size different from CloudStack's is an error, not a guess", async () => {
  await assert.rejects(
    corr().waitForDevice({ serial: 'aaaaaaaaaaaaaaaaaaaa', expectedSizeBytes: 1, timeoutMs: 200 }),
    CorrelationError,
  );
});

test('degraded fallback: exactly one new device without a serial; none or two fail', async () => {
  const before = await corr().listDevices();
  await assert.rejects(
    corr().waitForDevice({ serial: 'ffffffffffffffffffff', devicesBefore: before, timeoutMs: 150 }),
    CorrelationTimeoutError,
  );
  await addDisk('vdf', null);
  const d = await corr().waitForDevice({
    serial: 'ffffffffffffffffffff',
    devicesBefore: before,
    timeoutMs: 1000,
  });
  assert.equal(d.kernelName, 'vdf');
  assert.equal(d.method, 'new-device-fallback');
  await addDisk('vdg', null);
  await assert.rejects(
    corr().waitForDevice({ serial: 'ffffffffffffffffffff', devicesBefore: before, timeoutMs: 500 }),
    /refusing to guess/,
  );
});

test('abort stops the wait; waitForGone returns once the device is removed', async () => {
  const ac = new AbortController();
  const p = corr().waitForDevice({ serial: '00000000000000000000', timeoutMs: 10_000, signal: ac.signal });
  ac.abort(new Error('cancelled by test'));
  await assert.rejects(p, /cancelled by test/);
  const gone = corr().waitForGone('aaaaaaaaaaaaaaaaaaaa', 5000);
  await rm(path.join(sys, 'block', 'vda'), { recursive: true });
  await gone;
  await assert.rejects(corr().waitForGone('dddddddddddddddddddd', 150), /still present/);
});

import assert from 'node:assert/strict';
import { engineExportNameOf } from '../../src/domain/device-names.js';
import { after, before, test } from 'node:test';
import { diskSerialFor } from '../../src/cloudstack/serial.js';
import { listExports as dbExports } from '../../src/db/exports.js';
import { getMapping } from '../../src/db/mappings.js';
import { listReconcileFindings } from '../../src/db/reconcile.js';
import { qemuDeviceIdFor } from '../../harness/lab/index.js';
import { GUEST_EXPORTS_DIR } from '../../harness/lab/stack.js';
import { DEFAULT_NBDKIT_PID_FILE } from '../../src/nbd/index.js';
import { isAlive } from '../../src/nbd/process.js';
import { DRIFT_KINDS, type DriftKind } from '../../src/reconcile/drift.js';
import { reconcileNow } from '../../src/reconcile/schedule.js';
import type { ReconcileResult } from '../../workflows/reconcile.js';
import { assertConsistent, nbdkitPid as nbdkitPidOf, qemuIo } from '../support/checks.js';
import { startLabStack, type LabStack } from '../support/lab-stack.js';

/**
 * The drift kinds that test/lab/reconcile.lab.test.ts does not create, each created behind the
 * sagas' backs on the real component it lives in — the guest kernel's dm tables, nbdkit's export
 * directory and the nbdkit process itself, the hypervisor (QMP hot-unplug), the simulator's
 * CloudStack state — then one reconcile pass that repairs it (state fixed, consistent) or
 * reports it (nothing touched, the remedy given), and, once the drift is gone (repaired, or fixed
 * by hand the way the remedy says), a pass that finds nothing.
 */
let s: LabStack;
before(async () => (s = await startLabStack('recondrift')));
after(() => s?.close());

const SECTORS = 2 ** 21; // every volume here is 1 GiB
const SOURCE_VM = 'drift';

interface Attached {
  volumeId: string;
  diskKey: number;
  name: string;
  exportName: string;
  devicePath: string;
}

let disk = 0;
async function attached(): Promise<Attached> {
  const volumeId = await s.createVolume();
  const diskKey = 2000 + disk++;
  const r = await (
    await s.volumes.attach({ applianceVmId: s.applianceVmId, volumeId, sourceVmName: SOURCE_VM, diskKey })
  ).result();
  return {
    volumeId,
    diskKey,
    name: r.access!.persistentName,
    exportName: r.access!.exportName,
    devicePath: r.access!.devicePath,
  };
}

type Run = ReconcileResult & { runId: string };
async function reconcile(dryRun = false): Promise<Run> {
  const run = await reconcileNow(s.temporal, {
    applianceVmId: s.applianceVmId,
    taskQueuePrefix: s.prefix,
    backend: 'nbdkit-dir',
    dryRun,
    correlationTimeoutMs: 30_000,
  });
  return { ...(await run.result()), runId: run.runId };
}
const kinds = (r: ReconcileResult) => r.findings.map((f) => `${f.kind}:${f.outcome}`).sort();
const only = (r: ReconcileResult, kind: DriftKind) => {
  const f = r.findings.filter((x) => x.kind === kind);
  assert.equal(f.length, 1, `one ${kind} finding: ${JSON.stringify(r.findings)}`);
  return f[0]!;
};

/** A command in the appliance that must succeed; its stdout. */
const guest = (file: string, args: string[]) => s.lab.execOk([file, ...args], { timeoutMs: 60_000 });

async function until(what: string, cond: () => Promise<boolean>, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`${what}: not after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** `major:minor` of a guest block device, as dm tables print it. */
async function devNumber(devicePath: string): Promise<string> {
  const [maj, min] = (await guest('stat', ['-L', '-c', '%t:%T', devicePath]))
    .trim()
    .split(':')
    .map((h) => parseInt(h, 16));
  return `${maj}:${min}`;
}

/**
 * Everything a repair could change: every dm table in the kernel, every export link, every
 * mapping row (with its compare-and-swap version). Equal before and after = nothing touched.
 */
async function deviceLayer(): Promise<string> {
  const tables = (await guest('dmsetup', ['table'])).trim().split('\n').sort();
  const links = (await guest('find', [GUEST_EXPORTS_DIR, '-maxdepth', '1', '-printf', '%f %y %l\\n']))
    .trim()
    .split('\n')
    .sort();
  const [rows] = await s.db.pool.query(
    'SELECT volume_id, location, target_vm_id, device_path, dm_state, version FROM device_mappings ORDER BY volume_id',
  );
  return JSON.stringify({ tables, links, rows }, null, 1);
}

/** The remedy is recorded with the finding, not only returned. */
async function recordedRemedy(run: Run, kind: DriftKind): Promise<string> {
  const rows = await listReconcileFindings(s.db.pool, run.runId);
  const mine = rows.filter((r) => r.kind === kind);
  assert.ok(mine.length > 0, `${kind} recorded for run ${run.runId}`);
  return mine[0]!.remedy ?? '';
}

const reads = async (exportName: string, pattern: number) =>
  qemuIo(s.nbdUri(exportName), `read -P 0x${pattern.toString(16)} 0 4k`);
const READ_OK = /read 4096\/4096 bytes/;

// --- the NBD server (nbdkit, started by the host worker's supervisor) --------------------------

const nbdkitPid = (pidFile: string) => nbdkitPidOf(s, pidFile);

/** Stop one nbdkit by its PID (never by name), and wait until it is gone and the port is closed. */
async function stopNbdkit(pid: number): Promise<void> {
  await guest('kill', ['-TERM', String(pid)]);
  await until(`nbdkit ${pid} exits`, async () => !(await isAlive(s.lab.runner, pid)));
  await until('the NBD port refuses', () =>
    s.servedExports().then(
      () => false,
      () => true,
    ),
  );
}

// -------------------------------------------------------------------------------------------------

test('a dm table over another volume’s disk, a linear table while failed over, an export pointing elsewhere: repaired, then nothing', async () => {
  const a = await attached();
  const b = await attached();
  const c = await attached();
  for (const [v, p] of [
    [a, 0xa1],
    [b, 0xb2],
    [c, 0xc3],
  ] as const) {
    assert.match(await qemuIo(s.nbdUri(v.exportName), `write -P 0x${p.toString(16)} 0 4k`), /wrote 4096/);
  }
  const fo = await s.volumes.failover({
    applianceVmId: s.applianceVmId,
    volumeId: c.volumeId,
    targetVmId: s.targetVmId,
  });
  assert.equal((await fo.result()).location, 'target');
  assert.equal(await s.dmTable(c.name), `0 ${SECTORS} error`);

  // Behind the sagas' backs, with dmsetup in the appliance:
  // A's table over B's disk (dm-wrong-device) …
  await guest('dmsetup', ['reload', a.name, '--table', `0 ${SECTORS} linear ${b.devicePath} 0`]);
  await guest('dmsetup', ['resume', a.name]);
  // … C, failed over to the target VM, linear again over a present disk, B's (dm-linear-while-away) …
  await guest('dmsetup', ['reload', c.name, '--table', `0 ${SECTORS} linear ${b.devicePath} 0`]);
  await guest('dmsetup', ['resume', c.name]);
  // … and B's export link repointed at A's dm device (export-wrong-target).
  await guest('ln', ['-sfn', `/dev/mapper/${a.name}`, `${GUEST_EXPORTS_DIR}/${b.exportName}`]);

  // The drift is real on the data path: A's and C's exports serve B's data.
  assert.match(await reads(a.exportName, 0xb2), READ_OK);
  assert.match(await reads(c.exportName, 0xb2), READ_OK);

  const bDev = await devNumber(b.devicePath);
  const dry = await reconcile(true);
  assert.deepEqual(kinds(dry), [
    'dm-linear-while-away:dry-run',
    'dm-wrong-device:dry-run',
    'export-wrong-target:dry-run',
  ]);
  const wrong = only(dry, 'dm-wrong-device');
  assert.equal(wrong.volumeId, a.volumeId);
  assert.deepEqual(wrong.details, { tableDevice: bDev, wanted: a.devicePath });
  assert.equal(only(dry, 'dm-linear-while-away').volumeId, c.volumeId);
  const target = only(dry, 'export-wrong-target');
  assert.equal(target.subject, b.exportName);
  assert.deepEqual(target.details, { configuredTarget: `/dev/mapper/${a.name}` });
  assert.equal(await s.dmTable(a.name), `0 ${SECTORS} linear ${bDev} 0`, 'a dry run changes nothing');

  const r = await reconcile();
  assert.deepEqual(kinds(r), [
    'dm-linear-while-away:repaired',
    'dm-wrong-device:repaired',
    'export-wrong-target:repaired',
  ]);
  assert.equal(await s.dmTable(a.name), `0 ${SECTORS} linear ${await devNumber(a.devicePath)} 0`);
  assert.equal(await s.dmTable(c.name), `0 ${SECTORS} error`);
  assert.equal(
    (await guest('readlink', [`${GUEST_EXPORTS_DIR}/${b.exportName}`])).trim(),
    `/dev/mapper/${b.name}`,
  );
  await assertConsistent(s, 'after repair');
  // Each export serves its own volume again; the failed-over one answers I/O errors.
  assert.match(await reads(a.exportName, 0xa1), READ_OK);
  assert.match(await reads(b.exportName, 0xb2), READ_OK);
  assert.match(await reads(c.exportName, 0xc3), /Input\/output error|read failed/i);
  assert.deepEqual(kinds(await reconcile()), [], 'a second run finds nothing');
});

test('our dm device with no row but open (a device stacked on it) is reported, never removed; once the client is gone it is removed', async () => {
  await guest('dmsetup', ['create', 'ghostdisk8', '--uuid', 'VOLLIFE-ghostdisk8', '--table', '0 8 zero']);
  // The client: another dm device stacked on it (not ours: no VOLLIFE- uuid) holds it open.
  await guest('dmsetup', ['create', 'ghostholder', '--table', '0 8 linear /dev/mapper/ghostdisk8 0']);
  const before = await deviceLayer();

  const r = await reconcile();
  assert.deepEqual(kinds(r), ['dm-orphan-open:reported']);
  const f = only(r, 'dm-orphan-open');
  assert.equal(f.subject, 'ghostdisk8');
  assert.equal(f.volumeId, null);
  assert.match(f.remedy, /open by 1 client\(s\): stop the client/);
  assert.equal(await recordedRemedy(r, 'dm-orphan-open'), f.remedy);
  assert.equal(await deviceLayer(), before, 'reported only: nothing touched');

  // The remedy: stop the client; the next reconcile removes the orphan, and then nothing is left.
  await guest('dmsetup', ['remove', 'ghostholder']);
  assert.deepEqual(kinds(await reconcile()), ['dm-orphan:removed']);
  assert.equal(await s.dmTable('ghostdisk8'), null);
  await assertConsistent(s, 'after the orphan went');
  assert.deepEqual(kinds(await reconcile()), []);
});

test('a disk unplugged at the hypervisor behind CloudStack’s back is reported device-missing; detach + attach again, then nothing', async () => {
  const d = await attached();
  const serial = diskSerialFor(d.volumeId);
  // QMP device_del of the volume's virtio disk: the guest loses it, CloudStack still has it attached.
  await s.lab.unplug(qemuDeviceIdFor(d.volumeId), { timeoutMs: 120_000 });
  await s.lab.waitForGuestDiskGone(serial, 120_000);
  assert.equal((await s.cs.getVolume(d.volumeId))?.virtualmachineid, s.applianceVmId);
  const before = await deviceLayer();

  const r = await reconcile();
  assert.deepEqual(kinds(r), ['device-missing:reported']);
  const f = only(r, 'device-missing');
  assert.equal(f.volumeId, d.volumeId);
  assert.ok(f.remedy.includes(`no block device carries serial ${serial}`), f.remedy);
  assert.match(f.remedy, /detach and attach it again/);
  assert.equal(await recordedRemedy(r, 'device-missing'), f.remedy);
  assert.equal(await deviceLayer(), before, 'reported only: the dm table is not guessed at');

  // The remedy, through the product: detach it and attach it again.
  await (await s.volumes.detach({ applianceVmId: s.applianceVmId, volumeId: d.volumeId })).result();
  const again = await (
    await s.volumes.attach({
      applianceVmId: s.applianceVmId,
      volumeId: d.volumeId,
      sourceVmName: SOURCE_VM,
      diskKey: d.diskKey,
    })
  ).result();
  assert.equal(again.access!.persistentName, d.name);
  await assertConsistent(s, 'after detach + attach');
  assert.deepEqual(kinds(await reconcile()), []);
});

test('a volume detached in CloudStack behind our back is reported as a location mismatch; attach finishes it, then nothing', async () => {
  const e = await attached();
  // Through the simulator's API (which hot-unplugs the disk): CloudStack detached, database appliance.
  await s.cs.detachVolume(e.volumeId);
  await s.lab.waitForGuestDiskGone(diskSerialFor(e.volumeId), 120_000);
  assert.equal((await getMapping(s.db.pool, e.volumeId))?.location, 'appliance');
  const before = await deviceLayer();

  const r = await reconcile();
  assert.deepEqual(kinds(r), ['cloudstack-location-mismatch:reported']);
  const f = only(r, 'cloudstack-location-mismatch');
  assert.equal(f.volumeId, e.volumeId);
  assert.match(
    f.remedy,
    /database says "appliance", CloudStack says detached: finish the interrupted operation/,
  );
  assert.deepEqual(f.details, { dbLocation: 'appliance', csAttachedTo: null });
  assert.equal(await recordedRemedy(r, 'cloudstack-location-mismatch'), f.remedy);
  assert.equal(await deviceLayer(), before, 'reported only: nothing touched');

  // The remedy: finish the operation so both agree — the database says appliance, so attach.
  await (
    await s.volumes.attach({
      applianceVmId: s.applianceVmId,
      volumeId: e.volumeId,
      sourceVmName: SOURCE_VM,
      diskKey: e.diskKey,
    })
  ).result();
  assert.equal((await s.cs.getVolume(e.volumeId))?.virtualmachineid, s.applianceVmId);
  await assertConsistent(s, 'after attach');
  assert.deepEqual(kinds(await reconcile()), []);
});

test('a volume deleted in CloudStack behind our back is reported missing; the delete operation clears it, then nothing', async () => {
  const f0 = await attached();
  await s.cs.detachVolume(f0.volumeId);
  await s.cs.deleteVolume(f0.volumeId);
  assert.equal(await s.cs.getVolume(f0.volumeId), undefined, 'CloudStack no longer knows the volume');
  const before = await deviceLayer();

  const r = await reconcile();
  assert.deepEqual(kinds(r), ['cloudstack-volume-missing:reported']);
  const f = only(r, 'cloudstack-volume-missing');
  assert.equal(f.volumeId, f0.volumeId);
  assert.match(f.remedy, /run the delete operation to remove its mapping and export/);
  assert.equal(await recordedRemedy(r, 'cloudstack-volume-missing'), f.remedy);
  assert.equal(await deviceLayer(), before, 'reported only: mapping, dm device and export stay');

  // The remedy: the delete operation.
  await (await s.volumes.delete({ applianceVmId: s.applianceVmId, volumeId: f0.volumeId })).result();
  assert.equal(await getMapping(s.db.pool, f0.volumeId), undefined, 'its mapping is gone');
  assert.equal(await s.dmTable(f0.name), null);
  assert.ok(!(await s.servedExports()).includes(f0.exportName));
  await assertConsistent(s, 'after delete');
  assert.deepEqual(kinds(await reconcile()), []);
});

test('the NBD server down is reported; started again by the backend supervisor, then nothing', async () => {
  const pid = await nbdkitPid(DEFAULT_NBDKIT_PID_FILE);
  await stopNbdkit(pid);
  let restarted = false;
  try {
    const before = await deviceLayer();
    const r = await reconcile();
    // With no listing there is nothing to compare exports against: only the server is reported.
    assert.deepEqual(kinds(r), ['nbd-server-down:reported']);
    const f = only(r, 'nbd-server-down');
    assert.match(f.remedy, /nbdkit did not answer an export listing: restart the appliance host worker/);
    assert.equal(await recordedRemedy(r, 'nbd-server-down'), f.remedy);
    assert.equal(await deviceLayer(), before, 'reported only: nothing touched');

    // The remedy: the backend supervisor starts nbdkit (the host worker's does at start).
    await s.restartHostWorker();
    restarted = true;
  } finally {
    if (!restarted) await s.restartHostWorker(); // leave a serving appliance to the next test
  }
  assert.notEqual(await nbdkitPid(DEFAULT_NBDKIT_PID_FILE), pid, 'a new nbdkit');
  await assertConsistent(s, 'after the server was started again');
  assert.deepEqual(kinds(await reconcile()), []);
});

/**
 * With nbdkit-dir, nbdkit re-reads the exports directory on every listing, so neither drift
 * below can come from the product's own operations: a server in memory always equals the
 * directory. Both arise when the server on the port is not serving that directory — here, as
 * on an appliance where an nbdkit of an earlier install (another exports dir) kept the port.
 * (The nbd-server flavour of served-stale, a removed export kept in memory, is nbd-server's.)
 */
test('an nbdkit serving another directory: configured exports not served and a stale one served are reported; the right server again, then nothing', async () => {
  const STALE_DIR = '/run/vl-old-install/exports';
  const STALE_PID = '/run/vl-old-install/nbdkit.pid';
  await stopNbdkit(await nbdkitPid(DEFAULT_NBDKIT_PID_FILE));
  await guest('mkdir', ['-p', STALE_DIR]);
  await guest('truncate', ['-s', '1M', `${STALE_DIR}/migration-vol-olddisk1`]);
  await guest('nbdkit', ['-P', STALE_PID, '-i', '0.0.0.0', '-p', '10809', 'file', `dir=${STALE_DIR}`]);
  const stalePid = await nbdkitPid(STALE_PID);
  try {
    await until('the old nbdkit answers', () =>
      s.servedExports().then(
        (l) => l.includes('migration-vol-olddisk1'),
        () => false,
      ),
    );
    // Each export under both its names: the persistent one and the engine's.
    const configured = (await dbExports(s.db.pool, { applianceVmId: s.applianceVmId }))
      .flatMap((e) => [e.exportName, engineExportNameOf(e.volumeId)])
      .sort();
    assert.ok(configured.length >= 3, `exports to miss: ${configured.join()}`);
    const before = await deviceLayer();

    const r = await reconcile();
    assert.deepEqual(
      kinds(r),
      [...configured.map(() => 'export-not-served:reported'), 'served-stale:reported'].sort(),
    );
    const notServed = r.findings.filter((x) => x.kind === 'export-not-served');
    assert.deepEqual(notServed.map((x) => x.subject).sort(), configured);
    for (const x of notServed) {
      assert.match(
        x.remedy,
        /^nbdkit does not list migration-vol-[\w-]+: check that \/dev\/mapper\/\w+ exists and nbdkit runs with dir= on the exports directory$/,
      );
    }
    const stale = only(r, 'served-stale');
    assert.equal(stale.subject, 'migration-vol-olddisk1');
    assert.match(
      stale.remedy,
      /nbdkit lists migration-vol-olddisk1 but the exports directory has no link for it/,
    );
    assert.equal(await recordedRemedy(r, 'served-stale'), stale.remedy);
    assert.ok(await recordedRemedy(r, 'export-not-served'));
    assert.equal(await deviceLayer(), before, 'reported only: nothing touched');

    // The remedy: restart the NBD server — stop the old one, the supervisor starts ours.
    await stopNbdkit(stalePid);
    await s.restartHostWorker();
    await nbdkitPid(DEFAULT_NBDKIT_PID_FILE);
    await assertConsistent(s, 'after the right server was started');
    assert.deepEqual(kinds(await reconcile()), []);
  } finally {
    if (await isAlive(s.lab.runner, stalePid)) await guest('kill', ['-KILL', String(stalePid)]);
    await guest('rm', ['-rf', '/run/vl-old-install']);
  }
});

/** Created on real components by test/lab/reconcile.lab.test.ts. */
const COVERED_THERE: DriftKind[] = [
  'dm-missing',
  'dm-error-while-attached',
  'export-missing',
  'dm-orphan',
  'export-orphan',
  'unnamed-volume',
  'cloudstack-unknown-vm',
];
const COVERED_HERE: [DriftKind, string][] = [
  ['dm-wrong-device', 'repaired'],
  ['dm-linear-while-away', 'repaired'],
  ['export-wrong-target', 'repaired'],
  ['dm-orphan-open', 'reported'],
  ['device-missing', 'reported'],
  ['cloudstack-location-mismatch', 'reported'],
  ['cloudstack-volume-missing', 'reported'],
  ['nbd-server-down', 'reported'],
  ['export-not-served', 'reported'],
  ['served-stale', 'reported'],
];

/**
 * The engine's database drifts without any kernel in it: each kind is created on real MariaDB and
 * repaired through a real repair saga by test/integration/engine-database.test.ts, the cheapest
 * tier that proves it.
 */
const COVERED_IN_INTEGRATION: DriftKind[] = DRIFT_KINDS.filter((k) => k.startsWith('engine-'));

test('every drift kind is created on real components by one of the two reconcile lab files, and recorded here', async () => {
  assert.deepEqual(
    [...COVERED_THERE, ...COVERED_HERE.map(([k]) => k), ...COVERED_IN_INTEGRATION].sort(),
    [...DRIFT_KINDS].sort(),
    'a new drift kind needs a lab test',
  );
  const [rows] = await s.db.pool.query(
    'SELECT DISTINCT kind, outcome FROM reconcile_findings WHERE remedy <> "" ORDER BY kind',
  );
  const recorded = new Set(
    (rows as { kind: string; outcome: string }[]).map((x) => `${x.kind}:${x.outcome}`),
  );
  for (const [k, outcome] of COVERED_HERE)
    assert.ok(recorded.has(`${k}:${outcome}`), `${k}:${outcome} recorded`);
});

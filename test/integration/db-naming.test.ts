import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import type { RowDataPacket } from 'mysql2';
import {
  assignName,
  DiskAlreadyMappedError,
  getMapping,
  MappingMismatchError,
  NameCollisionError,
  NameUnknownError,
  releaseName,
  type AssignNameInput,
} from '../../src/db/mappings.js';
import { listSteps, recordOperationStart } from '../../src/db/operations.js';
import { normalizeVmName, persistentNameFor } from '../../src/domain/naming.js';
import type { ApplicationFailure } from '@temporalio/common';
import { createControlActivities } from '../../activities/control/index.js';
import type { CloudStackApi } from '../../src/cloudstack/types.js';
import { freshDatabase } from '../support/db.js';

let db: Awaited<ReturnType<typeof freshDatabase>>;
before(async () => (db = await freshDatabase('naming')));
after(async () => db?.close());

const APPLIANCE = '3f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b';
const input = (vm: string, disk: number, volumeId: string = randomUUID()): AssignNameInput => ({
  volumeId,
  sourceVmName: normalizeVmName(vm),
  diskIndex: disk,
  applianceVmId: APPLIANCE,
  virtioSerial: volumeId.replace(/-/g, '').slice(0, 20),
  sizeBytes: 1 << 30,
  operationId: randomUUID(),
});

test('a name is assigned once and never changes; the same request again is idempotent', async () => {
  const req = input('stable1', 0);
  const first = await assignName(db.pool, req);
  assert.equal(first.created, true);
  assert.equal(first.mapping.persistentName, 'stable1disk0');
  const again = await assignName(db.pool, { ...req, operationId: randomUUID() });
  assert.equal(again.created, false);
  assert.equal(again.mapping.persistentName, 'stable1disk0');
  const unnamed = { ...req, operationId: randomUUID(), sourceVmName: undefined, diskIndex: undefined };
  assert.equal(
    (await assignName(db.pool, unnamed)).mapping.persistentName,
    'stable1disk0',
    'no naming: kept',
  );
});

test('the column compares as the code does: NO PAD (a PAD SPACE collation would find "padvm " here)', async () => {
  await assignName(db.pool, input('padvm', 0));
  const [rows] = await db.pool.query<RowDataPacket[]>(
    'SELECT COUNT(*) AS n FROM device_mappings WHERE source_vm_name = ?',
    ['padvm '],
  );
  assert.equal(Number(rows[0]!.n), 0);
  // Two rows whose names differ only by a trailing space can coexist under the UNIQUE index.
  await db.pool.query(
    `INSERT INTO device_mappings (volume_id, source_vm_name, disk_index, appliance_vm_id, virtio_serial, size_bytes)
     VALUES (?, 'padvm ', 0, ?, 'x', 1)`,
    [randomUUID(), APPLIANCE],
  );
});

test('a re-attach naming another VM or key is refused, naming both', async () => {
  const req = input('gamma', 3);
  await assignName(db.pool, req);
  for (const [vm, disk] of [
    ['GAMMA', 3],
    ['gamma', 4],
  ] as const) {
    const err = await assignName(db.pool, { ...input(vm, disk, req.volumeId) }).catch((e: Error) => e);
    assert.ok(err instanceof MappingMismatchError, String(err));
    assert.match(err.message, /VM "gamma" disk key 2003 \(disk 3\)/);
    assert.match(err.message, new RegExp(`VM "${vm}" disk key ${2000 + disk}`));
  }
  assert.equal((await getMapping(db.pool, req.volumeId))!.persistentName, 'gammadisk3', 'unchanged');
});

test('the same VM disk on two volumes is refused with the caller’s key and the other volume', async () => {
  const first = input('dupvm', 1);
  await assignName(db.pool, first);
  const err = await assignName(db.pool, input('dupvm', 1)).catch((e: Error) => e);
  assert.ok(err instanceof DiskAlreadyMappedError);
  assert.match(err.message, /VM "dupvm" disk key 2001 \(disk 1\) is already mapped to volume/);
  assert.ok(err.message.includes(first.volumeId));
});

test('a name another rule assigned (old daemon, import) is kept, and a new VM computing it is refused at once', async () => {
  const legacyVolume = randomUUID();
  await db.pool.query(
    `INSERT INTO device_mappings (volume_id, source_vm_name, disk_index, appliance_vm_id, virtio_serial, size_bytes,
       persistent_device_name, mapper_path)
     VALUES (?, 'Legacy-VM', 0, ?, 'y', 1, 'legacydisk0', '/dev/mapper/legacydisk0')`,
    [legacyVolume, APPLIANCE],
  );
  const kept = await assignName(db.pool, {
    ...input('Legacy-VM', 0, legacyVolume),
  });
  assert.equal(kept.mapping.persistentName, 'legacydisk0', 'old names are kept as they are');
  const t0 = Date.now();
  const err = await assignName(db.pool, input('legacy', 0)).catch((e: Error) => e);
  assert.ok(err instanceof NameCollisionError, String(err));
  assert.match(
    err.message,
    /"legacydisk0" of VM "legacy" .* held by volume .* \(VM "Legacy-VM" disk key 2000/,
  );
  assert.ok(Date.now() - t0 < 2000, 'permanent: no retrying');
});

test('without naming: the engine’s volume name gives it, anything else is refused saying what to send', async () => {
  const vol = randomUUID();
  const named = await assignName(db.pool, {
    ...input('x', 0, vol),
    sourceVmName: undefined,
    diskIndex: undefined,
    volumeName: 'migration-enginevm-enginevm-disk-1',
  });
  assert.equal(named.mapping.persistentName, 'enginevmdisk1');
  assert.equal(named.mapping.sourceVmName, 'enginevm');
  const err = await assignName(db.pool, {
    ...input('x', 0),
    sourceVmName: undefined,
    diskIndex: undefined,
    volumeName: 'DATA-7',
  }).catch((e: Error) => e);
  assert.ok(err instanceof NameUnknownError);
  assert.match(err.message, /send the VM name and disk key .* "DATA-7" is not of the form/);
});

test('releasing a name only deletes a row this operation created and left untouched', async () => {
  const req = input('rel', 0);
  await assignName(db.pool, req);
  assert.equal(await releaseName(db.pool, req.volumeId, randomUUID()), false, 'other operation: kept');
  assert.ok(await getMapping(db.pool, req.volumeId));
  assert.equal(await releaseName(db.pool, req.volumeId, req.operationId), true);
  assert.equal(await getMapping(db.pool, req.volumeId), undefined);
});

// The hostile set: all clean to `pgtest3`. With the old rule the first to commit took
// `pgtest3disk0`; now each name is its own, whatever the order.
const STORM_VMS = [
  'pgtest3',
  'PG_TEST3',
  'pg-test3',
  'pg.test3',
  'pgtest3 ', // the same VM as pgtest3 once trimmed: its attaches must be refused as the same disks
  'ｐｇｔｅｓｔ３',
  'Pg Test3',
  'pg__test3',
  'p-g-test3',
];

function shuffled<T>(xs: T[], seed: string): T[] {
  const key = (x: T, i: number) =>
    createHash('sha256')
      .update(`${seed}:${i}:${String(x)}`)
      .digest('hex');
  return xs
    .map((x, i) => ({ x, k: key(x, i) }))
    .sort((a, b) => a.k.localeCompare(b.k))
    .map((e) => e.x);
}

async function storm(order: string) {
  const fresh = await freshDatabase(`storm${order}`);
  try {
    // One volume id per (raw VM, disk): the same in both runs, so results compare one by one.
    const requests = STORM_VMS.flatMap((vm, v) =>
      [0, 1, 2, 3, 4, 5].map((disk) => ({
        ...input(vm, disk, `00000000-0000-4000-8000-${String(v * 10 + disk).padStart(12, '0')}`),
        operationId: randomUUID(),
      })),
    );
    const results = await Promise.all(
      shuffled(requests, order).map(async (r) => {
        try {
          return [r.volumeId, String((await assignName(fresh.pool, r)).mapping.persistentName)] as const;
        } catch (err) {
          return [
            r.volumeId,
            `refused:${(err as Error).name}${(err as Error).name === 'DiskAlreadyMapped' ? '' : ':' + (err as Error).message}`,
          ] as const;
        }
      }),
    );
    return new Map(results);
  } finally {
    await fresh.close();
  }
}

test('collision storm: 54 concurrent attaches, two fresh databases, two orders, the same names one by one', async () => {
  const a = await storm('a');
  const b = await storm('b');
  const index = (volume: string) => Number(volume.slice(-12));
  const twins = new Set([0, 4]); // 'pgtest3' and 'pgtest3 ': one VM once trimmed
  for (const [volume, name] of a) {
    const v = index(volume);
    const vm = normalizeVmName(STORM_VMS[Math.floor(v / 10)]!);
    if (!twins.has(Math.floor(v / 10))) {
      // Every disk of a distinct VM is named by the rule, never refused, in both databases.
      assert.equal(name, persistentNameFor(vm, v % 10), volume);
      assert.equal(b.get(volume), name, `volume ${volume}: same name in both databases`);
    } else {
      // Of the twins, whichever commits first holds the disk and the other is refused; the
      // disk's *name* is the same either way.
      assert.ok(name === `pgtest3disk${v % 10}` || name === 'refused:DiskAlreadyMapped', name);
    }
  }
  for (const run of [a, b]) {
    const names = [...run.values()].filter((n) => !n.startsWith('refused'));
    assert.equal(names.length, 48, '8 distinct VMs × 6 disks named');
    assert.equal(new Set(names).size, 48, 'all distinct');
    assert.deepEqual(
      [...run.values()].filter((n) => n.startsWith('refused')),
      Array(6).fill('refused:DiskAlreadyMapped'),
    );
  }
});

test('every database step a saga runs as a local activity is safe to run twice; a CAS re-run accepts only its own write', async () => {
  // A local activity re-runs when the worker dies after it acted but before its workflow task
  // completed: the second run must give the first run's answer, not a conflict.
  const cloudstack = new Proxy({} as CloudStackApi, {
    get: () => () => Promise.reject(new Error('no CloudStack call expected')),
  });
  const acts = createControlActivities({ cloudstack, db: db.pool });
  const req = input('rerun1', 0);
  const named = await acts.dbAssignName(req);
  assert.deepEqual((await acts.dbAssignName(req)).mapping, named.mapping, 'assign-name again: same row');

  const update = {
    volumeId: req.volumeId,
    expectedVersion: named.mapping.version,
    operationId: req.operationId,
    patch: { location: 'appliance', devicePath: '/dev/vdb', dmState: 'linear' } as const,
  };
  const first = await acts.dbUpdateMapping(update);
  assert.equal(first.version, named.mapping.version + 1);
  assert.deepEqual(await acts.dbUpdateMapping(update), first, 'record-mapping again: its own write');
  await assert.rejects(
    acts.dbUpdateMapping({ ...update, operationId: randomUUID() }),
    (e: ApplicationFailure) => e.type === 'StaleMapping',
    'another operation at the same version is a conflict',
  );
  await acts.dbClearStaleDevicePath({ devicePath: '/dev/vdc', exceptVolumeId: req.volumeId });
  assert.deepEqual(
    await acts.dbClearStaleDevicePath({ devicePath: '/dev/vdc', exceptVolumeId: req.volumeId }),
    [],
  );
  const exportRow = {
    exportName: 'migration-vol-rerun1disk0',
    volumeId: req.volumeId,
    targetPath: '/dev/mapper/rerun1disk0',
    configPath: '/etc/nbd-server/conf.d/migration-vol-rerun1disk0.conf',
    backend: 'nbd-server',
    status: 'active',
  } as const;
  await acts.dbUpsertExport(exportRow);
  await acts.dbUpsertExport(exportRow);
  assert.deepEqual(await acts.dbGetExport(req.volumeId), exportRow);

  // Undo, twice: the row is back as it was, once.
  await acts.dbRestoreMapping({ before: named.mapping, operationId: req.operationId });
  const restored = (await getMapping(db.pool, req.volumeId))!;
  await acts.dbRestoreMapping({ before: named.mapping, operationId: req.operationId });
  assert.deepEqual(await getMapping(db.pool, req.volumeId), restored, 'restore again changes nothing');
  assert.equal(restored.location, named.mapping.location);
  assert.equal(restored.devicePath, named.mapping.devicePath);
  await assert.rejects(
    acts.dbUpdateMapping(update),
    (e: ApplicationFailure) => e.type === 'StaleMapping',
    'its own write, overwritten since, is no longer accepted',
  );

  assert.equal(await acts.dbDeleteExport({ volumeId: req.volumeId }), true);
  assert.equal(await acts.dbDeleteExport({ volumeId: req.volumeId }), false);
  assert.equal(await acts.dbReleaseName({ volumeId: req.volumeId, operationId: req.operationId }), true);
  assert.equal(await acts.dbReleaseName({ volumeId: req.volumeId, operationId: req.operationId }), false);
  assert.equal(await getMapping(db.pool, req.volumeId), undefined);
});

test("a step's database write records the step in its own transaction: with the write, once when run twice, never with a refused or failed write", async () => {
  const cloudstack = new Proxy({} as CloudStackApi, {
    get: () => () => Promise.reject(new Error('no CloudStack call expected')),
  });
  const acts = createControlActivities({ cloudstack, db: db.pool });
  const req = input('carried1', 0);
  const operationId = req.operationId;
  await recordOperationStart(db.pool, {
    operationId,
    workflowId: `volume:${req.volumeId}`,
    runId: randomUUID(),
    type: 'attach',
    volumeId: req.volumeId,
    vmId: null,
    request: {},
  });
  const startedAt = new Date().toISOString();
  const audit = (seq: number, step: string) => ({ operationId, seq, step, startedAt });
  const rows = async () =>
    (await listSteps(db.pool, operationId)).map((s) => `${s.seq}:${s.step}:${s.status}`);

  // Each write, run twice (a local activity re-runs after its worker died): its row, once.
  const named = await acts.dbAssignName({ ...req, audit: audit(2, 'assign-name') });
  await acts.dbAssignName({ ...req, audit: audit(2, 'assign-name') });
  assert.deepEqual(await rows(), ['2:assign-name:completed']);

  // A refusal writes nothing: neither the row nor its step's audit row.
  await assert.rejects(
    acts.dbAssignName({ ...req, diskIndex: 1, audit: audit(3, 'assign-name') }),
    (e: ApplicationFailure) => e.type === 'MappingMismatch',
  );
  const update = {
    volumeId: req.volumeId,
    expectedVersion: named.mapping.version,
    operationId,
    patch: { location: 'appliance', devicePath: '/dev/vdb', dmState: 'linear' } as const,
  };
  await assert.rejects(
    acts.dbUpdateMapping({
      ...update,
      expectedVersion: update.expectedVersion + 5,
      audit: audit(4, 'record-mapping'),
    }),
    (e: ApplicationFailure) => e.type === 'StaleMapping',
  );
  assert.deepEqual(await rows(), ['2:assign-name:completed'], 'no row for a write that did not happen');

  await acts.dbClearStaleDevicePath({
    devicePath: '/dev/vdb',
    exceptVolumeId: req.volumeId,
    audit: audit(5, 'resolve-conflicts'),
  });
  await acts.dbClearStaleDevicePath({
    devicePath: '/dev/vdb',
    exceptVolumeId: req.volumeId,
    audit: audit(5, 'resolve-conflicts'),
  });
  const first = await acts.dbUpdateMapping({ ...update, audit: audit(7, 'record-mapping') });
  assert.deepEqual(
    await acts.dbUpdateMapping({ ...update, audit: audit(7, 'record-mapping') }),
    first,
    'its own write, accepted again',
  );
  const exportRow = {
    exportName: 'migration-vol-carried1disk0',
    volumeId: req.volumeId,
    targetPath: '/dev/mapper/carried1disk0',
    configPath: '/srv/nbd-exports/migration-vol-carried1disk0',
    backend: 'nbdkit-dir',
    status: 'active',
  } as const;
  await acts.dbUpsertExport({ ...exportRow, audit: audit(8, 'ensure-export') });
  await acts.dbUpsertExport({ ...exportRow, audit: audit(8, 'ensure-export') });
  assert.deepEqual(
    await acts.dbGetExport(req.volumeId),
    exportRow,
    'the audit row is not part of the export',
  );
  assert.deepEqual(await rows(), [
    '2:assign-name:completed',
    '5:resolve-conflicts:completed',
    '7:record-mapping:completed',
    '8:ensure-export:completed',
  ]);

  // One transaction: a write whose audit row cannot be stored (no such operation) is not done.
  const orphan = { ...audit(9, 'remove-export'), operationId: randomUUID() };
  await assert.rejects(acts.dbDeleteExport({ volumeId: req.volumeId, audit: orphan }));
  assert.deepEqual(await acts.dbGetExport(req.volumeId), exportRow, 'the export row is still there');
  assert.equal(await acts.dbDeleteExport({ volumeId: req.volumeId, audit: audit(9, 'remove-export') }), true);
  assert.equal(await acts.dbDeleteMapping({ volumeId: req.volumeId, audit: audit(10, 'remove-rows') }), true);
  assert.equal(
    await acts.dbDeleteMapping({ volumeId: req.volumeId, audit: audit(10, 'remove-rows') }),
    false,
  );
  assert.equal(await getMapping(db.pool, req.volumeId), undefined);
  const steps = await listSteps(db.pool, operationId);
  assert.deepEqual(steps.map((s) => `${s.seq}:${s.step}:${s.status}`).slice(-2), [
    '9:remove-export:completed',
    '10:remove-rows:completed',
  ]);
  assert.ok(
    steps.every((s) => s.phase === 'forward' && s.finishedAt && s.startedAt.toISOString() === startedAt),
  );

  // A bad audit row is refused by name before anything is written.
  await assert.rejects(
    acts.dbUpsertExport({ ...exportRow, audit: { ...audit(11, 'ensure-export'), step: 'DROP TABLE' } }),
    (e: ApplicationFailure) => e.type === 'InvalidInput' && /audit\.step/.test(e.message),
  );
  assert.equal(await acts.dbGetExport(req.volumeId), null);
});

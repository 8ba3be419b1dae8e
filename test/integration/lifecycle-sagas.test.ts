import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { getExport } from '../../src/db/exports.js';
import { getMapping } from '../../src/db/mappings.js';
import { auditOf, expectFailure } from '../support/saga-state.js';
import { startStandinStack, type StandinStack } from '../support/standin-stack.js';

/**
 * The lifecycle the engine's flows need, saga by saga, over a stood-in appliance kernel (real
 * Temporal, MariaDB, simulator and workers): create (the name is born there), attach with no
 * naming, give the volume to a VM and take it back off, give the OS disk to a stopped VM as its
 * root, and bring everything back to the appliance under the same export. The same flows
 * through the old HTTP contract: engine-contract.test.ts; on a real kernel: the lab.
 */
let s: StandinStack;
before(async () => (s = await startStandinStack('lifecycle')));
after(() => s?.close());

const GiB = 1024 ** 3;
const create = (name: string, extra: Record<string, unknown> = {}) =>
  s.volumes.create({
    applianceVmId: s.applianceVmId,
    name,
    sizeBytes: 5 * GiB + 1, // not whole GiB: rounded up, as CloudStack takes whole GiB
    diskOfferingId: s.sim.offering.id,
    zoneId: s.sim.zone.id,
    ...extra,
  });

test('create: the volume and its name are born together; an attach that names nothing keeps it', async () => {
  const op = await create('migration-lcvm-lcvm-disk-0', { sourceVmName: 'LC VM', diskKey: 2000 });
  const r = await op.result();
  assert.equal(r.type, 'create');
  const volume = (await s.cs.getVolume(r.volumeId))!;
  assert.equal(volume.size, 6 * GiB, '5 GiB + 1 byte → 6 GiB');
  const row = (await getMapping(s.db.pool, r.volumeId))!;
  assert.match(
    row.persistentName!,
    /^lcvm-[0-9a-f]{20}disk0$/,
    'named from the metadata, not the volume name',
  );
  assert.equal(r.persistentName, row.persistentName);
  assert.deepEqual([row.location, row.dmState], ['detached', 'absent']);
  assert.equal((await auditOf(s, r.volumeId, 'create')).op.status, 'completed', 'audit row knows the volume');

  // The same idempotency key again: that operation, not a second volume.
  const retried = await create('migration-lcvm-lcvm-disk-0', {
    sourceVmName: 'LC VM',
    diskKey: 2000,
    operationId: op.operationId,
  });
  assert.equal(retried.deduplicated, true);
  assert.equal((await retried.result()).volumeId, r.volumeId);
  assert.equal((await s.cs.listVolumes({ name: 'migration-lcvm-lcvm-disk-0' })).length, 1);

  const attached = await (
    await s.volumes.attach({ applianceVmId: s.applianceVmId, volumeId: r.volumeId })
  ).result();
  assert.equal(attached.access!.persistentName, row.persistentName);
  assert.equal(attached.access!.mapperPath, `/dev/mapper/${row.persistentName}`);
});

test('create without metadata names by the engine volume name; an unnameable one is refused before CloudStack is called', async () => {
  const r = await (await create('migration-plain7-plain7-disk-3')).result();
  assert.equal((await getMapping(s.db.pool, r.volumeId))!.persistentName, 'plain7disk3');
  const before = (await s.cs.listVolumes({ name: 'DATA-9' })).length;
  const op = await create('DATA-9');
  await expectFailure(op.result(), /nothing says which VM disk it is/);
  assert.equal((await s.cs.listVolumes({ name: 'DATA-9' })).length, before, 'nothing created');
  // The same VM disk again: refused at validate, nothing created.
  await expectFailure(
    (await create('migration-plain7-plain7-disk-3')).result(),
    /VM "plain7" disk key 2003 \(disk 3\) is already mapped to volume/,
  );
  assert.equal((await s.cs.listVolumes({ name: 'migration-plain7-plain7-disk-3' })).length, 1);
});

test('give to a VM and take back off it; the OS disk as root of a stopped VM; back to the appliance, same export', async () => {
  const data = (await (await create('migration-gvm-gvm-disk-1')).result()).volumeId;
  const os = (await (await create('migration-gvm-gvm-disk-0')).result()).volumeId;
  for (const v of [data, os])
    await (await s.volumes.attach({ applianceVmId: s.applianceVmId, volumeId: v })).result();
  const exportOf = async (v: string) => (await getExport(s.db.pool, v))!.exportName;
  const exportsBefore = [await exportOf(data), await exportOf(os)];
  const dest = s.targetVmId;
  const base = { applianceVmId: s.applianceVmId };

  // The engine's failover: detach from the appliance, then attach to the destination.
  await (await s.volumes.detach({ ...base, volumeId: data })).result();
  await (await s.volumes.failover({ ...base, volumeId: data, targetVmId: dest })).result();
  assert.equal((await s.cs.getVolume(data))!.virtualmachineid, dest);
  assert.deepEqual(
    [(await getMapping(s.db.pool, data))!.location, await s.dmTable('gvmdisk1')],
    ['target', '0 12582912 error'],
  );

  // Detach of a volume on the VM it was given to takes it off that VM.
  await (await s.volumes.detach({ ...base, volumeId: data })).result();
  assert.equal((await s.cs.getVolume(data))!.virtualmachineid, undefined);
  assert.equal((await getMapping(s.db.pool, data))!.location, 'detached');

  // Root-disk failover: the VM must be stopped and have no root; CloudStack says so otherwise.
  await (await s.volumes.detach({ ...base, volumeId: os })).result();
  await expectFailure(
    (await s.volumes.failover({ ...base, volumeId: os, targetVmId: dest, asRoot: true })).result(),
    /only when vm is in states: Stopped/,
  );
  s.sim.sim.state.vms.get(dest)!.state = 'Stopped';
  const placeholderRoot = (await s.cs.listVolumes({ virtualmachineid: dest })).find((v) => v.deviceid === 0)!;
  await s.cs.detachVolume(placeholderRoot.id, { fromVmId: dest });
  await (await s.volumes.failover({ ...base, volumeId: os, targetVmId: dest, asRoot: true })).result();
  const asRoot = (await s.cs.getVolume(os))!;
  assert.deepEqual([asRoot.virtualmachineid, asRoot.deviceid, asRoot.type], [dest, 0, 'ROOT']);

  // Back: failback of the root disk (the VM is stopped), attach of the detached data disk.
  await (await s.volumes.failback({ ...base, volumeId: os })).result();
  await (await s.volumes.attach({ ...base, volumeId: data })).result();
  for (const v of [data, os]) {
    const m = (await getMapping(s.db.pool, v))!;
    assert.deepEqual([m.location, m.dmState], ['appliance', 'linear']);
    assert.equal((await s.cs.getVolume(v))!.virtualmachineid, s.applianceVmId);
  }
  assert.deepEqual(
    [await exportOf(data), await exportOf(os)],
    exportsBefore,
    'the export names never changed',
  );
  s.sim.sim.state.vms.get(dest)!.state = 'Running';
});

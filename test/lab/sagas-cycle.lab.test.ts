import assert from 'node:assert/strict';
import { open } from 'node:fs/promises';
import { after, before, test } from 'node:test';
import { getMapping } from '../../src/db/mappings.js';
import { listOperations, listSteps } from '../../src/db/operations.js';
import { assertConsistent, qemuIo } from '../support/checks.js';
import { recordHistory } from '../support/histories.js';
import { startLabStack, type LabStack } from '../support/lab-stack.js';

/**
 * The seed's validation cycle, for a VM with two disks, on real parts: attach both for
 * replication → write a pattern through each export with a real NBD client → failover (the
 * export answers errors, not stale data) → the target VM changes data → failback (a different
 * /dev/vdY) → the same export name serves the changed data → attach again → delete.
 */
let s: LabStack;
before(async () => (s = await startLabStack('cycle')));
after(() => s?.close());

const VM = 'pgtest3';

test('validation cycle: attach → write → failover → target writes → failback → attach → delete', async () => {
  const vols = [await s.createVolume(1), await s.createVolume(1)];
  const base = { applianceVmId: s.applianceVmId };

  // attach both
  const attached = [];
  for (const [i, volumeId] of vols.entries()) {
    const h = await s.volumes.attach({ ...base, volumeId, sourceVmName: VM, diskKey: 2000 + i });
    const r = await h.result();
    await recordHistory(s.temporal, h.workflowId, h.runId, `attach-happy-${i}`);
    assert.equal(r.access?.persistentName, `${VM}disk${i}`);
    assert.equal(r.access?.exportName, `migration-vol-${VM}disk${i}`);
    assert.equal(r.access?.mapperPath, `/dev/mapper/${VM}disk${i}`);
    attached.push(r.access!);
    console.log(
      `attach: ${volumeId} → ${r.access!.devicePath} → ${r.access!.mapperPath} → ${r.access!.exportName}`,
    );
  }
  await assertConsistent(s, 'after attach');

  // replication writes a known pattern through each export
  for (const [i, a] of attached.entries()) {
    const out = await qemuIo(s.nbdUri(a.exportName), `write -P 0x${(0xa0 + i).toString(16)} 0 1M`);
    assert.match(out, /wrote 1048576\/1048576 bytes/, out);
    assert.match(
      await qemuIo(s.nbdUri(a.exportName), `read -P 0x${(0xa0 + i).toString(16)} 0 1M`),
      /read 1048576\/1048576 bytes/,
    );
  }

  // failover disk 0 to the migrated VM: the export stays and answers I/O errors
  const fo = await s.volumes.failover({ ...base, volumeId: vols[0]!, targetVmId: s.targetVmId });
  assert.equal((await fo.result()).location, 'target');
  await recordHistory(s.temporal, fo.workflowId, fo.runId, 'failover-happy');
  await assertConsistent(s, 'after failover');
  assert.ok((await s.servedExports()).includes(attached[0]!.exportName), 'export name survives failover');
  const stale = await qemuIo(s.nbdUri(attached[0]!.exportName), 'read -P 0xa0 0 4k');
  assert.match(stale, /Input\/output error|read failed/i, `reads fail cleanly after failover: ${stale}`);
  assert.equal((await s.cs.getVolume(vols[0]!))?.virtualmachineid, s.targetVmId);

  // meanwhile the appliance takes another VM's disk, which takes the freed /dev/vdX
  const other = await s.createVolume(1);
  vols.push(other);
  const otherR = await (
    await s.volumes.attach({ ...base, volumeId: other, sourceVmName: 'pg-test3', diskKey: 2000 })
  ).result();
  assert.match(
    otherR.access!.persistentName,
    /^pgtest3-[0-9a-f]{20}disk0$/,
    'pg-test3 and pgtest3 do not collide',
  );
  assert.equal(otherR.access!.devicePath, attached[0]!.devicePath, 'the kernel reused the freed device');
  await assertConsistent(s, 'after attaching another volume');

  // the migrated VM changes data in the volume (its disk is the same image file)
  const fh = await open(s.imagePath(vols[0]!), 'r+');
  await fh.write(Buffer.alloc(65536, 0xcd), 0, 65536, 0);
  await fh.close();

  // failback: back on the appliance as another /dev/vdY, same export name
  const fb = await s.volumes.failback({ ...base, volumeId: vols[0]! });
  const back = await fb.result();
  await recordHistory(s.temporal, fb.workflowId, fb.runId, 'failback-happy');
  assert.equal(back.access?.exportName, attached[0]!.exportName);
  assert.equal(back.access?.persistentName, attached[0]!.persistentName);
  console.log(
    `failback: ${attached[0]!.devicePath} → ${back.access!.devicePath} (export ${back.access!.exportName})`,
  );
  assert.notEqual(
    back.access?.devicePath,
    attached[0]!.devicePath,
    'the kernel gave the volume another device',
  );
  await assertConsistent(s, 'after failback');
  const changed = await qemuIo(s.nbdUri(back.access!.exportName), 'read -P 0xcd 0 64k');
  assert.match(changed, /read 65536\/65536 bytes/, `the export serves the target VM's data: ${changed}`);
  assert.match(await qemuIo(s.nbdUri(back.access!.exportName), 'read -P 0xa0 64k 64k'), /read 65536\/65536/);

  // attach again for the next replication: already there, same everything
  const again = await s.volumes.attach({ ...base, volumeId: vols[0]!, sourceVmName: VM, diskKey: 2000 });
  const againR = await again.result();
  assert.equal(againR.access?.devicePath, back.access?.devicePath);
  assert.equal(againR.access?.exportName, attached[0]!.exportName);
  await assertConsistent(s, 'after re-attach');

  // delete both: nothing is left
  for (const [i, volumeId] of vols.entries()) {
    const d = await s.volumes.delete({ ...base, volumeId });
    assert.equal((await d.result()).location, 'deleted');
    await recordHistory(s.temporal, d.workflowId, d.runId, `delete-happy-${i}`);
    assert.equal(await getMapping(s.db.pool, volumeId), undefined);
    assert.equal(await s.cs.getVolume(volumeId), undefined);
  }
  await assertConsistent(s, 'after delete');
  assert.deepEqual(await s.servedExports(), []);

  // the audit trail has every operation and its steps
  const ops = await listOperations(s.db.pool, { volumeId: vols[0]! });
  assert.deepEqual(ops.map((o) => o.type).sort(), ['attach', 'attach', 'delete', 'failback', 'failover']);
  assert.equal(vols.length, 3);
  assert.ok(ops.every((o) => o.status === 'completed'));
  const steps = await listSteps(s.db.pool, ops.find((o) => o.type === 'failback')!.operationId);
  assert.deepEqual(
    steps.filter((x) => x.phase === 'forward').map((x) => x.step),
    [
      'validate',
      'cloudstack-detach-target',
      'cloudstack-attach',
      'correlate',
      'resolve-conflicts',
      'dm-map',
      'record-mapping',
      'ensure-export',
    ],
  );
});

test('the engine lifecycle on a real kernel: create → attach → OS disk to a stopped VM as root → back → the same export serves its writes', async () => {
  const base = { applianceVmId: s.applianceVmId };
  const created = await (
    await s.volumes.create({
      ...base,
      name: 'migration-labos-labos-disk-0',
      sizeBytes: 1024 ** 3,
      diskOfferingId: s.sim.offering.id,
      zoneId: s.sim.zone.id,
      sourceVmName: 'labos',
      diskKey: 2000,
    })
  ).result();
  const volumeId = created.volumeId;
  assert.equal(created.persistentName, 'labosdisk0', 'the name is born at create');

  // attach with no naming: the name from create
  const a = (await (await s.volumes.attach({ ...base, volumeId })).result()).access!;
  assert.equal(a.exportName, 'migration-vol-labosdisk0');
  assert.match(await qemuIo(s.nbdUri(a.exportName), 'write -P 0x5a 0 1M'), /wrote 1048576\/1048576/);

  // root-disk failover: detach, then the destination (stopped, its placeholder root detached)
  // takes the volume as its root disk; the export stays and answers errors meanwhile
  await (await s.volumes.detach({ ...base, volumeId })).result();
  const dest = s.sim.sim.state.vms.get(s.targetVmId)!;
  dest.state = 'Stopped';
  try {
    const placeholder = (await s.cs.listVolumes({ virtualmachineid: s.targetVmId })).find(
      (v) => v.deviceid === 0,
    );
    if (placeholder) await s.cs.detachVolume(placeholder.id, { fromVmId: s.targetVmId });
    await (await s.volumes.failover({ ...base, volumeId, targetVmId: s.targetVmId, asRoot: true })).result();
    const cs = (await s.cs.getVolume(volumeId))!;
    assert.deepEqual([cs.virtualmachineid, cs.deviceid, cs.type], [s.targetVmId, 0, 'ROOT']);
    assert.ok((await s.servedExports()).includes(a.exportName), 'the export is still listed while away');
    assert.match(await qemuIo(s.nbdUri(a.exportName), 'read 0 4k'), /Input\/output error|read failed/i);

    // the destination boots from it and writes (its disk is the same image file)
    const fh = await open(s.imagePath(volumeId), 'r+');
    await fh.write(Buffer.alloc(65536, 0x7e), 0, 65536, 0);
    await fh.close();

    // back to the appliance (the VM is stopped, so its root may be detached): the same export
    const back = (await (await s.volumes.failback({ ...base, volumeId })).result()).access!;
    assert.equal(back.exportName, a.exportName);
    await assertConsistent(s, 'after the root-disk round trip');
    assert.match(await qemuIo(s.nbdUri(back.exportName), 'read -P 0x7e 0 64k'), /read 65536\/65536/);
    assert.match(await qemuIo(s.nbdUri(back.exportName), 'read -P 0x5a 64k 64k'), /read 65536\/65536/);
  } finally {
    dest.state = 'Running';
  }
  await (await s.volumes.delete({ ...base, volumeId })).result();
  assert.equal(await getMapping(s.db.pool, volumeId), undefined);
});

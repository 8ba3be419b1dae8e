import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FaultInjector } from '../../src/cloudstack-sim/faults.js';
import { csDate, SimState } from '../../src/cloudstack-sim/state.js';

test('device ids: ROOT 0, then 1, 2, 4, 5 … (3 is the CD-ROM), freed ids reused (§3, fact 9)', () => {
  const s = new SimState();
  const z = s.addZone();
  const vm = s.addVm({ name: 'vm', zoneid: z.id });
  const root = s.liveVolumes().find((v) => v.vmId === vm.id)!;
  assert.equal(root.deviceId, 0);
  assert.equal(root.type, 'ROOT');
  const ids: number[] = [];
  for (let i = 0; i < 5; i++) {
    const id = s.freeDeviceId(vm.id)!;
    ids.push(id);
    s.addVolume({ name: `d${i}`, size: 1, zoneid: z.id, vmId: vm.id, deviceId: id, state: 'Ready' });
  }
  assert.deepEqual(ids, [1, 2, 4, 5, 6]);
  s.liveVolumes().find((v) => v.deviceId === 2)!.vmId = undefined;
  assert.equal(s.freeDeviceId(vm.id), 2);
  assert.equal(s.dataDiskCount(vm.id), 4);
});

test('device ids stop at max data volumes + 1', () => {
  const s = new SimState();
  s.maxDataVolumes = 3;
  const z = s.addZone();
  const vm = s.addVm({ name: 'vm', zoneid: z.id });
  for (const id of [1, 2, 4])
    s.addVolume({ name: `d${id}`, size: 1, zoneid: z.id, vmId: vm.id, deviceId: id });
  assert.equal(s.freeDeviceId(vm.id), undefined);
});

test('volume JSON omits VM fields when detached and has typed numbers (§2.8)', () => {
  const s = new SimState();
  const z = s.addZone('z');
  const v = s.addVolume({ name: 'd', size: 2 ** 30, zoneid: z.id });
  const j = s.volumeJson(v);
  assert.equal(j.state, 'Allocated');
  assert.equal(j.size, 2 ** 30);
  for (const k of ['virtualmachineid', 'deviceid', 'vmname', 'vmstate', 'attached', 'hypervisor', 'path'])
    assert.equal(k in j, false, k);
  const vm = s.addVm({ name: 'vm', zoneid: z.id });
  const root = s.volumeJson(s.liveVolumes().find((x) => x.vmId === vm.id)!);
  assert.equal(root.deviceid, 0);
  assert.equal(root.size, 8 * 2 ** 30, 'default ROOT size is 8 GiB, not an overflowed int');
  assert.equal(root.vmname, 'vm');
});

test('CloudStack dates look like 2024-05-01T10:00:00+0000 (§2)', () => {
  assert.equal(csDate(new Date('2024-05-01T10:00:00.123Z')), '2024-05-01T10:00:00+0000');
});

test('faults are consumed per command, case-insensitively, count times', () => {
  const f = new FaultInjector();
  f.inject({ command: 'attachVolume', kind: 'error', count: 2, errorcode: 533 });
  assert.equal(f.take('listVolumes'), undefined);
  assert.equal(f.take('attachvolume')?.errorcode, 533);
  assert.equal(f.pending()[0]?.count, 1);
  assert.equal(f.take('attachVolume')?.kind, 'error');
  assert.equal(f.take('attachVolume'), undefined);
  assert.deepEqual(f.pending(), []);
  assert.throws(() => f.inject({ command: 'x', kind: 'explode' as 'error' }));
  assert.throws(() => f.inject({ command: 'x', kind: 'error', errorcode: 200 }));
});

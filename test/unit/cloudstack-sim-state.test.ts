import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseExpires } from '../../harness/cloudstack-sim/expires.js';
import { FaultInjector } from '../../harness/cloudstack-sim/faults.js';
import { csDate, SimState, type SimJob } from '../../harness/cloudstack-sim/state.js';

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

test('a pending job on a volume shows as jobid + jobstatus 0; done or on another volume, it does not', () => {
  const s = new SimState();
  const z = s.addZone();
  const v = s.addVolume({ name: 'd', size: 2 ** 30, zoneid: z.id, state: 'Ready' });
  const other = s.addVolume({ name: 'e', size: 2 ** 30, zoneid: z.id });
  const job = (id: string, instanceId: string, status: SimJob['status']): SimJob => {
    const j: SimJob = { id, cmd: 'detachVolume', status, resultCode: 0, instanceId, created: csDate() };
    s.jobs.set(id, j);
    return j;
  };
  job('done', v.id, 1);
  assert.equal('jobid' in s.volumeJson(v), false);
  job('first', v.id, 0);
  job('second', v.id, 0);
  job('elsewhere', other.id, 0);
  const j = s.volumeJson(v);
  assert.equal(j.jobid, 'first', 'the first queued of several');
  assert.equal(j.jobstatus, 0);
  assert.equal(j.state, 'Ready');
  s.jobs.get('first')!.status = 2;
  assert.equal(s.volumeJson(v).jobid, 'second');
  assert.equal(s.volumeJson(other).jobid, 'elsewhere');
});

test('expires: the forms CloudStack parses, and nothing it cannot', () => {
  const t = Date.parse('2030-01-01T00:00:00Z');
  assert.equal(parseExpires('2030-01-01T00:00:00+0000'), t);
  assert.equal(parseExpires('2030-01-01T00:00:00Z'), t);
  assert.equal(parseExpires('2030-01-01T00:00:00+00:00'), t);
  assert.equal(parseExpires('2030-01-01T00:00:00Z+0000'), t);
  assert.equal(parseExpires('2030-01-01T05:30:00+0530'), t);
  assert.equal(parseExpires('2029-12-31T19:00:00-05:00'), t);
  assert.equal(parseExpires('2030-01-01T00:00:00.250Z'), t + 250);
  assert.equal(parseExpires('2028-02-29T00:00:00Z'), Date.parse('2028-02-29T00:00:00Z'), 'leap day');
  // CloudStack refuses each of these (→ 401).
  for (const bad of [
    '',
    '2030-01-01T00:00:00', // no offset
    '2030-01-01 00:00:00+0000',
    '2030-01-01T00:00:00 +0000',
    '2030-1-01T00:00:00Z',
    '2030-13-01T00:00:00Z',
    '2030-02-30T00:00:00Z',
    '2029-02-29T00:00:00Z',
    '2030-01-01T24:00:00Z',
    '2030-01-01T23:60:00Z',
    '2030-01-01T00:00:60Z',
    '2030-01-01T00:00:00+1900',
    '2030-01-01T00:00:00+18:01',
    '2030-01-01T00:00:00+00:60',
    '2030-01-01T00:00:00UTC',
    'Tue, 01 Jan 2030 00:00:00 GMT',
    '1893456000',
  ])
    assert.equal(parseExpires(bad), undefined, bad);
  // Rarer spellings a lenient Java parser may take are refused too: stricter, never looser.
  for (const rare of ['2030-01-01T00:00+0000', '2030-01-01T00:00:00.250+0000', '2030-01-01t00:00:00z'])
    assert.equal(parseExpires(rare), undefined, rare);
});

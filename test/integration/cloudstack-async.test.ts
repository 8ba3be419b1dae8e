// Our client against the simulator: async jobs (pending → done), resuming and cancelling,
// the hypervisor backend the jobs drive, and CloudStack's states while a job runs.
import assert from 'node:assert/strict';
import { after, before, beforeEach, test } from 'node:test';
import { CloudStackClient } from '../../src/cloudstack/client.js';
import {
  CloudStackError,
  CloudStackJobTimeoutError,
  CloudStackNetworkError,
} from '../../src/cloudstack/errors.js';
import { diskSerialFor } from '../../src/cloudstack/serial.js';
import { InMemoryHypervisor } from '../../harness/cloudstack-sim/hypervisor.js';
import { startSimulator, type RunningSimulator } from '../../harness/cloudstack-sim/index.js';
import { GatedHypervisor, raw } from './cloudstack-helpers.js';

let env: RunningSimulator;
let cs: CloudStackClient;
const appliance = new GatedHypervisor();
const targets = new InMemoryHypervisor();
let applianceId: string;
let targetId: string;

before(async () => {
  env = await startSimulator({ jobDurationMs: 0, hypervisor: targets });
  applianceId = env.appliance.id;
  targetId = env.targets[0]!.id;
  // One backend per VM: the appliance's disks go to the gated backend, the rest to `targets`.
  env.sim.setHypervisor(applianceId, appliance);
  cs = new CloudStackClient({
    url: env.url,
    apiKey: env.apiKey,
    secretKey: env.secretKey,
    pollInitialMs: 5,
    pollMaxMs: 20,
  });
});
after(() => env.close());
beforeEach(() => appliance.release());

const newVolume = (name = 'v', gb = 1) =>
  cs.createVolume({ name, sizeGb: gb, diskOfferingId: env.offering.id, zoneId: env.zone.id });
const count = (command: string) => env.sim.requests.filter((r) => r.command === command && r.ok).length;

test('attach: job pending while the hypervisor works (Allocated→Creating→Ready), then done (§3)', async () => {
  const v = await newVolume('first');
  appliance.hold();
  const jobs: string[] = [];
  let polls = 0;
  const p = cs.attachVolume(v.id, applianceId, { onJobStarted: (j) => jobs.push(j), onPoll: () => polls++ });
  const plugged = await appliance.entered.promise;
  // Mid-job, as CloudStack shows it.
  assert.equal((await cs.getVolume(v.id))!.state, 'Creating');
  const job = await raw(
    env.url,
    { command: 'queryAsyncJobResult', jobid: jobs[0]!, response: 'json', apiKey: env.apiKey },
    env.secretKey,
  );
  assert.equal(job.body.queryasyncjobresultresponse!.jobstatus, 0);
  appliance.release();
  const done = await p;
  assert.equal(done.state, 'Ready');
  assert.equal(done.virtualmachineid, applianceId);
  assert.equal(done.deviceid, 1);
  assert.equal(jobs.length, 1);
  assert.ok(polls >= 1, 'the client saw the job pending and reported the poll');
  // The backend got what the KVM agent would: the serial the guest will see (§4).
  assert.deepEqual(plugged, {
    volumeId: v.id,
    vmId: applianceId,
    serial: diskSerialFor(v.id),
    deviceId: 1,
    sizeBytes: 2 ** 30,
  });
  assert.equal(targets.attached.has(v.id), false, 'routed to the appliance backend only');

  // Re-attach of a Ready volume goes through Attaching (§3).
  await cs.detachVolume(v.id);
  appliance.hold();
  const p2 = cs.attachVolume(v.id, applianceId);
  await appliance.entered.promise;
  assert.equal((await cs.getVolume(v.id))!.state, 'Attaching');
  appliance.release();
  assert.equal((await p2).state, 'Ready');
  await cs.detachVolume(v.id);
});

test('a running job shows on the volume as jobid + jobstatus 0: Attaching for an attach, Ready for a detach (§2.8)', async () => {
  const v = await newVolume('marked');
  await cs.attachVolume(v.id, applianceId); // Ready from now on
  await cs.detachVolume(v.id);
  const listed = async () =>
    (
      await raw(
        env.url,
        { command: 'listVolumes', id: v.id, response: 'json', apiKey: env.apiKey },
        env.secretKey,
      )
    ).body.listvolumesresponse!.volume as Record<string, unknown>[];
  const start = async (command: 'attachVolume' | 'detachVolume') => {
    const params: Record<string, string> = { command, id: v.id, response: 'json', apiKey: env.apiKey };
    if (command === 'attachVolume') params.virtualmachineid = applianceId;
    const r = await raw(env.url, params, env.secretKey, 'POST');
    return String(r.body[`${command.toLowerCase()}response`]!.jobid);
  };

  appliance.hold();
  const attachJob = await start('attachVolume');
  await appliance.entered.promise;
  const attaching = (await listed())[0]!;
  assert.equal(attaching.state, 'Attaching');
  assert.equal(attaching.jobid, attachJob);
  assert.equal(attaching.jobstatus, 0);
  appliance.release();
  await cs.waitForJob('attachVolume', attachJob);
  const idle = (await listed())[0]!;
  assert.equal('jobid' in idle, false, 'finished jobs are not shown');
  assert.equal('jobstatus' in idle, false);

  appliance.hold();
  const detachJob = await start('detachVolume');
  await appliance.entered.promise;
  const detaching = (await listed())[0]!;
  assert.equal(detaching.state, 'Ready', 'CloudStack has no Detaching state');
  assert.equal(detaching.virtualmachineid, applianceId, 'still attached until the job ends');
  assert.equal(detaching.jobid, detachJob);
  assert.equal(detaching.jobstatus, 0);
  // Through the client the same marks are typed on CsVolume.
  const typed = (await cs.getVolume(v.id))!;
  assert.deepEqual([typed.jobid, typed.jobstatus], [detachJob, 0]);
  appliance.release();
  await cs.waitForJob('detachVolume', detachJob);
  assert.equal((await cs.getVolume(v.id))!.jobid, undefined);
});

test('attach of a volume whose detach is still running waits for that job, then attaches (no conflict, no extra call)', async () => {
  const v = await newVolume('handover');
  await cs.attachVolume(v.id, applianceId);
  appliance.hold();
  const detach = await raw(
    env.url,
    { command: 'detachVolume', id: v.id, response: 'json', apiKey: env.apiKey },
    env.secretKey,
    'POST',
  );
  const detachJob = String(detach.body.detachvolumeresponse!.jobid);
  await appliance.entered.promise;
  const detaches = count('detachVolume');
  const polled: string[] = [];
  // The detach may end only once the attach has seen it pending: it cannot skip the wait.
  const r = await cs.attachVolume(v.id, targetId, {
    onPoll: (j) => {
      polled.push(j);
      if (j === detachJob) appliance.release();
    },
  });
  assert.equal(r.virtualmachineid, targetId, 'not a conflict with the VM it was leaving');
  assert.equal(polled[0], detachJob, 'it waited for the detach job first');
  assert.equal(count('detachVolume'), detaches, 'and did not detach again');
  assert.deepEqual(
    appliance.calls.filter((c) => c.volumeId === v.id).map((c) => c.op),
    ['attach', 'detach'],
  );
  await cs.detachVolume(v.id);
});

test('a failing hypervisor fails the job with 530 "Failed to attach volume …" and rolls back (§3)', async () => {
  const v = await newVolume('doomed');
  appliance.fail = 'device_add: Duplicate ID';
  await assert.rejects(cs.attachVolume(v.id, applianceId), (e: unknown) => {
    assert.ok(e instanceof CloudStackError);
    assert.equal(e.inJob, true);
    assert.equal(e.errorcode, 530);
    assert.equal(e.retryable, true);
    assert.equal(
      e.errortext,
      'Failed to attach volume doomed to VM migration-appliance; device_add: Duplicate ID',
    );
    return true;
  });
  const after = (await cs.getVolume(v.id))!;
  assert.equal(after.state, 'Allocated');
  assert.equal(after.virtualmachineid, undefined);
  // The retry (what Temporal does) then works.
  assert.equal((await cs.attachVolume(v.id, applianceId)).state, 'Ready');
  appliance.fail = 'guest did not release the disk';
  await assert.rejects(
    cs.detachVolume(v.id),
    /530 Failed to detach volume doomed from VM migration-appliance; guest did not release/,
  );
  assert.equal(
    (await cs.getVolume(v.id))!.virtualmachineid,
    applianceId,
    'still attached after a failed detach',
  );
  await cs.detachVolume(v.id);
});

test('a stopped VM: attach touches no hypervisor; ROOT detach allowed only when stopped (§3)', async () => {
  const vm = env.state.addVm({ name: 'stoppable', zoneid: env.zone.id });
  const root = (await cs.listVolumes({ virtualmachineid: vm.id })).find((x) => x.type === 'ROOT')!;
  await assert.rejects(
    cs.detachVolume(root.id),
    (e: unknown) =>
      e instanceof CloudStackError &&
      e.inJob &&
      e.errorcode === 431 &&
      !e.retryable &&
      e.errortext === 'Root volume detach can happen only when vm is in states: Stopped or Destroyed',
  );
  env.state.vms.get(vm.id)!.state = 'Stopped';
  const before = targets.log.length;
  const v = await newVolume('cold');
  assert.equal((await cs.attachVolume(v.id, vm.id)).vmstate, 'Stopped');
  const detached = await cs.detachVolume(root.id);
  assert.equal(detached.virtualmachineid, undefined);
  assert.equal(targets.log.length, before, 'DB-only changes on a stopped VM');
});

test('resumeJobId: a retried activity polls the job it started instead of attaching again', async () => {
  const v = await newVolume('resumed');
  appliance.hold();
  const aborted = new AbortController();
  let jobId: string | undefined;
  const first = cs.attachVolume(v.id, applianceId, {
    signal: aborted.signal,
    onJobStarted: (j) => (jobId = j),
  });
  await appliance.entered.promise;
  aborted.abort(new Error('activity worker died'));
  await assert.rejects(first, /activity worker died/);
  const attachCalls = count('attachVolume');
  const second = cs.attachVolume(v.id, applianceId, { resumeJobId: jobId! });
  appliance.release();
  const r = await second;
  assert.equal(r.virtualmachineid, applianceId);
  assert.equal(count('attachVolume'), attachCalls, 'no second attachVolume call');
  await cs.detachVolume(v.id);
});

test('cancellation: the signal ends polling with its reason, not as a network fault', async () => {
  const v = await newVolume('cancelled');
  appliance.hold();
  const ac = new AbortController();
  const p = cs.attachVolume(v.id, applianceId, {
    signal: ac.signal,
    onPoll: () => ac.abort(new Error('cancelled by workflow')),
  });
  await assert.rejects(
    p,
    (e: unknown) => !(e instanceof CloudStackNetworkError) && /cancelled by workflow/.test(String(e)),
  );
  appliance.release();
  await cs.detachVolume(v.id); // waits for the Creating volume to settle, then detaches
  assert.equal((await cs.getVolume(v.id))!.virtualmachineid, undefined);
});

test('a job outliving asyncTimeoutMs → CloudStackJobTimeoutError (retryable), resumable later', async () => {
  const impatient = new CloudStackClient({
    url: env.url,
    apiKey: env.apiKey,
    secretKey: env.secretKey,
    pollInitialMs: 5,
    asyncTimeoutMs: 50,
  });
  const v = await newVolume('slow');
  appliance.hold();
  let jobId = '';
  await assert.rejects(
    impatient.attachVolume(v.id, applianceId, { onJobStarted: (j) => (jobId = j) }),
    (e: unknown) => e instanceof CloudStackJobTimeoutError && e.retryable && e.jobId === jobId,
  );
  const resumed = cs.attachVolume(v.id, applianceId, { resumeJobId: jobId });
  appliance.release();
  assert.equal((await resumed).virtualmachineid, applianceId);
  await cs.detachVolume(v.id);
});

test('createVolume with resumeJobId returns the volume of that job, creating nothing new', async () => {
  let jobId = '';
  const v = await cs.createVolume(
    { name: 'once', sizeGb: 2, diskOfferingId: env.offering.id, zoneId: env.zone.id },
    { onJobStarted: (j) => (jobId = j) },
  );
  const volumes = env.state.liveVolumes().length;
  const again = await cs.createVolume(
    { name: 'once', sizeGb: 2, diskOfferingId: env.offering.id, zoneId: env.zone.id },
    { resumeJobId: jobId },
  );
  assert.equal(again.id, v.id);
  assert.equal(env.state.liveVolumes().length, volumes);
});

test('mutations go as signed POST forms, reads as GET (as cloudstack-go does, §1.3)', async () => {
  const from = env.sim.requests.length;
  const v = await newVolume('posted');
  await cs.attachVolume(v.id, targetId);
  await cs.detachVolume(v.id);
  await cs.deleteVolume(v.id);
  const seen = env.sim.requests.slice(from);
  assert.ok(
    seen.every((r) => r.ok),
    'every request verified',
  );
  const methods = new Map(seen.map((r) => [r.command, r.method]));
  for (const c of ['createVolume', 'attachVolume', 'detachVolume', 'deleteVolume'])
    assert.equal(methods.get(c), 'POST', c);
  for (const c of ['listVolumes', 'queryAsyncJobResult']) assert.equal(methods.get(c), 'GET', c);
  const getOnly = new CloudStackClient({
    url: env.url,
    apiKey: env.apiKey,
    secretKey: env.secretKey,
    pollInitialMs: 5,
    postMutations: false,
  });
  const from2 = env.sim.requests.length;
  await getOnly.createVolume({
    name: 'gotten',
    sizeGb: 1,
    diskOfferingId: env.offering.id,
    zoneId: env.zone.id,
  });
  assert.equal(env.sim.requests.slice(from2).find((r) => r.command === 'createVolume')?.method, 'GET');
});

test('listVirtualMachines and listVolumes through the client', async () => {
  const all = await cs.listVirtualMachines();
  assert.ok(
    all.some((vm) => vm.id === applianceId && vm.name === 'migration-appliance' && vm.state === 'Running'),
  );
  const one = await cs.listVirtualMachines({ id: targetId });
  assert.deepEqual(
    one.map((vm) => [vm.id, vm.hypervisor, vm.zoneid]),
    [[targetId, 'KVM', env.zone.id]],
  );
  assert.deepEqual(await cs.listVirtualMachines({ name: 'nobody' }), []);
  const roots = await cs.listVolumes({ virtualmachineid: targetId, type: 'ROOT' });
  assert.equal(roots.length, 1);
  assert.equal(roots[0]!.deviceid, 0);
  // By name within a zone (what finding a volume whose create reply was lost needs).
  const other = env.state.addZone('zone2');
  const here = await newVolume('by-name');
  env.state.addVolume({ name: 'by-name', size: 2 ** 30, zoneid: other.id });
  assert.deepEqual(
    (await cs.listVolumes({ name: 'by-name', zoneid: env.zone.id })).map((v) => v.id),
    [here.id],
  );
  assert.equal((await cs.listVolumes({ name: 'by-name' })).length, 2);
  await assert.rejects(
    cs.listVolumes({ zoneid: '00000000-aaaa-bbbb-cccc-00000000000f' }),
    (e: unknown) => e instanceof CloudStackError && e.parameter === 'zoneid' && !e.retryable,
  );
});

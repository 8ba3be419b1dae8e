// Injected faults (programmatic and over the test-only HTTP endpoint) and how our client
// classifies and survives them; idempotency of every mutating call; data-disk limits.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { CloudStackClient } from '../../src/cloudstack/client.js';
import {
  CloudStackConflictError,
  CloudStackError,
  CloudStackNetworkError,
  CloudStackNotFoundError,
} from '../../src/cloudstack/errors.js';
import { InMemoryHypervisor } from '../../harness/cloudstack-sim/hypervisor.js';
import { startSimulator, type RunningSimulator } from '../../harness/cloudstack-sim/index.js';
import { GatedHypervisor, raw } from './cloudstack-helpers.js';

let env: RunningSimulator;
let cs: CloudStackClient;
const hv = new InMemoryHypervisor();
let vm: string;
before(async () => {
  env = await startSimulator({ jobDurationMs: 0, hypervisor: hv, testEndpoints: true });
  vm = env.targets[0]!.id;
  cs = new CloudStackClient({
    url: env.url,
    apiKey: env.apiKey,
    secretKey: env.secretKey,
    pollInitialMs: 5,
    pollMaxMs: 20,
    requestTimeoutMs: 2_000,
  });
});
after(() => env.close());

const newVolume = (name = 'v') =>
  cs.createVolume({ name, sizeGb: 1, diskOfferingId: env.offering.id, zoneId: env.zone.id });
const hvCalls = (op: 'attach' | 'detach', volumeId: string) =>
  hv.log.filter((c) => c.op === op && c.volumeId === volumeId).length;

test('every error code arrives typed, with the right retry classification (fact 6)', async () => {
  const expected: [number, boolean][] = [
    [431, false],
    [432, false],
    [530, true],
    [531, false],
    [532, false],
    [533, true],
    [534, true],
    [535, true],
    [536, true],
  ];
  for (const [code, retryable] of expected) {
    env.faults.inject({
      command: 'listVolumes',
      kind: 'error',
      errorcode: code,
      errortext: `injected ${code}`,
    });
    await assert.rejects(cs.listVolumes(), (e: unknown) => {
      assert.ok(e instanceof CloudStackError, `${code}`);
      assert.equal(e.errorcode, code);
      assert.equal(e.errortext, `injected ${code}`);
      assert.equal(e.command, 'listVolumes');
      assert.equal(e.retryable, retryable, `${code}`);
      assert.equal(e.inJob, false);
      return true;
    });
  }
  const wrongKey = new CloudStackClient({ url: env.url, apiKey: env.apiKey, secretKey: 'not-the-secret' });
  await assert.rejects(
    wrongKey.listVolumes(),
    (e: unknown) => e instanceof CloudStackError && e.errorcode === 401 && !e.retryable,
  );
});

test('a fault lasts exactly `count` calls', async () => {
  env.faults.inject({ command: 'listVirtualMachines', kind: 'error', errorcode: 534, count: 2 });
  await assert.rejects(cs.listVirtualMachines(), /534/);
  await assert.rejects(cs.listVirtualMachines(), /534/);
  assert.ok((await cs.listVirtualMachines()).length >= 2);
});

test('errors inside the job: typed as in-job, the volume left as it was', async () => {
  const v = await newVolume();
  await cs.attachVolume(v.id, vm);
  env.faults.inject({
    command: 'detachVolume',
    kind: 'job-error',
    errorcode: 536,
    errortext: 'volume in use',
  });
  await assert.rejects(
    cs.detachVolume(v.id),
    (e: unknown) =>
      e instanceof CloudStackError &&
      e.inJob &&
      e.errorcode === 536 &&
      e.retryable &&
      e.errortext === 'volume in use',
  );
  assert.equal((await cs.getVolume(v.id))!.virtualmachineid, vm);
  env.faults.inject({ command: 'attachVolume', kind: 'error', errorcode: 533 });
  const w = await newVolume();
  await assert.rejects(
    cs.attachVolume(w.id, vm),
    (e: unknown) => e instanceof CloudStackError && !e.inJob && e.errorcode === 533,
  );
  assert.equal(hvCalls('attach', w.id), 0, 'a synchronous failure starts no job');
  await cs.detachVolume(v.id);
});

test('no reply within requestTimeoutMs → retryable CloudStackNetworkError(timedOut)', async () => {
  const quick = new CloudStackClient({
    url: env.url,
    apiKey: env.apiKey,
    secretKey: env.secretKey,
    requestTimeoutMs: 200,
  });
  env.faults.inject({ command: 'listVolumes', kind: 'timeout' });
  await assert.rejects(
    quick.listVolumes(),
    (e: unknown) => e instanceof CloudStackNetworkError && e.retryable && e.timedOut,
  );
  assert.ok(Array.isArray(await quick.listVolumes()), 'the next call is answered');
});

test('lost reply after CloudStack attached: the retry succeeds without attaching twice', async () => {
  const v = await newVolume();
  env.faults.inject({ command: 'attachVolume', kind: 'lost-reply' });
  await assert.rejects(
    cs.attachVolume(v.id, vm),
    (e: unknown) => e instanceof CloudStackNetworkError && !e.timedOut,
  );
  // CloudStack did start the job; the retry finds the volume attached (or settling) and stops there.
  const r = await cs.attachVolume(v.id, vm);
  assert.equal(r.virtualmachineid, vm);
  assert.equal(hvCalls('attach', v.id), 1, 'plugged exactly once');
  await cs.detachVolume(v.id);
});

test('lost reply while the attach is still queued: the retry waits for that job on the volume, attaching once', async () => {
  // CloudStack lists the pending job on the volume (jobid, jobstatus 0) while the state is still
  // Allocated; the retry must wait for it rather than queue a second attach.
  env.sim.jobDurationMs = 500; // the queued phase the retry lands in (a local round trip is ~1 ms)
  try {
    const v = await newVolume();
    env.faults.inject({ command: 'attachVolume', kind: 'lost-reply' });
    await assert.rejects(cs.attachVolume(v.id, vm), CloudStackNetworkError);
    const lostJob = [...env.state.jobs.values()].at(-1)!;
    assert.equal(lostJob.instanceId, v.id);
    const before = env.sim.requests.filter((x) => x.command === 'attachVolume').length;
    const polled: string[] = [];
    const r = await cs.attachVolume(v.id, vm, { onPoll: (j) => polled.push(j) });
    assert.equal(r.virtualmachineid, vm);
    assert.ok(polled.includes(lostJob.id), 'it waited for the job it found on the volume');
    assert.equal(
      env.sim.requests.filter((x) => x.command === 'attachVolume').length,
      before,
      'no second attachVolume',
    );
    assert.equal(hvCalls('attach', v.id), 1);
    await cs.detachVolume(v.id);
  } finally {
    env.sim.jobDurationMs = 0;
  }
});

test('lost reply on a detach still running: the retry waits for it (Ready + jobid, no Detaching) instead of detaching again', async () => {
  const gated = new GatedHypervisor();
  const target = env.state.addVm({ name: 'gated-detach', zoneid: env.zone.id });
  env.sim.setHypervisor(target.id, gated);
  const v = await newVolume();
  await cs.attachVolume(v.id, target.id);
  gated.hold();
  env.faults.inject({ command: 'detachVolume', kind: 'lost-reply' });
  await assert.rejects(cs.detachVolume(v.id), CloudStackNetworkError);
  await gated.entered.promise; // CloudStack's job is at the hypervisor now
  const mid = (await cs.getVolume(v.id))!;
  assert.equal(mid.state, 'Ready', 'CloudStack has no Detaching state');
  assert.equal(mid.virtualmachineid, target.id);
  assert.equal(typeof mid.jobid, 'string');
  assert.equal(mid.jobstatus, 0);
  const before = env.sim.requests.filter((x) => x.command === 'detachVolume').length;
  // The job ends only once the retry has seen it pending, so the retry cannot skip the wait.
  const retry = cs.detachVolume(v.id, { fromVmId: target.id, onPoll: () => gated.release() });
  assert.equal((await retry).virtualmachineid, undefined);
  assert.equal(
    env.sim.requests.filter((x) => x.command === 'detachVolume').length,
    before,
    'no second detach',
  );
  assert.deepEqual(
    gated.calls.filter((c) => c.op === 'detach'),
    [{ op: 'detach', volumeId: v.id }],
  );
  env.sim.setHypervisor(target.id, undefined);
});

test('an attach queued by someone else between our look-up and our call wins: our job fails, the client reports success', async () => {
  // The other party's job is queued first; ours then fails "not attached to any VM", which the
  // client recognises from a fresh look-up showing the volume where we want it.
  const v = await newVolume();
  let raced = false;
  env.sim.beforeCommand = async (command) => {
    if (command !== 'attachVolume' || raced) return;
    raced = true;
    const other = await raw(
      env.url,
      { command: 'attachVolume', id: v.id, virtualmachineid: vm, response: 'json', apiKey: env.apiKey },
      env.secretKey,
    );
    assert.equal(other.status, 200);
  };
  try {
    const jobs: string[] = [];
    const r = await cs.attachVolume(v.id, vm, { onJobStarted: (j) => jobs.push(j) });
    assert.equal(r.virtualmachineid, vm);
    assert.equal(raced, true);
    const ours = env.state.jobs.get(jobs[0]!)!;
    assert.equal(ours.status, 2, 'our own job lost');
    assert.equal(hvCalls('attach', v.id), 1, 'plugged once');
  } finally {
    env.sim.beforeCommand = undefined;
  }
  await cs.detachVolume(v.id);
});

test('lost reply on detach and on delete: retries succeed', async () => {
  const v = await newVolume();
  await cs.attachVolume(v.id, vm);
  env.faults.inject({ command: 'detachVolume', kind: 'lost-reply' });
  await assert.rejects(cs.detachVolume(v.id), CloudStackNetworkError);
  assert.equal((await cs.detachVolume(v.id)).virtualmachineid, undefined);
  assert.equal(hvCalls('detach', v.id), 1);
  env.faults.inject({ command: 'deleteVolume', kind: 'lost-reply' });
  await assert.rejects(cs.deleteVolume(v.id), CloudStackNetworkError);
  assert.equal(env.state.volumes.get(v.id)!.removed, true, 'CloudStack did delete it');
  await cs.deleteVolume(v.id);
});

test('lost reply on createVolume: CloudStack created the volume (the caller must look it up)', async () => {
  const before = env.state.liveVolumes().length;
  env.faults.inject({ command: 'createVolume', kind: 'lost-reply' });
  await assert.rejects(newVolume('orphan-candidate'), CloudStackNetworkError);
  assert.equal(env.state.liveVolumes().length, before + 1);
  const found = await cs.listVolumes({ name: 'orphan-candidate' });
  assert.equal(found.length, 1);
  assert.equal(found[0]!.state, 'Allocated');
});

test('idempotency: attach twice, detach a detached volume, delete twice; conflicts are explicit', async () => {
  const v = await newVolume();
  const jobs: string[] = [];
  await cs.attachVolume(v.id, vm, { onJobStarted: (j) => jobs.push(j) });
  const again = await cs.attachVolume(v.id, vm, { onJobStarted: (j) => jobs.push(j) });
  assert.equal(again.virtualmachineid, vm);
  assert.equal(jobs.length, 1, 'the second attach started no job');
  await assert.rejects(
    cs.attachVolume(v.id, env.appliance.id),
    (e: unknown) =>
      e instanceof CloudStackConflictError &&
      e.attachedTo === vm &&
      e.wanted === env.appliance.id &&
      !e.retryable,
  );
  await assert.rejects(cs.detachVolume(v.id, { fromVmId: env.appliance.id }), CloudStackConflictError);
  assert.equal((await cs.getVolume(v.id))!.virtualmachineid, vm, 'a conflict changes nothing');
  await cs.detachVolume(v.id, { fromVmId: vm });
  const detached = await cs.detachVolume(v.id, { onJobStarted: (j) => jobs.push(j) });
  assert.equal(detached.virtualmachineid, undefined);
  assert.equal(jobs.length, 1, 'detaching a detached volume started no job');
  // deleting an attached volume is CloudStack's synchronous 431, not retryable (§2.4)
  await cs.attachVolume(v.id, vm);
  await assert.rejects(
    cs.deleteVolume(v.id),
    (e: unknown) =>
      e instanceof CloudStackError && e.errorcode === 431 && e.cserrorcode === 4350 && !e.retryable,
  );
  await cs.detachVolume(v.id);
  await cs.deleteVolume(v.id);
  await cs.deleteVolume(v.id);
  assert.equal(await cs.getVolume(v.id), undefined);
  await assert.rejects(cs.attachVolume(v.id, vm), CloudStackNotFoundError);
});

test('device ids 1, 2, 4, … 33 and the default data-disk limit of 32 (fact 9)', async () => {
  const big = env.state.addVm({ name: 'many-disks', zoneid: env.zone.id });
  const ids: number[] = [];
  for (let i = 0; i < 32; i++)
    ids.push((await cs.attachVolume((await newVolume(`m${i}`)).id, big.id)).deviceid!);
  assert.deepEqual(ids, [1, 2, ...Array.from({ length: 30 }, (_, i) => i + 4)]);
  const extra = await newVolume('m32');
  await assert.rejects(
    cs.attachVolume(extra.id, big.id),
    (e: unknown) =>
      e instanceof CloudStackError &&
      e.inJob &&
      e.errorcode === 431 &&
      e.errortext ===
        'The specified VM already has the maximum number of data disks (32) attached. Please specify another VM.',
  );
  // The limit is configurable.
  env.state.maxDataVolumes = 33;
  try {
    assert.equal((await cs.attachVolume(extra.id, big.id)).deviceid, 34);
  } finally {
    env.state.maxDataVolumes = 32;
  }
});

test('test-only HTTP endpoints: inject, inspect and clear faults; state with serials', async () => {
  const post = await fetch(new URL('/sim/faults', env.url), {
    method: 'POST',
    body: JSON.stringify({ command: 'attachVolume', kind: 'job-error', errorcode: 535, count: 1 }),
  });
  assert.equal(post.status, 200);
  const v = await newVolume('via-http');
  await assert.rejects(
    cs.attachVolume(v.id, vm),
    (e: unknown) => e instanceof CloudStackError && e.inJob && e.errorcode === 535,
  );
  const bad = await fetch(new URL('/sim/faults', env.url), { method: 'POST', body: '{"kind":"nope"}' });
  assert.equal(bad.status, 400);
  await fetch(new URL('/sim/faults', env.url), {
    method: 'POST',
    body: JSON.stringify({ command: 'listVolumes', kind: 'error' }),
  });
  assert.equal((await fetch(new URL('/sim/faults', env.url), { method: 'DELETE' })).status, 200);
  await cs.attachVolume(v.id, vm); // listVolumes fault cleared
  const state = (await (await fetch(new URL('/sim/state', env.url))).json()) as {
    volumes: { id: string; serial: string; virtualmachineid?: string; deviceid?: number }[];
    faults: unknown[];
  };
  const mine = state.volumes.find((x) => x.id === v.id)!;
  assert.equal(mine.serial, v.id.replace(/-/g, '').slice(0, 20));
  assert.equal(mine.virtualmachineid, vm);
  assert.deepEqual(state.faults, []);
  // Off unless enabled.
  const closed = await startSimulator({});
  try {
    assert.equal((await fetch(new URL('/sim/state', closed.url))).status, 404);
    assert.equal(
      (await fetch(new URL('/sim/faults', closed.url), { method: 'POST', body: '{}' })).status,
      404,
    );
  } finally {
    await closed.close();
  }
});

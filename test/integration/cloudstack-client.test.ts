import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { CloudStackClient } from '../../src/cloudstack/client.js';
import {
  CloudStackConflictError,
  CloudStackError,
  CloudStackNetworkError,
  CloudStackVmNotFoundError,
} from '../../src/cloudstack/errors.js';
import { signedQuery } from '../../src/cloudstack/signing.js';
import { startSimulator } from '../../harness/cloudstack-sim/index.js';

let env: Awaited<ReturnType<typeof startSimulator>>;
let cs: CloudStackClient;
before(async () => {
  env = await startSimulator({ jobDurationMs: 30, testEndpoints: true });
  cs = new CloudStackClient({
    url: env.sim.url,
    apiKey: env.sim.apiKey,
    secretKey: env.sim.secretKey,
    pollInitialMs: 10,
    requestTimeoutMs: 2000,
  });
});
after(() => env.sim.close());

const newVolume = (gb = 1) =>
  cs.createVolume({ name: `vol-${gb}`, sizeGb: gb, diskOfferingId: env.offering.id, zoneId: env.zone.id });
const raw = async (params: Record<string, string>, secret = env.sim.secretKey) => {
  const res = await fetch(`${env.sim.url}?${signedQuery(params, secret)}`);
  return {
    status: res.status,
    type: res.headers.get('content-type'),
    body: (await res.json()) as Record<string, Record<string, unknown>>,
  };
};

test('createVolume: async-create, Allocated until first attach, size in bytes (§2.3)', async () => {
  const v = await newVolume(2);
  assert.equal(v.state, 'Allocated');
  assert.equal(v.size, 2 * 2 ** 30);
  assert.equal(v.type, 'DATADISK');
  assert.equal(v.virtualmachineid, undefined);
  await assert.rejects(
    cs.createVolume({ name: 'bad', sizeGb: 0, diskOfferingId: env.offering.id, zoneId: env.zone.id }),
    (e: unknown) =>
      e instanceof CloudStackError &&
      e.errorcode === 431 &&
      !e.retryable &&
      !e.inJob &&
      e.parameter === 'size',
  );
});

test('createVolume refusals are final and name the parameter: size over 1024 GB, control characters', async () => {
  const before = env.sim.state.volumes.size;
  await assert.rejects(
    cs.createVolume({ name: 'huge', sizeGb: 1025, diskOfferingId: env.offering.id, zoneId: env.zone.id }),
    (e: unknown) => {
      assert.ok(e instanceof CloudStackError);
      assert.deepEqual([e.errorcode, e.cserrorcode, e.retryable, e.inJob], [431, 4350, false, false]);
      assert.equal(e.parameter, 'size');
      assert.equal(
        e.message,
        'CloudStack createVolume failed: 431/4350 Volume size: 1025 GB is out of allowed range. Min: 1. Max: 1024 (parameter size)',
      );
      return true;
    },
  );
  await assert.rejects(
    cs.createVolume({ name: 'tab\tname', sizeGb: 1, diskOfferingId: env.offering.id, zoneId: env.zone.id }),
    (e: unknown) =>
      e instanceof CloudStackError &&
      e.errorcode === 431 &&
      !e.retryable &&
      e.parameter === 'name' &&
      /non-printable characters for parameter name \(parameter name\)$/.test(e.message),
  );
  // A control character in an id is CloudStack's refusal too, not "no such volume".
  await assert.rejects(
    cs.attachVolume('bad\u0000id', env.targets[0]!.id),
    (e: unknown) => e instanceof CloudStackError && e.parameter === 'id' && !e.notFound && !e.retryable,
  );
  assert.equal(env.sim.state.volumes.size, before, 'nothing was created');
  assert.equal((await newVolume(1024)).size, 1024 * 2 ** 30, 'the maximum itself is allowed');
});

test('unknown VM ids: a clear, final VirtualMachineNotFound; getVirtualMachine → undefined (§2.6)', async () => {
  const missing = '00000000-aaaa-bbbb-cccc-0000000000ff';
  // CloudStack answers 431 for the id; the client says what that means (a health check that
  // lists the configured APPLIANCE_VM_ID reports this message).
  await assert.rejects(cs.listVirtualMachines({ id: missing }), (e: unknown) => {
    assert.ok(e instanceof CloudStackVmNotFoundError);
    assert.equal(e.vmId, missing);
    assert.equal(e.retryable, false);
    assert.equal(e.name, 'VirtualMachineNotFound');
    assert.equal(e.message, `virtual machine ${missing} does not exist in CloudStack`);
    return true;
  });
  assert.equal(await cs.getVirtualMachine(missing), undefined);
  assert.equal((await cs.getVirtualMachine(env.appliance.id))?.name, 'migration-appliance');
  // Other failures are not mistaken for "not found".
  env.sim.faults.inject({ command: 'listVirtualMachines', kind: 'error', errorcode: 530 });
  await assert.rejects(
    cs.getVirtualMachine(env.appliance.id),
    (e: unknown) => e instanceof CloudStackError && e.retryable,
  );
  // Attaching to an unknown VM is the same clear error, and starts no job.
  const v = await newVolume();
  await assert.rejects(cs.attachVolume(v.id, missing), CloudStackVmNotFoundError);
  assert.equal((await cs.getVolume(v.id))!.jobid, undefined);
});

test('attach/detach: device ids 1, 2, 4 (3 is the CD-ROM), states, idempotency (§3)', async () => {
  const vm = env.targets[0]!.id;
  const vols = [await newVolume(), await newVolume(), await newVolume()];
  const seen: string[] = [];
  const attached = [];
  for (const v of vols) attached.push(await cs.attachVolume(v.id, vm, { onJobStarted: (j) => seen.push(j) }));
  assert.deepEqual(
    attached.map((v) => v.deviceid),
    [1, 2, 4],
  );
  assert.equal(seen.length, 3, 'each attach started exactly one job');
  assert.ok(attached.every((v) => v.state === 'Ready' && v.virtualmachineid === vm));
  // Already attached to the wanted VM: success without a new job.
  const again = await cs.attachVolume(vols[0]!.id, vm, { onJobStarted: (j) => seen.push(j) });
  assert.equal(again.deviceid, 1);
  assert.equal(seen.length, 3);
  // Attached elsewhere: a clear conflict, never retried.
  await assert.rejects(cs.attachVolume(vols[0]!.id, env.appliance.id), CloudStackConflictError);
  // Detach, then detach again: success both times.
  const d = await cs.detachVolume(vols[1]!.id, { fromVmId: vm });
  assert.equal(d.virtualmachineid, undefined);
  assert.equal((await cs.detachVolume(vols[1]!.id)).virtualmachineid, undefined);
  // The freed device id 2 is reused.
  assert.equal((await cs.attachVolume(vols[1]!.id, vm)).deviceid, 2);
  for (const v of vols) await cs.detachVolume(v.id);
});

test('the server-side rules fail inside the job with CloudStack texts (§3)', async () => {
  const v = await newVolume();
  await cs.attachVolume(v.id, env.appliance.id);
  // Talk to the API directly: the client would refuse before asking.
  const start = await raw({
    command: 'attachVolume',
    id: v.id,
    virtualmachineid: env.targets[0]!.id,
    response: 'json',
    apiKey: env.sim.apiKey,
  });
  assert.equal(start.status, 200);
  await assert.rejects(
    cs.waitForJob('attachVolume', String(start.body.attachvolumeresponse!.jobid)),
    (e: unknown) =>
      e instanceof CloudStackError &&
      e.inJob &&
      e.errorcode === 431 &&
      /not attached to any VM/.test(e.errortext),
  );
  // ROOT volumes detach only from a stopped VM.
  const root = (await cs.listVolumes({ virtualmachineid: env.appliance.id })).find((x) => x.type === 'ROOT')!;
  const det = await raw({ command: 'detachVolume', id: root.id, response: 'json', apiKey: env.sim.apiKey });
  await assert.rejects(
    cs.waitForJob('detachVolume', String(det.body.detachvolumeresponse!.jobid)),
    /Root volume detach/,
  );
  // deleteVolume of an attached volume: synchronous 431/4350.
  const del = await raw({ command: 'deleteVolume', id: v.id, response: 'json', apiKey: env.sim.apiKey });
  assert.equal(del.status, 431);
  assert.equal(del.body.deletevolumeresponse!.cserrorcode, 4350);
  await cs.detachVolume(v.id);
});

test('data-disk limit fails the job with 431 (§3, configurable)', async () => {
  env.sim.state.maxDataVolumes = 1;
  try {
    const vm = env.sim.state.addVm({ name: 'small', zoneid: env.zone.id });
    const a = await newVolume();
    const b = await newVolume();
    await cs.attachVolume(a.id, vm.id);
    await assert.rejects(cs.attachVolume(b.id, vm.id), /maximum number of data disks \(1\)/);
  } finally {
    env.sim.state.maxDataVolumes = 32;
  }
});

test('unknown ids: 431 with the text clients match; getVolume → undefined (§2.5)', async () => {
  const missing = '00000000-aaaa-bbbb-cccc-000000000000';
  assert.equal(await cs.getVolume(missing), undefined);
  const r = await raw({ command: 'listVolumes', id: missing, response: 'json', apiKey: env.sim.apiKey });
  assert.equal(r.status, 431);
  assert.match(
    String(r.body.listvolumesresponse!.errortext),
    /Invalid parameter id value=.* entity does not exist/,
  );
  assert.equal(r.body.listvolumesresponse!.cserrorcode, 9999);
  assert.deepEqual(r.body.listvolumesresponse!.uuidList, []);
});

test('delete is synchronous and idempotent; a second delete is success for our client (§2.4)', async () => {
  const v = await newVolume();
  await cs.deleteVolume(v.id);
  assert.equal(await cs.getVolume(v.id), undefined);
  await cs.deleteVolume(v.id);
});

test('authentication: bad signature, expired request, unknown command → 401 envelopes (§1.1, fact 5)', async () => {
  const p = { command: 'listVolumes', response: 'json', apiKey: env.sim.apiKey };
  const bad = await raw(p, 'wrong-secret');
  assert.equal(bad.status, 401);
  assert.deepEqual(bad.body, {
    listvolumesresponse: {
      uuidList: [],
      errorcode: 401,
      errortext: 'unable to verify user credentials and/or request signature',
    },
  });
  assert.equal(bad.type, 'application/json; charset=UTF-8');
  const expired = await raw({ ...p, signatureversion: '3', expires: '2001-01-01T00:00:00Z' });
  assert.equal(expired.status, 401);
  const unknown = await raw({ ...p, command: 'launchRockets' });
  assert.equal(unknown.status, 401);
  assert.ok('errorresponse' in unknown.body);
  const ok = await raw(p);
  assert.equal(ok.status, 200);
  assert.equal(Object.keys(ok.body).length, 1, 'exactly one top-level key');
});

test('async job JSON: pending has no jobresult; done is flat with jobresulttype object (§2.7)', async () => {
  env.sim.jobDurationMs = 300;
  try {
    const v = await newVolume();
    const start = await raw({
      command: 'attachVolume',
      id: v.id,
      virtualmachineid: env.targets[0]!.id,
      response: 'json',
      apiKey: env.sim.apiKey,
    });
    const jobid = String(start.body.attachvolumeresponse!.jobid);
    const pending = (
      await raw({ command: 'queryAsyncJobResult', jobid, response: 'json', apiKey: env.sim.apiKey })
    ).body.queryasyncjobresultresponse!;
    assert.equal(pending.jobstatus, 0);
    assert.equal('jobresult' in pending, false);
    assert.equal('jobresulttype' in pending, false);
    const done = (await cs.waitForJob('attachVolume', jobid)) as { volume: Record<string, unknown> };
    assert.equal(done.volume.virtualmachineid, env.targets[0]!.id);
    assert.equal(typeof done.volume.deviceid, 'number');
    await cs.detachVolume(v.id);
  } finally {
    env.sim.jobDurationMs = 30;
  }
});

test('injected faults: retryable classification, job failure, timeout, lost reply survived', async () => {
  const v = await newVolume();
  env.sim.faults.inject({ command: 'listVolumes', kind: 'error', errorcode: 530 });
  await assert.rejects(
    cs.getVolume(v.id),
    (e: unknown) => e instanceof CloudStackError && e.errorcode === 530 && e.retryable,
  );
  env.sim.faults.inject({ command: 'listVolumes', kind: 'error', errorcode: 531 });
  await assert.rejects(cs.getVolume(v.id), (e: unknown) => e instanceof CloudStackError && !e.retryable);
  env.sim.faults.inject({ command: 'attachVolume', kind: 'job-error', errorcode: 534 });
  await assert.rejects(
    cs.attachVolume(v.id, env.targets[0]!.id),
    (e: unknown) => e instanceof CloudStackError && e.inJob && e.retryable,
  );
  assert.equal(
    (await cs.getVolume(v.id))!.virtualmachineid,
    undefined,
    'failed job left the volume as it was',
  );
  env.sim.faults.inject({ command: 'listVolumes', kind: 'timeout' });
  await assert.rejects(
    cs.getVolume(v.id),
    (e: unknown) => e instanceof CloudStackNetworkError && e.retryable,
  );
  // CloudStack acts, the reply is lost; the retry (what Temporal does) finds it done.
  env.sim.faults.inject({ command: 'attachVolume', kind: 'lost-reply' });
  await assert.rejects(cs.attachVolume(v.id, env.targets[0]!.id), CloudStackNetworkError);
  const after = await cs.attachVolume(v.id, env.targets[0]!.id);
  assert.equal(after.virtualmachineid, env.targets[0]!.id);
  assert.equal(after.deviceid, 1, 'attached once: one device id taken');
  env.sim.faults.inject({ command: 'deleteVolume', kind: 'lost-reply' });
  await cs.detachVolume(v.id);
  await assert.rejects(cs.deleteVolume(v.id), CloudStackNetworkError);
  await cs.deleteVolume(v.id); // retry: already gone → success
});

test('the test-only fault endpoint works over HTTP and is off unless enabled', async () => {
  const res = await fetch(new URL('/sim/faults', env.sim.url), {
    method: 'POST',
    body: JSON.stringify({ command: 'listVolumes', kind: 'error', errorcode: 533 }),
  });
  assert.equal(res.status, 200);
  await assert.rejects(cs.listVolumes(), (e: unknown) => e instanceof CloudStackError && e.errorcode === 533);
  const closed = await startSimulator({});
  try {
    assert.equal(
      (await fetch(new URL('/sim/faults', closed.sim.url), { method: 'POST', body: '{}' })).status,
      404,
    );
  } finally {
    await closed.sim.close();
  }
});

test('attach as ROOT (deviceid 0): only to a Stopped VM without a root; it becomes ROOT, and DATADISK again when detached', async () => {
  const vm = env.targets[0]!;
  const root = (await cs.listVolumes({ virtualmachineid: vm.id })).find((v) => v.deviceid === 0)!;
  const os = await newVolume(3);
  // Running VM: refused, with the text CloudStack uses for root attach and detach alike.
  await assert.rejects(
    cs.attachVolume(os.id, vm.id, { deviceId: 0 }),
    (e: unknown) =>
      e instanceof CloudStackError &&
      e.errorcode === 431 &&
      /only when vm is in states: Stopped/.test(e.message),
  );
  env.sim.state.vms.get(vm.id)!.state = 'Stopped';
  try {
    await assert.rejects(
      cs.attachVolume(os.id, vm.id, { deviceId: 0 }),
      (e: unknown) =>
        e instanceof CloudStackError && /Vm already has root volume attached to it/.test(e.message),
    );
    await cs.detachVolume(root.id, { fromVmId: vm.id });
    const attached = await cs.attachVolume(os.id, vm.id, { deviceId: 0 });
    assert.deepEqual([attached.deviceid, attached.type, attached.virtualmachineid], [0, 'ROOT', vm.id]);
    assert.equal((await cs.attachVolume(os.id, vm.id, { deviceId: 0 })).id, os.id, 'again: idempotent');
    const off = await cs.detachVolume(os.id, { fromVmId: vm.id });
    assert.deepEqual([off.type, off.virtualmachineid], ['DATADISK', undefined]);
    await cs.attachVolume(root.id, vm.id, { deviceId: 0 });
  } finally {
    env.sim.state.vms.get(vm.id)!.state = 'Running';
  }
});

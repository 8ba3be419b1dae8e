import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { SagaProgress } from '../../src/domain/operations.js';
import { GUEST_EXPORTS_DIR } from '../../harness/lab/stack.js';
import { DEFAULT_NBDKIT_PID_FILE } from '../../src/nbd/index.js';
import { commandOf, isAlive, parsePid } from '../../src/nbd/process.js';
import { assertConsistent } from '../support/checks.js';
import { recordHistory } from '../support/histories.js';
import { startLabStack, type LabStack } from '../support/lab-stack.js';
import {
  auditOf,
  expectCancelled,
  expectFailure,
  snapshot as snap,
  waitForStep,
} from '../support/saga-state.js';

/**
 * Each saga step made to fail for good with a real fault, and cancellation and operator abort
 * in flight; afterwards CloudStack, the kernel's dm tables, the NBD exports and the database
 * hold what they held before, and the audit trail shows the failure and every compensation.
 */
let s: LabStack;
before(async () => (s = await startLabStack('comp', { correlationTimeoutMs: 4000 })));
after(() => s?.close());

let disk = 0;
const base = () => ({ applianceVmId: s.applianceVmId });
const nextAttach = (volumeId: string) => ({
  ...base(),
  volumeId,
  sourceVmName: 'comp',
  diskKey: 2000 + disk++,
});

const snapshot = (volumeId: string) => snap(s, volumeId);
const compensationsOf = (volumeId: string, type: string) => auditOf(s, volumeId, type);

test('attach fails at correlation (disk arrives without its serial): everything undone', async () => {
  const volumeId = await s.createVolume();
  const before = await snapshot(volumeId);
  s.hypervisorOverride.wrap = (inner) => ({
    attach: (a) => inner.attach(a.volumeId === volumeId ? { ...a, serial: 'noserialmatch0000000' } : a),
    detach: (a) => inner.detach(a),
  });
  try {
    const h = await s.volumes.attach(nextAttach(volumeId));
    await expectFailure(h.result(), /step "correlate".*no block device with virtio serial/);
    await recordHistory(s.temporal, h.workflowId, h.runId, 'attach-fail-correlate');
  } finally {
    delete s.hypervisorOverride.wrap;
  }
  assert.deepEqual(await snapshot(volumeId), before);
  const { op, steps } = await compensationsOf(volumeId, 'attach');
  assert.equal(op.status, 'compensated');
  assert.ok(steps.includes('forward:correlate:failed'));
  assert.ok(steps.includes('compensation:undo:cloudstack-attach:completed'));
  assert.ok(steps.includes('compensation:undo:assign-name:completed'));
  await assertConsistent(s, 'after correlate failure');
});

test('attach fails at the dm step (a foreign dm device holds the name): compensated, foreign device untouched', async () => {
  const volumeId = await s.createVolume();
  const name = `compdisk${disk}`;
  await s.lab.runner.run('dmsetup', ['create', name, '--table', '0 8 zero']);
  try {
    const before = await snapshot(volumeId);
    const h = await s.volumes.attach(nextAttach(volumeId));
    await expectFailure(h.result(), /step "dm-map".*is not ours/);
    await recordHistory(s.temporal, h.workflowId, h.runId, 'attach-fail-dm');
    assert.deepEqual(await snapshot(volumeId), before);
    assert.equal(await s.dmTable(name), '0 8 zero', 'the foreign device is untouched');
    const { steps } = await compensationsOf(volumeId, 'attach');
    assert.ok(steps.includes('forward:dm-map:failed'));
    assert.ok(steps.includes('compensation:undo:cloudstack-attach:completed'));
  } finally {
    await s.lab.runner.run('dmsetup', ['remove', name]);
  }
});

test('attach fails at the export step (a file squats on the export name): dm, row and attachment undone', async () => {
  const volumeId = await s.createVolume();
  const exportName = `migration-vol-compdisk${disk}`;
  await s.lab.runner.run('mkdir', ['-p', GUEST_EXPORTS_DIR]);
  await s.lab.runner.run('touch', [`${GUEST_EXPORTS_DIR}/${exportName}`]);
  try {
    const before = await snapshot(volumeId);
    const h = await s.volumes.attach(nextAttach(volumeId));
    await expectFailure(h.result(), /step "ensure-export"/);
    assert.deepEqual(await snapshot(volumeId), before);
    const { steps } = await compensationsOf(volumeId, 'attach');
    for (const undo of ['dm-map', 'record-mapping', 'cloudstack-attach', 'assign-name']) {
      assert.ok(steps.includes(`compensation:undo:${undo}:completed`), `${undo} undone: ${steps.join(' ')}`);
    }
  } finally {
    await s.lab.runner.run('rm', ['-f', `${GUEST_EXPORTS_DIR}/${exportName}`]);
  }
  await assertConsistent(s, 'after export failure');
});

test('attach fails in CloudStack (job fails with 431): the new name is released', async () => {
  const volumeId = await s.createVolume();
  const before = await snapshot(volumeId);
  s.sim.sim.faults.inject({
    command: 'attachVolume',
    kind: 'job-error',
    errorcode: 431,
    errortext: 'Please specify a VM that is either running or stopped.',
  });
  const h = await s.volumes.attach(nextAttach(volumeId));
  await expectFailure(h.result(), /step "cloudstack-attach".*running or stopped/);
  await recordHistory(s.temporal, h.workflowId, h.runId, 'attach-fail-cloudstack');
  assert.deepEqual(await snapshot(volumeId), before);
});

/** An attached, exported volume with data, for the move sagas. */
async function attachedVolume() {
  const volumeId = await s.createVolume();
  const r = await (await s.volumes.attach(nextAttach(volumeId))).result();
  return { volumeId, access: r.access! };
}

test('failover fails attaching to the target: re-attached to the appliance, dm linear again, export serves', async () => {
  const { volumeId } = await attachedVolume();
  const before = await snapshot(volumeId);
  s.sim.sim.faults.inject({ command: 'attachVolume', kind: 'job-error', errorcode: 431, count: 1 });
  const h = await s.volumes.failover({ ...base(), volumeId, targetVmId: s.targetVmId });
  await expectFailure(h.result(), /step "cloudstack-attach-target"/);
  await recordHistory(s.temporal, h.workflowId, h.runId, 'failover-fail-target');
  assert.deepEqual(await snapshot(volumeId), before);
  const { steps } = await compensationsOf(volumeId, 'failover');
  assert.ok(steps.includes('compensation:undo:cloudstack-detach:completed'));
  assert.ok(steps.includes('compensation:undo:dm-error:completed'));
  await assertConsistent(s, 'after failover compensation');
});

test('failback fails at correlation: back on the target VM, dm still the error target', async () => {
  const { volumeId } = await attachedVolume();
  await (await s.volumes.failover({ ...base(), volumeId, targetVmId: s.targetVmId })).result();
  const before = await snapshot(volumeId);
  assert.equal(before.dmKind, 'error');
  s.hypervisorOverride.wrap = (inner) => ({
    attach: (a) => inner.attach(a.volumeId === volumeId ? { ...a, serial: 'noserialmatch0000001' } : a),
    detach: (a) => inner.detach(a),
  });
  try {
    const h = await s.volumes.failback({ ...base(), volumeId });
    await expectFailure(h.result(), /step "correlate"/);
    await recordHistory(s.temporal, h.workflowId, h.runId, 'failback-fail-correlate');
  } finally {
    delete s.hypervisorOverride.wrap;
  }
  assert.deepEqual(await snapshot(volumeId), before);
  const { steps } = await compensationsOf(volumeId, 'failback');
  assert.ok(steps.includes('compensation:undo:cloudstack-attach:completed'));
  assert.ok(steps.includes('compensation:undo:cloudstack-detach-target:completed'));
  await assertConsistent(s, 'after failback compensation');
});

test('delete fails at the pivot (CloudStack refuses): export, dm device and attachment restored', async () => {
  const { volumeId, access } = await attachedVolume();
  const before = await snapshot(volumeId);
  s.sim.sim.faults.inject({
    command: 'deleteVolume',
    kind: 'error',
    errorcode: 531,
    errortext: 'Account has no permission',
  });
  const h = await s.volumes.delete({ ...base(), volumeId });
  await expectFailure(h.result(), /step "cloudstack-delete".*permission/);
  await recordHistory(s.temporal, h.workflowId, h.runId, 'delete-fail-pivot');
  assert.deepEqual(await snapshot(volumeId), before);
  assert.ok((await s.servedExports()).includes(access.exportName));
  await assertConsistent(s, 'after delete compensation');
});

test('cancel during an attach: the workflow ends cancelled and everything is undone', async () => {
  const volumeId = await s.createVolume();
  const before = await snapshot(volumeId);
  s.sim.sim.jobDurationMs = 1500; // the attach job is in flight when the cancel arrives
  try {
    const h = await s.volumes.attach(nextAttach(volumeId));
    await waitForStep(h, 'cloudstack-attach');
    await s.temporal.workflow.getHandle(h.workflowId, h.runId).cancel();
    await expectCancelled(h.result());
    await recordHistory(s.temporal, h.workflowId, h.runId, 'attach-cancelled');
  } finally {
    s.sim.sim.jobDurationMs = 20;
  }
  assert.deepEqual(await snapshot(volumeId), before);
  assert.equal((await compensationsOf(volumeId, 'attach')).op.status, 'cancelled');
});

test('operator abort through the update: compensated, and the reason is in the failure', async () => {
  const volumeId = await s.createVolume();
  const before = await snapshot(volumeId);
  s.sim.sim.jobDurationMs = 1500;
  try {
    const h = await s.volumes.attach(nextAttach(volumeId));
    await waitForStep(h, 'cloudstack-attach');
    const answer = await s.volumes.operator(volumeId, {
      action: 'abort',
      reason: 'wrong volume',
      operator: 'alice',
    });
    assert.match(answer, /aborting/);
    await expectFailure(h.result(), /aborted by alice: wrong volume/);
  } finally {
    s.sim.sim.jobDurationMs = 20;
  }
  assert.deepEqual(await snapshot(volumeId), before);
});

test('a compensation that fails for good parks the saga (NeedsAttention) until an operator retries', async () => {
  const volumeId = await s.createVolume();
  const before = await snapshot(volumeId);
  const name = `compdisk${disk}`;
  await s.lab.runner.run('dmsetup', ['create', name, '--table', '0 8 zero']); // dm step will fail
  // …and so will undoing the CloudStack attach, every time, until the operator steps in.
  s.sim.sim.faults.inject({
    command: 'detachVolume',
    kind: 'job-error',
    errorcode: 431,
    errortext: 'detach refused',
    count: 1000,
  });
  try {
    const h = await s.volumes.attach(nextAttach(volumeId));
    let p: SagaProgress | undefined;
    while (p?.state !== 'waiting-for-operator') {
      p = await h.progress();
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(p.needsAttention?.step, 'cloudstack-attach');
    assert.match(p.needsAttention!.error, /detach refused/);
    const desc = await s.temporal.workflow.getHandle(h.workflowId, h.runId).describe();
    assert.equal(desc.typedSearchAttributes.get({ name: 'NeedsAttention', type: 'BOOL' } as never), true);
    await assert.rejects(s.volumes.operator(volumeId, { action: 'retry', reason: '' }), /reason/);
    s.sim.sim.faults.clear();
    await s.volumes.operator(volumeId, { action: 'retry', reason: 'CloudStack fixed', operator: 'bob' });
    await expectFailure(h.result(), /step "dm-map"/);
    await recordHistory(s.temporal, h.workflowId, h.runId, 'attach-operator-retry');
    const { steps } = await compensationsOf(volumeId, 'attach');
    assert.ok(steps.includes('compensation:undo:cloudstack-attach:failed'));
    assert.ok(steps.includes('operator:operator:retry:completed'));
    assert.ok(steps.includes('compensation:undo:cloudstack-attach:completed'));
  } finally {
    s.sim.sim.faults.clear();
    await s.lab.runner.run('dmsetup', ['remove', name]);
  }
  assert.deepEqual(await snapshot(volumeId), before);
});

test('attach while the NBD server is down: the export step starts it again, the export is served', async () => {
  const pidOf = async () => parsePid((await s.lab.runner.run('cat', [DEFAULT_NBDKIT_PID_FILE])).stdout);
  const old = await pidOf();
  assert.ok(old && (await isAlive(s.lab.runner, old)), 'nbdkit runs before the fault');
  await s.lab.runner.run('kill', ['-KILL', String(old)]);
  for (let i = 0; (await isAlive(s.lab.runner, old)) && i < 100; i++)
    await new Promise((r) => setTimeout(r, 100));
  await assert.rejects(s.servedExports(), 'nothing answers on the NBD port');

  const volumeId = await s.createVolume();
  const r = await (await s.volumes.attach(nextAttach(volumeId))).result();
  const now = await pidOf();
  assert.ok(now && now !== old && (await commandOf(s.lab.runner, now)) === 'nbdkit', 'a new nbdkit');
  assert.ok((await s.servedExports()).includes(r.access!.exportName), 'the new export is served');
  await assertConsistent(s, 'after the NBD server came back with the attach');
});

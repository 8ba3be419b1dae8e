import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { WorkflowFailedError } from '@temporalio/client';
import { listSteps } from '../../src/db/operations.js';
import type { Failpoint } from '../../src/worker/failpoints.js';
import type { OperationHandle } from '../../src/client/index.js';
import { assertConsistent } from '../support/checks.js';
import { startLabStack, type LabStack } from '../support/lab-stack.js';
import { expectCancelled, expectFailure, outcome, snapshot } from '../support/saga-state.js';
import { STEPS, type Saga } from '../support/saga-steps.js';

/**
 * The step matrix on the real kernel: for every step of every saga from the first that changes the
 * appliance on, one run where that step fails for good and one
 * where the workflow is cancelled while that step's activity is in flight. Faults come from
 * failpoints in the real workers (src/worker/failpoints.ts): the step's activity really acts and
 * then reports failure — "done, but the reply was lost", the hardest case for an undo — or is
 * held until the cancel has been requested and then acts. Afterwards CloudStack, the kernel's dm
 * table, the NBD server and the database hold exactly what they held before, and the audit trail
 * shows the failed step and every compensation completed.
 */
let s: LabStack;
before(async () => (s = await startLabStack('steps', { correlationTimeoutMs: 5000 })));
after(() => s?.close());

let n = 0;
const base = () => ({ applianceVmId: s.applianceVmId });
const attachInput = (volumeId: string, diskKey: number) => ({
  ...base(),
  volumeId,
  sourceVmName: 'steps',
  diskKey,
});

/** A volume in the state the saga starts from, and how to start the saga on it. */
async function prepare(saga: Saga): Promise<{ volumeId: string; start: () => Promise<OperationHandle> }> {
  const volumeId = await s.createVolume();
  const diskKey = 2000 + n++;
  if (saga !== 'attach') await (await s.volumes.attach(attachInput(volumeId, diskKey))).result();
  if (saga === 'failback')
    await (await s.volumes.failover({ ...base(), volumeId, targetVmId: s.targetVmId })).result();
  const start = {
    attach: () => s.volumes.attach(attachInput(volumeId, diskKey)),
    detach: () => s.volumes.detach({ ...base(), volumeId }),
    failover: () => s.volumes.failover({ ...base(), volumeId, targetVmId: s.targetVmId }),
    failback: () => s.volumes.failback({ ...base(), volumeId }),
    delete: () => s.volumes.delete({ ...base(), volumeId }),
  }[saga];
  return { volumeId, start };
}

const arm = (fp: Failpoint) => s.failpointsFor(fp.activityType).arm(fp);

/**
 * Until the step's activity is running on a worker, held by its failpoint. The failpoint's own
 * `.held` file says so: a local activity (the database and CloudStack-read steps) never shows in
 * Temporal's pending activities, a remote one does only after it started.
 */
async function waitHeld(h: OperationHandle, fp: Failpoint): Promise<void> {
  const wf = s.temporal.workflow.getHandle(h.workflowId, h.runId);
  while (!(await s.failpointsFor(fp.activityType).held(fp.id))) {
    const d = await wf.describe();
    assert.equal(d.status.name, 'RUNNING', `the workflow ended before ${fp.activityType} started`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function audit(operationId: string) {
  return (await listSteps(s.db.pool, operationId)).map((x) => `${x.phase}:${x.step}:${x.status}`);
}

/**
 * Steps that fail before anything on the appliance has changed (CloudStack and database only):
 * their faults and cancels are proven, with every other call, by the workflow tier
 * (test/workflow/step-faults.test.ts) in seconds; the lab keeps the cases where undoing means
 * undoing real device-mapper, udev, hot-plug and NBD state.
 */
const BEFORE_ANY_DEVICE_STEP: Record<Saga, string[]> = {
  attach: ['validate', 'assign-name'],
  detach: ['validate'],
  failover: ['validate'],
  failback: ['validate', 'cloudstack-detach-target'],
  delete: ['validate'],
};

for (const saga of Object.keys(STEPS) as Saga[]) {
  describe(`${saga}: every step that reaches the appliance`, () => {
    let vol: Awaited<ReturnType<typeof prepare>>;
    before(async () => (vol = await prepare(saga)));

    for (const [step, activityType] of STEPS[saga].filter(
      ([st]) => !BEFORE_ANY_DEVICE_STEP[saga].includes(st),
    )) {
      test(`fails for good at "${step}": everything as before, compensations audited`, async () => {
        const before = await snapshot(s, vol.volumeId);
        const fp: Failpoint = {
          id: `fail-${saga}-${step}-${n++}`,
          workflowId: `volume:${vol.volumeId}`,
          activityType,
          action: step === 'cloudstack-delete' ? 'fail-before' : 'fail-after',
        };
        await arm(fp);
        const h = await vol.start();
        await expectFailure(outcome(h, s.db.pool), new RegExp(`at step "${step}".*failpoint ${fp.id}`));
        assert.deepEqual(await snapshot(s, vol.volumeId), before, 'every component as before');
        const steps = await audit(h.operationId);
        assert.ok(steps.includes(`forward:${step}:failed`), steps.join(' '));
        assert.ok(!steps.some((x) => x.endsWith(':failed') && x.startsWith('compensation')), steps.join(' '));
        assert.ok(!steps.includes(`forward:${step}:completed`));
        await assertConsistent(s, `${saga} after failing at ${step}`);
      });

      test(`cancelled while "${step}" is in flight: everything as before`, async () => {
        const before = await snapshot(s, vol.volumeId);
        const fp: Failpoint = {
          id: `hold-${saga}-${step}-${n++}`,
          workflowId: `volume:${vol.volumeId}`,
          activityType,
          action: 'hold',
        };
        await arm(fp);
        const h = await vol.start();
        await waitHeld(h, fp);
        await s.temporal.workflow.getHandle(h.workflowId, h.runId).cancel();
        // The activity goes on and acts after the cancel was requested, as a real one would.
        await s.failpointsFor(activityType).release(fp.id);
        if (step === 'cloudstack-delete') {
          // Past the point of no return a cancel is too late: if the delete acted, it finishes
          // forward; if the cancel reached the held activity first, nothing was deleted.
          const finished = await outcome(h, s.db.pool).then(
            () => true,
            (e: unknown) => {
              if (e instanceof WorkflowFailedError) return false;
              throw e;
            },
          );
          if (finished) {
            const after = await snapshot(s, vol.volumeId);
            assert.deepEqual(after, { ...after, exists: false, row: null, export: null, dmKind: null });
            vol = await prepare(saga);
            return;
          }
          await expectCancelled(h.result());
        } else await expectCancelled(outcome(h, s.db.pool));
        assert.deepEqual(await snapshot(s, vol.volumeId), before, 'every component as before');
        const steps = await audit(h.operationId);
        assert.ok(steps.includes(`forward:${step}:failed`) || steps.includes(`forward:${step}:completed`));
        assert.ok(!steps.some((x) => x.endsWith(':failed') && x.startsWith('compensation')), steps.join(' '));
        await assertConsistent(s, `${saga} after a cancel at ${step}`);
      });
    }
  });
}

test('delete fails after the pivot (removing the rows): nothing undone, a second delete finishes', async () => {
  const { volumeId, start } = await prepare('delete');
  const fp: Failpoint = {
    id: `fail-delete-remove-rows-${n++}`,
    workflowId: `volume:${volumeId}`,
    activityType: 'dbDeleteMapping',
    action: 'fail-before',
  };
  await arm(fp);
  const h = await start();
  await expectFailure(
    outcome(h, s.db.pool),
    /at step "remove-rows".*past its point of no return, nothing undone/,
  );
  const mid = await snapshot(s, volumeId);
  assert.equal(mid.exists, false, 'the volume is gone from CloudStack (past the pivot)');
  assert.ok(mid.row, 'its row is left for the retry to remove');
  await (await start()).result();
  const end = await snapshot(s, volumeId);
  assert.equal(end.row, null);
  assert.equal(end.exists, false);
  await assertConsistent(s, 'after the second delete');
});

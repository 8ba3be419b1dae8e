import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { getMapping } from '../../src/db/mappings.js';
import type { SagaProgress } from '../../src/domain/operations.js';
import { assertConsistent } from '../support/checks.js';
import { startLabStack, type LabStack } from '../support/lab-stack.js';
import { assertCompletedState, auditOf, outcome } from '../support/saga-state.js';
import { STEPS } from '../support/saga-steps.js';

/**
 * Durability on real parts. The worker that runs a step is killed with SIGKILL — the appliance's
 * host worker for device steps, the control worker (a separate process here, running the
 * workflows too) for CloudStack and database steps — right after the step has acted and before
 * it could report (a crash-after failpoint), at every step of every saga. A
 * new worker starts; the operation finishes correctly and every component agrees.
 */
let s: LabStack;
before(
  async () => (s = await startLabStack('crash', { correlationTimeoutMs: 90_000, controlWorker: 'process' })),
);
after(() => s?.close());

test('kill -9 of the host worker mid-correlation: the attach still completes, state consistent', async () => {
  const volumeId = await s.createVolume();
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  // CloudStack's job completes, but the disk reaches the guest only once the gate opens (as when
  // the guest is slow to see a hot-plug): the saga sits in `correlate` on the host worker.
  const plugged: Promise<void>[] = [];
  s.hypervisorOverride.wrap = (inner) => ({
    attach: async (a) => {
      if (a.volumeId !== volumeId) return inner.attach(a);
      plugged.push(gate.then(() => inner.attach(a)));
    },
    detach: (a) => inner.detach(a),
  });
  try {
    s.sim.sim.jobDurationMs = 20;
    const h = await s.volumes.attach({
      applianceVmId: s.applianceVmId,
      volumeId,
      sourceVmName: 'crashvm',
      diskKey: 2000,
    });
    let p: SagaProgress | undefined;
    while (p?.currentStep !== 'correlate') {
      p = await h.progress().catch(() => undefined);
      await new Promise((r) => setTimeout(r, 50));
    }
    await s.restartHostWorker(); // SIGKILL while correlate runs on it, then a fresh worker
    release();
    await Promise.all(plugged);
    const r = await h.result();
    assert.equal(r.access?.persistentName, 'crashvmdisk0');
    assert.equal((await getMapping(s.db.pool, volumeId))?.dmState, 'linear');
    assert.ok((await s.servedExports()).includes('migration-vol-crashvmdisk0'));
    await assertConsistent(s, 'after the worker crash');
  } finally {
    release();
    delete s.hypervisorOverride.wrap;
  }
});

let n = 0;
const base = () => ({ applianceVmId: s.applianceVmId });

const CRASH_STEPS = { ...STEPS, delete: [...STEPS.delete, ['remove-rows', 'dbDeleteMapping']] };

for (const saga of ['attach', 'detach', 'failover', 'failback', 'delete'] as const) {
  for (const [step, activityType] of CRASH_STEPS[saga]) {
    const worker = activityType.startsWith('host') ? 'host' : 'control';
    test(`${saga}: kill -9 of the ${worker} worker right after "${step}" acted — the ${saga} completes`, async () => {
      const volumeId = await s.createVolume();
      const attach = { ...base(), volumeId, sourceVmName: 'crashsteps', diskKey: 2000 + n++ };
      if (saga !== 'attach') await (await s.volumes.attach(attach)).result();
      if (saga === 'failback')
        await (await s.volumes.failover({ ...base(), volumeId, targetVmId: s.targetVmId })).result();
      const id = `crash-${saga}-${step}-${n++}`;
      const restarts = s.hostWorkerRestarts();
      await s
        .failpointsFor(activityType)
        .arm({ id, workflowId: `volume:${volumeId}`, activityType, action: 'crash-after' });
      const h = await {
        attach: () => s.volumes.attach(attach),
        failover: () => s.volumes.failover({ ...base(), volumeId, targetVmId: s.targetVmId }),
        failback: () => s.volumes.failback({ ...base(), volumeId }),
        detach: () => s.volumes.detach({ ...base(), volumeId }),
        delete: () => s.volumes.delete({ ...base(), volumeId }),
      }[saga]();
      if (worker === 'host') {
        await s.waitHostWorkerRestart(restarts); // its supervisor starts a new one
      } else {
        await s.waitControlWorkerDead();
        await s.respawnControlWorker();
      }
      const r = await outcome(h);
      await assertCompletedState(s, saga, volumeId, r);
      const { steps } = await auditOf(s, volumeId, saga);
      assert.ok(steps.includes(`forward:${step}:completed`), steps.join(' '));
      await assertConsistent(s, `${saga} after a crash at ${step}`);
    });
  }
}

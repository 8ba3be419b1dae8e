import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { VolumeLifecycleClient } from '../../src/client/index.js';
import type { Failpoints } from '../../src/worker/failpoints.js';
import { assertCompletedState, auditOf, outcome, type StateView } from './saga-state.js';
import { STEPS, type Saga } from './saga-steps.js';

/** Every step, plus the delete's row removal after its pivot (a crash there must finish it). */
const CRASH_STEPS = { ...STEPS, delete: [...STEPS.delete, ['remove-rows', 'dbDeleteMapping']] };

/**
 * One test per step of each saga run by `workers`: the worker that runs the step (the appliance's
 * host worker for device steps, the control worker — its own process — for CloudStack and
 * database steps) is killed with SIGKILL right after the step acted, before it could report (a
 * crash-after failpoint). A new worker starts; the saga completes and every component agrees.
 */
export interface CrashStack extends StateView {
  applianceVmId: string;
  targetVmId: string;
  volumes: VolumeLifecycleClient;
  createVolume(): Promise<string>;
  failpointsFor(activityType: string): Failpoints;
  waitControlWorkerDead(): Promise<void>;
  respawnControlWorker(): Promise<void>;
  /** Host-worker kills: the lab's supervised appliance worker. */
  hostWorkerRestarts?(): number;
  waitHostWorkerRestart?(after: number): Promise<void>;
  /** Extra whole-system check after each case (the lab's assertConsistent, the engine's rows). */
  consistent?(label: string, volumeId: string): Promise<void>;
}

export function crashAtEveryStep(
  stack: () => CrashStack,
  sagas: readonly Saga[],
  workers: 'host' | 'control',
): void {
  let n = 0;
  for (const saga of sagas) {
    for (const [step, activityType] of CRASH_STEPS[saga]) {
      const worker = activityType.startsWith('host') ? 'host' : 'control';
      if (worker !== workers) continue;
      test(`${saga}: kill -9 of the ${worker} worker right after "${step}" acted — the ${saga} completes`, async () => {
        const s = stack();
        const base = { applianceVmId: s.applianceVmId };
        const volumeId = await s.createVolume();
        const attach = { ...base, volumeId, sourceVmName: 'crashsteps', diskKey: 2000 + n++ };
        if (saga !== 'attach') await (await s.volumes.attach(attach)).result();
        if (saga === 'failback')
          await (await s.volumes.failover({ ...base, volumeId, targetVmId: s.targetVmId })).result();
        const id = `crash-${saga}-${step}-${n++}`;
        const restarts = s.hostWorkerRestarts?.() ?? 0;
        await s
          .failpointsFor(activityType)
          .arm({ id, workflowId: `volume:${volumeId}`, activityType, action: 'crash-after' });
        const h = await {
          attach: () => s.volumes.attach(attach),
          failover: () => s.volumes.failover({ ...base, volumeId, targetVmId: s.targetVmId }),
          failback: () => s.volumes.failback({ ...base, volumeId }),
          detach: () => s.volumes.detach({ ...base, volumeId }),
          delete: () => s.volumes.delete({ ...base, volumeId }),
        }[saga]();
        if (worker === 'host') {
          await s.waitHostWorkerRestart!(restarts); // its supervisor starts a new one
        } else {
          await s.waitControlWorkerDead();
          await s.respawnControlWorker();
        }
        const r = await outcome(h, s.db.pool);
        await assertCompletedState(s, saga, volumeId, r);
        const { steps } = await auditOf(s, volumeId, saga);
        assert.ok(steps.includes(`forward:${step}:completed`), steps.join(' '));
        await s.consistent?.(`${saga} after a crash at ${step}`, volumeId);
      });
    }
  }
}

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import { ScheduleOverlapPolicy } from '@temporalio/client';
import { ensureReconcileSchedule, reconcileScheduleId } from '../../src/reconcile/schedule.js';
import { connectClient } from '../../src/temporal/connection.js';

let t: Awaited<ReturnType<typeof connectClient>>;
const appliance = randomUUID();
before(async () => {
  t = await connectClient({
    TEMPORAL_ADDRESS: process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233',
    TEMPORAL_NAMESPACE: 'default',
  });
});
after(async () => {
  await t.client.schedule
    .getHandle(reconcileScheduleId(appliance))
    .delete()
    .catch(() => {});
  await t.connection.close();
});

test('the reconcile Schedule is created once, updated in place at every start, overlap SKIP', async () => {
  const input = {
    applianceVmId: appliance,
    taskQueuePrefix: 'sched-test',
    backend: 'nbdkit-dir' as const,
    dryRun: false,
    correlationTimeoutMs: 60_000,
  };
  const first = await ensureReconcileSchedule(t.client, input, '5m');
  assert.deepEqual(first, { scheduleId: `reconcile-${appliance}`, created: true });
  const second = await ensureReconcileSchedule(t.client, { ...input, dryRun: true }, '10m');
  assert.equal(second.created, false, 'a second start updates, never fails or duplicates');
  const d = await t.client.schedule.getHandle(first.scheduleId).describe();
  assert.equal(d.policies.overlap, ScheduleOverlapPolicy.SKIP);
  assert.equal(d.spec.intervals?.[0]?.every, 600_000);
  assert.equal(d.action.type, 'startWorkflow');
  assert.equal(d.action.workflowType, 'reconcileAppliance');
  assert.equal((d.action.args?.[0] as { dryRun: boolean }).dryRun, true);
});

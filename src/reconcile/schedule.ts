import {
  ScheduleAlreadyRunning,
  ScheduleOverlapPolicy,
  type Client,
  type ScheduleOptionsAction,
} from '@temporalio/client';
import type { ReconcileInput, ReconcileResult } from '../../workflows/reconcile.js';
import { controlQueue, reconcileWorkflowId } from '../temporal/task-queues.js';
import type * as workflows from '../../workflows/index.js';

/** The workflow the Schedule and `reconcileNow` start, by its exported name (checked by tsc). */
const RECONCILE_WORKFLOW: keyof typeof workflows = 'reconcileAppliance';

export function reconcileScheduleId(applianceVmId: string): string {
  return `reconcile-${applianceVmId}`;
}

/**
 * Create or update, idempotently, the Schedule that reconciles one appliance. Overlap SKIP: two
 * passes never run at once for the same appliance; a short catch-up window because a missed
 * pass is replaced by the next one, not replayed.
 */
export async function ensureReconcileSchedule(
  client: Client,
  input: ReconcileInput,
  every: string,
): Promise<{ scheduleId: string; created: boolean }> {
  const scheduleId = reconcileScheduleId(input.applianceVmId);
  const action: ScheduleOptionsAction = {
    type: 'startWorkflow',
    workflowType: RECONCILE_WORKFLOW,
    workflowId: reconcileWorkflowId(input.applianceVmId),
    taskQueue: controlQueue(input.taskQueuePrefix),
    args: [input],
  };
  const spec = { intervals: [{ every: every as `${number}m` }] };
  const policies = { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: '1 minute' as const };
  try {
    await client.schedule.create({ scheduleId, spec, action, policies });
    return { scheduleId, created: true };
  } catch (err) {
    if (!(err instanceof ScheduleAlreadyRunning)) throw err;
    await client.schedule.getHandle(scheduleId).update((prev) => ({ ...prev, spec, action, policies }));
    return { scheduleId, created: false };
  }
}

/** Reconcile now (CLI, API, tests). A pass already running on demand is joined, not duplicated. */
export async function reconcileNow(client: Client, input: ReconcileInput) {
  const handle = await client.workflow.start<typeof workflows.reconcileAppliance>(RECONCILE_WORKFLOW, {
    workflowId: `${reconcileWorkflowId(input.applianceVmId)}:on-demand`,
    taskQueue: controlQueue(input.taskQueuePrefix),
    args: [input],
    workflowIdConflictPolicy: 'USE_EXISTING',
  });
  return {
    workflowId: handle.workflowId,
    runId: handle.firstExecutionRunId,
    result: () => handle.result() as Promise<ReconcileResult>,
  };
}

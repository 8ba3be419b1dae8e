import {
  ApplicationFailure,
  CancellationScope,
  ChildWorkflowCancellationType,
  isCancellation,
  ParentClosePolicy,
  setCurrentDetails,
  setHandler,
  startChild,
  uuid4,
} from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import type { OperationResult, VmOperationInput, VmOperationProgress } from '../src/domain/operations.js';
import { volumeWorkflowId } from '../src/temporal/task-queues.js';
import { failbackVolume } from './failback.js';
import { failoverVolume } from './failover.js';
import { vmProgressQuery } from './messages.js';
import { messageOf } from './saga.js';

export { vmProgressQuery };

/**
 * A whole VM at once: every one of its volumes failed over to (or back from) the migrated VM in
 * parallel — the migration's downtime is the slowest volume, not the sum. Each volume is its own
 * saga, a child under the volume's own workflow id (`volume:<id>`), so it stays exclusive per
 * volume and compensates itself. One progress view (`vmProgress`) and one abort: cancelling this
 * workflow cancels every child still running (each undoes its completed steps), and the volumes
 * that had already finished are sent back by the opposite saga.
 */
export async function vmOperation(input: VmOperationInput): Promise<{
  type: 'failover' | 'failback';
  volumes: Record<string, OperationResult>;
}> {
  const progress: VmOperationProgress = {
    type: input.type,
    volumes: Object.fromEntries(input.volumes.map((v) => [v.volumeId, { state: 'pending' as const }])),
  };
  setHandler(vmProgressQuery, () => progress);
  const results: Record<string, OperationResult> = {};
  const failures: string[] = [];
  setCurrentDetails(`${input.type} of ${input.volumes.length} volumes`);

  const undo = async (volumeId: string) => {
    const v = input.volumes.find((x) => x.volumeId === volumeId)!;
    const child = {
      operationId: uuid4(),
      volumeId,
      applianceVmId: input.applianceVmId,
      taskQueuePrefix: input.taskQueuePrefix,
      correlationTimeoutMs: input.correlationTimeoutMs,
    };
    const options = { workflowId: volumeWorkflowId(volumeId), memo: { operationId: child.operationId } };
    try {
      await (
        input.type === 'failover'
          ? await startChild(failbackVolume, { ...options, args: [child] })
          : await startChild(failoverVolume, {
              ...options,
              args: [{ ...child, targetVmId: input.targetVmId, ...(v.asRoot ? { asRoot: true } : {}) }],
            })
      ).result();
      progress.volumes[volumeId] = { state: 'undone', operationId: child.operationId };
    } catch (err) {
      progress.volumes[volumeId] = {
        state: 'undo-failed',
        operationId: child.operationId,
        error: messageOf(err),
      };
    }
  };

  const one = async (v: VmOperationInput['volumes'][number]) => {
    const child = {
      operationId: uuid4(),
      volumeId: v.volumeId,
      applianceVmId: input.applianceVmId,
      taskQueuePrefix: input.taskQueuePrefix,
      correlationTimeoutMs: input.correlationTimeoutMs,
    };
    const options = {
      workflowId: volumeWorkflowId(v.volumeId),
      // The abort reaches every running child, which compensates and ends before we do.
      cancellationType: ChildWorkflowCancellationType.WAIT_CANCELLATION_COMPLETED,
      parentClosePolicy: ParentClosePolicy.REQUEST_CANCEL,
      memo: { operationId: child.operationId, type: input.type },
    };
    try {
      const handle =
        input.type === 'failover'
          ? await startChild(failoverVolume, {
              ...options,
              args: [{ ...child, targetVmId: input.targetVmId, ...(v.asRoot ? { asRoot: true } : {}) }],
            })
          : await startChild(failbackVolume, { ...options, args: [child] });
      progress.volumes[v.volumeId] = { state: 'running', operationId: child.operationId };
      results[v.volumeId] = await handle.result();
      progress.volumes[v.volumeId] = { state: 'completed', operationId: child.operationId };
    } catch (err) {
      if (isCancellation(err)) {
        progress.volumes[v.volumeId] = { state: 'cancelled', operationId: child.operationId };
        throw err;
      }
      const why =
        err instanceof WorkflowExecutionAlreadyStartedError
          ? `another operation is running on volume ${v.volumeId}`
          : messageOf(err);
      progress.volumes[v.volumeId] = { state: 'failed', operationId: child.operationId, error: why };
      failures.push(`${v.volumeId}: ${why}`);
    }
  };

  // allSettled, not all: on an abort every child must have compensated and ended before we do.
  const settled = await Promise.allSettled(input.volumes.map(one));
  const cancelled = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (cancelled) {
    // Aborted: the volumes still in flight have compensated themselves; the ones that had
    // finished are sent back by the opposite saga, so the VM as a whole is where it started.
    await CancellationScope.nonCancellable(() =>
      Promise.all(Object.keys(results).map((volumeId) => undo(volumeId))),
    );
    setCurrentDetails(`${input.type} aborted: every volume is back where it started`);
    throw cancelled.reason;
  }
  if (failures.length > 0) {
    throw ApplicationFailure.nonRetryable(
      `${input.type} of ${failures.length} of ${input.volumes.length} volumes failed (each compensated on its own; ` +
        `the others completed): ${failures.join('; ')}`,
      'VmOperationPartlyFailed',
      { completed: Object.keys(results), failed: failures },
    );
  }
  setCurrentDetails(`${input.type} of ${input.volumes.length} volumes completed`);
  return { type: input.type, volumes: results };
}

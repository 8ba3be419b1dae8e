import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import {
  ParentClosePolicy,
  proxyActivities,
  startChild,
  upsertMemo,
  upsertSearchAttributes,
  uuid4,
  workflowInfo,
} from '@temporalio/workflow';
import type { ControlActivities } from '../activities/control/index.js';
import type { HostActivities } from '../activities/host/index.js';
import type { FindingOutcome } from '../src/db/reconcile.js';
import { volumesToRepair, type Finding } from '../src/reconcile/drift.js';
import { EXPORT_PREFIX } from '../src/domain/device-names.js';
import { SA } from '../src/temporal/search-attributes.js';
import { hostQueue, volumeWorkflowId } from '../src/temporal/task-queues.js';
import { repairVolume } from './repair.js';
import { messageOf } from './saga.js';
import type { ExportBackendKind } from '../src/domain/mapping.js';

export interface ReconcileInput {
  applianceVmId: string;
  taskQueuePrefix: string;
  backend: ExportBackendKind;
  dryRun: boolean;
  correlationTimeoutMs: number;
}

export interface ReconcileResult {
  applianceVmId: string;
  dryRun: boolean;
  findings: FindingOutcome[];
  repaired: number;
  reported: number;
  busy: number;
  failed: number;
}

/**
 * One reconciliation pass over one appliance (a Schedule starts it, overlap SKIP). It detects;
 * it does not act behind the sagas' backs: each volume repair is a `repairVolume` workflow under
 * the volume's own id, and a volume whose id is taken by a running operation is reported busy.
 * Orphans with no database row are removed only after re-checking that no row claims them.
 */
export async function reconcileAppliance(input: ReconcileInput): Promise<ReconcileResult> {
  const info = workflowInfo();
  const control = proxyActivities<ControlActivities>({
    startToCloseTimeout: '5 minutes',
    retry: { initialInterval: '1 second', maximumInterval: '30 seconds', maximumAttempts: 5 },
  });
  const host = proxyActivities<HostActivities>({
    taskQueue: hostQueue(input.taskQueuePrefix, input.applianceVmId),
    scheduleToStartTimeout: '2 minutes',
    startToCloseTimeout: '5 minutes',
    retry: { initialInterval: '1 second', maximumInterval: '30 seconds', maximumAttempts: 5 },
  });
  upsertSearchAttributes([
    { key: SA.ApplianceVmId, value: input.applianceVmId },
    { key: SA.OperationType, value: 'reconcile' },
    { key: SA.SagaStep, value: 'inventory' },
  ]);

  const runRow = await control.reconStart({
    workflowId: info.workflowId,
    runId: info.runId,
    applianceVmId: input.applianceVmId,
    dryRun: input.dryRun,
  });
  const inventory = await host.hostInventory();
  upsertSearchAttributes([{ key: SA.SagaStep, value: 'compare' }]);
  const findings = await control.reconCompare({
    applianceVmId: input.applianceVmId,
    inventory,
    backend: input.backend,
  });
  const outcomes: FindingOutcome[] = findings.map((f) => ({
    ...f,
    outcome: f.decision === 'report' ? 'reported' : input.dryRun ? 'dry-run' : 'pending',
  }));

  if (!input.dryRun) {
    upsertSearchAttributes([{ key: SA.SagaStep, value: 'repair' }]);
    await repairOrphans(outcomes, control, host);
    await repairVolumes(outcomes, findings, input);
  }

  const result: ReconcileResult = {
    applianceVmId: input.applianceVmId,
    dryRun: input.dryRun,
    findings: outcomes,
    repaired: outcomes.filter((o) => o.outcome === 'repaired' || o.outcome === 'removed').length,
    reported: outcomes.filter((o) => o.outcome === 'reported').length,
    busy: outcomes.filter((o) => o.outcome === 'busy').length,
    failed: outcomes.filter((o) => o.outcome === 'failed').length,
  };
  await control.reconFinish({ id: runRow, status: 'completed', findings: outcomes });
  upsertSearchAttributes([{ key: SA.SagaStep, value: 'done' }]);
  upsertMemo({
    findings: outcomes.length,
    repaired: result.repaired,
    reported: result.reported,
    busy: result.busy,
  });
  return result;
}

async function repairOrphans(
  outcomes: FindingOutcome[],
  control: ControlActivities,
  host: HostActivities,
): Promise<void> {
  for (const o of outcomes) {
    if (o.decision !== 'repair' || o.volumeId) continue;
    const name =
      o.kind === 'export-orphan'
        ? o.subject.startsWith(EXPORT_PREFIX)
          ? o.subject.slice(EXPORT_PREFIX.length)
          : o.subject
        : o.subject;
    try {
      // Re-check right before acting: a saga may have claimed the name since the comparison.
      if (await control.dbNameInUse(name)) {
        o.outcome = 'skipped-now-claimed';
      } else if (o.kind === 'dm-orphan') {
        const r = await host.hostRemoveIdleDm({ name: o.subject });
        o.outcome = r === 'open' ? 'reported' : 'removed';
      } else if (o.kind === 'export-orphan') {
        await host.hostExportRemove({ exportName: o.subject });
        o.outcome = 'removed';
      }
    } catch (err) {
      // One orphan that cannot be removed is recorded; it does not stop the pass.
      o.outcome = 'failed';
      o.details = { ...(o.details ?? {}), error: messageOf(err) };
    }
  }
}

async function repairVolumes(
  outcomes: FindingOutcome[],
  findings: Finding[],
  input: ReconcileInput,
): Promise<void> {
  const repairOne = async (volumeId: string) => {
    const mine = outcomes.filter((o) => o.volumeId === volumeId && o.decision === 'repair');
    try {
      const child = await startChild(repairVolume, {
        workflowId: volumeWorkflowId(volumeId),
        parentClosePolicy: ParentClosePolicy.ABANDON,
        args: [
          {
            operationId: uuid4(),
            volumeId,
            applianceVmId: input.applianceVmId,
            taskQueuePrefix: input.taskQueuePrefix,
            correlationTimeoutMs: input.correlationTimeoutMs,
            findings: mine.map((o) => o.kind),
          },
        ],
        typedSearchAttributes: [
          { key: SA.VolumeId, value: volumeId },
          { key: SA.ApplianceVmId, value: input.applianceVmId },
          { key: SA.OperationType, value: 'repair' },
        ],
        memo: { type: 'repair' },
      });
      await child.result();
      for (const o of mine) o.outcome = 'repaired';
    } catch (err) {
      const busy = err instanceof WorkflowExecutionAlreadyStartedError;
      for (const o of mine) {
        o.outcome = busy ? 'busy' : 'failed';
        o.details = {
          ...(o.details ?? {}),
          error: busy ? 'an operation is running on this volume' : messageOf(err),
        };
      }
    }
  };
  // Bounded fan-out: repairs are sagas with host activities; the host lock serializes them anyway.
  const ids = volumesToRepair(findings);
  for (let i = 0; i < ids.length; i += 20) await Promise.all(ids.slice(i, i + 20).map(repairOne));
}

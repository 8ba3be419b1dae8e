import type { OperationHandle } from '../../client/index.js';
import { listOperations, type OperationRow } from '../../db/operations.js';
import type { Pool } from 'mysql2/promise';

/**
 * The operation object of /api/v2. Status: running → "running"; completed → "completed"; failed,
 * compensated (failed and undone), cancelled → "failed" with the reason in `error` and the
 * precise outcome in `outcome`; needs_attention → "running" with `needs_attention: true`.
 */
export function toApiOperation(o: OperationRow) {
  const status =
    o.status === 'completed'
      ? 'completed'
      : o.status === 'running' || o.status === 'needs_attention'
        ? 'running'
        : 'failed';
  return {
    id: o.operationId,
    type: o.type,
    status,
    outcome: o.status,
    needs_attention: o.status === 'needs_attention',
    volume_id: o.volumeId,
    vm_id: o.vmId,
    request: o.request,
    response: o.response,
    error: o.error,
    workflow_id: o.workflowId,
    run_id: o.runId,
    created_at: o.startedAt.toISOString(),
    updated_at: o.updatedAt.toISOString(),
    completed_at: o.finishedAt ? o.finishedAt.toISOString() : null,
  };
}

/** An operation accepted but not yet written by its workflow (the first audit row lands shortly). */
export function pendingOperation(a: {
  id: string;
  type: string;
  volumeId: string;
  vmId: string | null;
  request: unknown;
  workflowId: string;
  runId: string;
}) {
  const now = new Date().toISOString();
  return {
    id: a.id,
    type: a.type,
    status: 'pending',
    outcome: 'pending',
    needs_attention: false,
    volume_id: a.volumeId,
    vm_id: a.vmId,
    request: a.request,
    response: null,
    error: null,
    workflow_id: a.workflowId,
    run_id: a.runId,
    created_at: now,
    updated_at: now,
    completed_at: null,
  };
}

/** The audit row of a just-started (or deduplicated) operation, if its workflow wrote it yet. */
export async function auditRowOf(db: Pool, handle: OperationHandle): Promise<OperationRow | undefined> {
  return (await listOperations(db, { operationId: handle.operationId }))[0];
}

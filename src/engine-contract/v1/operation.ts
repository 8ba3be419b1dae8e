import type { Pool } from 'mysql2/promise';
import { listSteps, type OperationRow } from '../../db/operations.js';
import type { OperationResult, OperationType } from '../../domain/operations.js';
import type { OldOperation, OldStatus, OldType } from './contract.js';
import { engineExportNameOf } from '../../domain/device-names.js';

/**
 * Our audit rows in the old daemon's operation shape.
 *
 * Status, from the audit row (src/db/operations.ts) to the five the engine's client knows:
 *   (no row yet)      → pending
 *   running           → executing
 *   completed         → completed
 *   failed            → failed
 *   compensated       → failed   (failed after acting; every step undone; `error` says which)
 *   refused           → failed   (a check said no before anything changed)
 *   cancelled         → cancelled (an operator aborted it, or it was cancelled; undone)
 *   needs_attention   → failed, `error` naming the volume, the step and the volumectl commands.
 *
 * Why needs_attention is "failed" although its workflow still runs: the engine's wait loop keeps
 * polling anything that is not completed/failed/cancelled until its own 60 s–5 min timeout, then
 * gives up with a bare "timeout" and no reason. A compensation waiting for an operator may wait
 * for hours, so it is a failure *for the caller*: reported as such at once, with what the
 * operator must do. The engine's own recovery (attach the volume back to the appliance) then gets
 * a 409 naming the stuck operation instead of piling onto the volume. When the operator answers,
 * the row moves on (compensated / failed / cancelled) and later polls show that.
 */
export function oldStatus(status: string): OldStatus {
  switch (status) {
    case 'running':
      return 'executing';
    case 'completed':
      return 'completed';
    case 'cancelled':
      return 'cancelled';
    case 'pending':
      return 'pending';
    default:
      // failed, compensated, refused, needs_attention — and any status added later: a caller
      // must never wait forever on a word it does not know.
      return 'failed';
  }
}

/**
 * The old daemon's operation types: every way onto or off a VM was an "attach" or "detach".
 * Exhaustive by type: a new operation type does not compile until it is given its old name here.
 */
const OLD_TYPE: Record<OperationType, OldType> = {
  create: 'create',
  attach: 'attach',
  failover: 'attach',
  failback: 'attach',
  detach: 'detach',
  delete: 'delete',
  repair: 'cleanup', // reconciliation's own work
};

export function oldType(type: OperationType): OldType {
  return OLD_TYPE[type];
}

/** What an operator must do about an operation parked on a failed compensation. */
export interface Attention {
  step: string;
  error: string;
}

/** The compensation that failed last (what needs_attention waits on), from the step audit. */
export async function attentionOf(db: Pool, row: OperationRow): Promise<Attention | undefined> {
  if (row.status !== 'needs_attention') return undefined;
  const steps = await listSteps(db, row.operationId);
  const failed = steps.filter((s) => s.phase === 'compensation' && s.status === 'failed').pop();
  return {
    step: failed ? failed.step.replace(/^undo:/, '') : 'unknown',
    error: failed?.error ?? row.error ?? 'unknown error',
  };
}

export function attentionText(row: OperationRow, a: Attention): string {
  const v = row.volumeId ?? '<volume>';
  return (
    `operation ${row.operationId} (${row.type}) on volume ${v} needs an operator: undoing step ` +
    `"${a.step}" failed: ${a.error}. The volume stays busy until the operator fixes the cause and ` +
    `runs "volumectl retry ${v} --reason <why>", or "volumectl skip ${v} --reason <why>" (undone by ` +
    `hand), or "volumectl abort ${v} --reason <why>"`
  );
}

const asObject = (v: unknown): Record<string, unknown> =>
  v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};

/**
 * `response` of a completed operation: where the volume is and, after an attach or failback,
 * the stable device (`/dev/mapper/<name>`, never the /dev/vdX under it) and its export.
 */
function oldResponse(row: OperationRow): Record<string, unknown> {
  if (row.status !== 'completed') return {};
  const r = asObject(row.response) as Partial<OperationResult>;
  const out: Record<string, unknown> = { volume_id: r.volumeId ?? row.volumeId ?? '' };
  if (r.location) out.location = r.location;
  if (r.access) {
    out.device_path = r.access.mapperPath;
    out.persistent_device_name = r.access.persistentName;
    // The engine's name of the export (migration-vol-<volume id>), and ours beside it.
    out.export_name = engineExportNameOf(r.access.volumeId);
    out.persistent_export_name = r.access.exportName;
    out.nbd_uri = r.access.nbdUri;
  }
  if (r.location === 'target' && row.vmId) out.vm_id = row.vmId;
  if (r.noop) out.noop = true;
  return out;
}

export function toOldOperation(row: OperationRow, attention?: Attention): OldOperation {
  const request = asObject(row.request);
  const applianceVmId = typeof request.applianceVmId === 'string' ? request.applianceVmId : null;
  return {
    id: row.operationId,
    type: oldType(row.type),
    status: oldStatus(row.status),
    volume_id: row.volumeId ?? '', // a create before CloudStack named the volume: "" as Go decodes null

    // Attach and failback rows name no VM (the appliance is implied): the old shape names it.
    vm_id: row.vmId ?? applianceVmId,
    request,
    response: oldResponse(row),
    error: attention ? attentionText(row, attention) : (row.error ?? ''),
    created_at: row.startedAt.toISOString(),
    updated_at: row.updatedAt.toISOString(),
    completed_at: row.finishedAt ? row.finishedAt.toISOString() : null,
    saga: row.type,
    outcome: row.status,
  };
}

/** Accepted, before the workflow's first audit write lands. */
export function pendingOldOperation(a: {
  id: string;
  type: OperationType;
  volumeId: string;
  vmId: string | null;
  request: Record<string, unknown>;
}): OldOperation {
  const now = new Date().toISOString();
  return {
    id: a.id,
    type: oldType(a.type),
    status: 'pending',
    volume_id: a.volumeId,
    vm_id: a.vmId,
    request: a.request,
    response: {},
    error: '',
    created_at: now,
    updated_at: now,
    completed_at: null,
    saga: a.type,
    outcome: 'pending',
  };
}

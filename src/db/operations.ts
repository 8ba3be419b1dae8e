import type { Pool, PoolConnection, RowDataPacket } from 'mysql2/promise';
import type { OperationStatus, OperationType } from '../domain/operations.js';
import { inTransaction, type RowFollower } from './follow.js';

export type { OperationStatus };

export interface OperationStart {
  operationId: string;
  workflowId: string;
  runId: string;
  type: OperationType;
  /** null for a create until CloudStack has given the volume its id. */
  volumeId: string | null;
  vmId: string | null;
  request: unknown;
}

/** Idempotent: a retried activity or a replayed start writes the same row once. */
export async function recordOperationStart(pool: Pool, o: OperationStart): Promise<void> {
  await pool.query(
    `INSERT INTO volume_operations (operation_id, workflow_id, run_id, type, volume_id, vm_id, status, request)
     VALUES (?, ?, ?, ?, ?, ?, 'running', ?)
     ON DUPLICATE KEY UPDATE run_id = VALUES(run_id)`,
    [o.operationId, o.workflowId, o.runId, o.type, o.volumeId, o.vmId, JSON.stringify(o.request ?? null)],
  );
}

export async function recordOperationStatus(
  pool: Pool,
  operationId: string,
  status: OperationStatus,
  extra: { response?: unknown; error?: string | null; finished?: boolean; volumeId?: string } = {},
): Promise<void> {
  await pool.query(
    `UPDATE volume_operations SET status = ?, response = COALESCE(?, response), error = COALESCE(?, error),
       volume_id = COALESCE(?, volume_id), finished_at = IF(?, CURRENT_TIMESTAMP(3), finished_at)
     WHERE operation_id = ?`,
    [
      status,
      extra.response === undefined ? null : JSON.stringify(extra.response),
      extra.error ?? null,
      extra.volumeId ?? null,
      extra.finished ? 1 : 0,
      operationId,
    ],
  );
}

export interface StepRecord {
  operationId: string;
  /** Position in the saga's own sequence (deterministic), so retries overwrite, not duplicate. */
  seq: number;
  step: string;
  phase: 'forward' | 'compensation' | 'operator';
  status: 'started' | 'completed' | 'failed' | 'skipped';
  error?: string | null;
  details?: unknown;
  startedAt: string; // ISO, from workflow time
  finishedAt?: string | null;
}

export async function recordStep(db: Pool | PoolConnection, s: StepRecord): Promise<void> {
  await db.query(
    `INSERT INTO volume_operation_steps (operation_id, seq, step, phase, status, error, details, started_at, finished_at)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
     ON DUPLICATE KEY UPDATE status = VALUES(status), error = VALUES(error), details = VALUES(details),
       finished_at = VALUES(finished_at)`,
    [
      s.operationId,
      s.seq,
      s.step,
      s.phase,
      s.status,
      s.error ?? null,
      s.details === undefined ? null : JSON.stringify(s.details),
      new Date(s.startedAt),
      s.finishedAt ? new Date(s.finishedAt) : null,
    ],
  );
}

/**
 * A forward step's audit row, handed to the database write that ends the step: the write records
 * the step completed in its own transaction, so the row exists exactly when the write does, and
 * the saga needs no audit write of its own for it.
 */
export interface StepAudit {
  operationId: string;
  seq: number;
  step: string;
  startedAt: string; // ISO, from workflow time
}

/**
 * Run `write` and, when it carries its step's audit row, record the step completed in the same
 * transaction; with `follow`, the rows that follow ours (the engine's view) are brought up to date
 * in it too. With neither, `write` runs on the pool as it always did. Safe to run twice: the row
 * is an upsert on (operation, seq), `write` is the caller's idempotent write, and following is a
 * projection of what the write left.
 */
export async function writeRecordingStep<T>(
  pool: Pool,
  audit: StepAudit | undefined,
  write: (db: Pool | PoolConnection) => Promise<T>,
  follow?: { follower: RowFollower; volumeIds: readonly string[] },
): Promise<T> {
  if (!audit && !follow) return write(pool);
  return inTransaction(pool, async (tx) => {
    const result = follow
      ? await follow.follower.around(tx, follow.volumeIds, () => write(tx))
      : await write(tx);
    if (audit) await recordCompleted(tx, audit);
    return result;
  });
}

/** The step's row, completed now: inside the transaction of the write that completed it. */
export function recordCompleted(db: Pool | PoolConnection, audit: StepAudit): Promise<void> {
  return recordStep(db, {
    ...audit,
    phase: 'forward',
    status: 'completed',
    finishedAt: new Date().toISOString(),
  });
}

export interface OperationRow {
  operationId: string;
  workflowId: string;
  runId: string | null;
  type: OperationType;
  volumeId: string | null;
  vmId: string | null;
  status: OperationStatus;
  request: unknown;
  response: unknown;
  error: string | null;
  startedAt: Date;
  updatedAt: Date;
  finishedAt: Date | null;
}

function parseJson(v: unknown): unknown {
  if (typeof v !== 'string') return v ?? null;
  try {
    return JSON.parse(v);
  } catch {
    return v;
  }
}

export async function listOperations(
  pool: Pool,
  f: {
    operationId?: string;
    type?: string;
    status?: string;
    volumeId?: string;
    vmId?: string;
    since?: Date;
    until?: Date;
    limit?: number;
  } = {},
): Promise<OperationRow[]> {
  const where: string[] = [];
  const args: unknown[] = [];
  const add = (sql: string, v: unknown) => (where.push(sql), args.push(v));
  if (f.operationId) add('operation_id = ?', f.operationId);
  if (f.type) add('type = ?', f.type);
  if (f.status) add('status = ?', f.status);
  if (f.volumeId) add('volume_id = ?', f.volumeId);
  if (f.vmId) add('vm_id = ?', f.vmId);
  if (f.since) add('started_at >= ?', f.since);
  if (f.until) add('started_at <= ?', f.until);
  const [rows] = await pool.query<RowDataPacket[]>(
    `SELECT * FROM volume_operations ${where.length ? 'WHERE ' + where.join(' AND ') : ''}
     ORDER BY started_at DESC LIMIT ?`,
    [...args, Math.min(f.limit ?? 100, 1000)],
  );
  return rows.map((r) => ({
    operationId: r.operation_id,
    workflowId: r.workflow_id,
    runId: r.run_id,
    type: r.type,
    volumeId: r.volume_id,
    vmId: r.vm_id,
    status: r.status,
    request: parseJson(r.request),
    response: parseJson(r.response),
    error: r.error,
    startedAt: r.started_at,
    updatedAt: r.updated_at,
    finishedAt: r.finished_at,
  }));
}

export async function listSteps(pool: Pool, operationId: string) {
  const [rows] = await pool.query<RowDataPacket[]>(
    'SELECT seq, step, phase, status, error, details, started_at, finished_at FROM volume_operation_steps WHERE operation_id = ? ORDER BY seq',
    [operationId],
  );
  return rows.map((r) => ({
    seq: Number(r.seq),
    step: String(r.step),
    phase: r.phase as StepRecord['phase'],
    status: r.status as StepRecord['status'],
    error: r.error as string | null,
    details: parseJson(r.details),
    startedAt: r.started_at as Date,
    finishedAt: r.finished_at as Date | null,
  }));
}

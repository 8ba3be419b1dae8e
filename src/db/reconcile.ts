import type { Pool, ResultSetHeader, RowDataPacket } from 'mysql2/promise';
import type { Finding } from '../reconcile/drift.js';

export interface FindingOutcome extends Finding {
  /** repaired | busy | failed | reported | dry-run | removed */
  outcome: string;
}

export async function startReconcileRun(
  pool: Pool,
  r: { workflowId: string; runId: string; applianceVmId: string; dryRun: boolean },
): Promise<number> {
  await pool.query(
    `INSERT INTO reconcile_runs (workflow_id, run_id, appliance_vm_id, dry_run, status) VALUES (?, ?, ?, ?, 'running')
     ON DUPLICATE KEY UPDATE status = 'running'`,
    [r.workflowId, r.runId, r.applianceVmId, r.dryRun],
  );
  const [rows] = await pool.query<RowDataPacket[]>('SELECT id FROM reconcile_runs WHERE run_id = ?', [
    r.runId,
  ]);
  return Number(rows[0]!.id);
}

/** Idempotent: a retried activity replaces the run's findings rather than adding them twice. */
export async function finishReconcileRun(
  pool: Pool,
  id: number,
  status: 'completed' | 'failed',
  findings: FindingOutcome[],
): Promise<void> {
  const conn = await pool.getConnection();
  try {
    await conn.beginTransaction();
    await conn.query('DELETE FROM reconcile_findings WHERE reconcile_run_id = ?', [id]);
    for (let i = 0; i < findings.length; i += 500) {
      const chunk = findings.slice(i, i + 500);
      await conn.query(
        'INSERT INTO reconcile_findings (reconcile_run_id, kind, volume_id, subject, decision, outcome, remedy, details) VALUES ?',
        [
          chunk.map((f) => [
            id,
            f.kind,
            f.volumeId,
            f.subject.slice(0, 255),
            f.outcome === 'busy' ? 'busy' : f.outcome === 'dry-run' ? 'dry-run' : f.decision,
            f.outcome,
            f.remedy,
            f.details ? JSON.stringify(f.details) : null,
          ]),
        ],
      );
    }
    await conn.query<ResultSetHeader>(
      `UPDATE reconcile_runs SET status = ?, findings = ?, repairs = ?, finished_at = CURRENT_TIMESTAMP(3) WHERE id = ?`,
      [
        status,
        findings.length,
        findings.filter((f) => f.outcome === 'repaired' || f.outcome === 'removed').length,
        id,
      ],
    );
    await conn.commit();
  } catch (err) {
    await conn.rollback().catch(() => {});
    throw err;
  } finally {
    conn.release();
  }
}

export async function listReconcileFindings(pool: Pool, runId: string) {
  const [rows] = await pool.query<RowDataPacket[]>(
    `SELECT f.kind, f.volume_id, f.subject, f.decision, f.outcome, f.remedy FROM reconcile_findings f
     JOIN reconcile_runs r ON r.id = f.reconcile_run_id WHERE r.run_id = ? ORDER BY f.id`,
    [runId],
  );
  return rows.map((r) => ({
    kind: String(r.kind),
    volumeId: r.volume_id as string | null,
    subject: String(r.subject),
    decision: String(r.decision),
    outcome: r.outcome as string | null,
    remedy: r.remedy as string | null,
  }));
}

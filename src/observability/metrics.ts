import type { Pool, RowDataPacket } from 'mysql2/promise';
import { collectDefaultMetrics, Gauge, Registry } from 'prom-client';

/**
 * Prometheus metrics for the API: operations by type and outcome, their durations, compensations
 * run and reconcile findings — read from the audit tables at scrape time, so every worker's work
 * is counted whichever process did it (and survives restarts).
 */
export function createApiMetrics(db: Pool) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'volume_lifecycle_api_' });
  const ops = new Gauge({
    name: 'volume_operations',
    help: 'Operations by type and outcome',
    labelNames: ['type', 'status'],
    registers: [registry],
  });
  const dur = new Gauge({
    name: 'volume_operation_duration_seconds_avg',
    help: 'Mean duration of finished operations',
    labelNames: ['type', 'status'],
    registers: [registry],
  });
  const comps = new Gauge({
    name: 'volume_compensations',
    help: 'Compensations run, by step and result',
    labelNames: ['step', 'status'],
    registers: [registry],
  });
  const findings = new Gauge({
    name: 'volume_reconcile_findings',
    help: 'Reconcile findings by kind and outcome',
    labelNames: ['kind', 'outcome'],
    registers: [registry],
  });
  return {
    async collect(): Promise<{ contentType: string; body: string }> {
      ops.reset();
      dur.reset();
      comps.reset();
      findings.reset();
      const [o] = await db.query<RowDataPacket[]>(
        `SELECT type, status, COUNT(*) AS n, AVG(TIMESTAMPDIFF(MICROSECOND, started_at, finished_at)) / 1e6 AS secs
         FROM volume_operations GROUP BY type, status`,
      );
      for (const r of o) {
        ops.set({ type: r.type, status: r.status }, Number(r.n));
        if (r.secs !== null) dur.set({ type: r.type, status: r.status }, Number(r.secs));
      }
      const [c] = await db.query<RowDataPacket[]>(
        `SELECT step, status, COUNT(*) AS n FROM volume_operation_steps WHERE phase = 'compensation' GROUP BY step, status`,
      );
      for (const r of c) comps.set({ step: r.step, status: r.status }, Number(r.n));
      const [f] = await db.query<RowDataPacket[]>(
        `SELECT kind, COALESCE(outcome, decision) AS outcome, COUNT(*) AS n FROM reconcile_findings GROUP BY kind, COALESCE(outcome, decision)`,
      );
      for (const r of f) findings.set({ kind: r.kind, outcome: r.outcome }, Number(r.n));
      return { contentType: registry.contentType, body: await registry.metrics() };
    },
  };
}

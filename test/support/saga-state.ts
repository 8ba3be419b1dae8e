import type { StepName } from '../../src/domain/steps.js';
import assert from 'node:assert/strict';
import { WorkflowFailedError, type WorkflowHandle } from '@temporalio/client';
import type { Pool } from 'mysql2/promise';
import { getExport } from '../../src/db/exports.js';
import { getMapping } from '../../src/db/mappings.js';
import { listOperations, listSteps } from '../../src/db/operations.js';
import type { SagaProgress } from '../../src/domain/operations.js';
import type { LabStack } from './lab-stack.js';

/** What the state helpers read: the lab stack, or the stand-in stack. */
export type StateView = Pick<LabStack, 'db' | 'cs' | 'dmTable' | 'servedExports'>;

/** The observable state of one volume across every component: CloudStack, dm, NBD, database. */
export async function snapshot(s: StateView, volumeId: string) {
  const m = await getMapping(s.db.pool, volumeId);
  const e = await getExport(s.db.pool, volumeId);
  const cs = await s.cs.getVolume(volumeId);
  const table = m?.persistentName ? await s.dmTable(m.persistentName) : null;
  return {
    exists: cs !== undefined && cs !== null,
    attachedTo: cs?.virtualmachineid ?? null,
    row: m
      ? { name: m.persistentName, location: m.location, dmState: m.dmState, targetVmId: m.targetVmId }
      : null,
    export: e?.exportName ?? null,
    dmKind: table ? table.split(' ')[2] : null,
    served: (await s.servedExports()).filter((x) => x === e?.exportName),
  };
}

/** The workflow failed (not cancelled) and its failure matches `re`. */
export async function expectFailure(p: Promise<unknown>, re: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof WorkflowFailedError, String(err));
    assert.match(String(err.cause?.message), re);
    return true;
  });
}

/** The workflow ended as Cancelled. */
export async function expectCancelled(p: Promise<unknown>): Promise<void> {
  await assert.rejects(
    p,
    (e: unknown) =>
      e instanceof WorkflowFailedError && /cancel/i.test(String(e.cause?.name) + String(e.cause?.message)),
  );
}

/** The newest operation of `type` on the volume and its audit steps as `phase:step:status`. */
export async function auditOf(s: Pick<StateView, 'db'>, volumeId: string, type: string) {
  const op = (await listOperations(s.db.pool, { volumeId, type }))[0]!;
  const steps = await listSteps(s.db.pool, op.operationId);
  return { op, steps: steps.map((x) => `${x.phase}:${x.step}:${x.status}`) };
}

/** Poll the saga's progress query until it has reached `step`. */
export async function waitForStep(h: { progress(): Promise<SagaProgress> }, step: StepName): Promise<void> {
  for (;;) {
    const p = await h.progress().catch(() => undefined);
    if (p?.currentStep === step || p?.stepsDone.includes(step)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Until the workflow's history holds a cancel request — and, with `processed`, a workflow task
 * completed after it (the workflow has seen it). Polls the server: nothing pushes history.
 */
export async function untilCancelRequested(
  wf: WorkflowHandle,
  opts: { processed: boolean; timeoutMs: number; what: string },
): Promise<void> {
  const deadline = Date.now() + opts.timeoutMs;
  for (;;) {
    const events = (await wf.fetchHistory()).events ?? [];
    const asked = events.findIndex((e) => e.workflowExecutionCancelRequestedEventAttributes);
    if (
      asked >= 0 &&
      (!opts.processed || events.slice(asked).some((e) => e.workflowTaskCompletedEventAttributes))
    )
      return;
    if (Date.now() > deadline) throw new Error(`timed out after ${opts.timeoutMs} ms: ${opts.what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/**
 * The saga's result — or, if it parks waiting for an operator (a compensation failed), an
 * error saying so at once instead of a test timeout. The parking is read from the audit row
 * (status needs_attention), not by querying the workflow: a query can wait for a worker the test
 * has just killed, and one still in flight when the stack closes fails the file after its tests.
 */
export async function outcome<T>(h: { result(): Promise<T>; operationId: string }, db: Pool): Promise<T> {
  const result = h.result();
  let settled = false;
  result.then(
    () => (settled = true),
    () => (settled = true),
  );
  const parked = (async (): Promise<never> => {
    while (!settled) {
      const [row] = await listOperations(db, { operationId: h.operationId }).catch(() => []);
      if (settled) break;
      if (row?.status === 'needs_attention')
        throw new Error(`the saga waits for an operator: ${row.error ?? '(no error recorded)'}`);
      await new Promise((r) => setTimeout(r, 250));
    }
    return new Promise<never>(() => undefined);
  })();
  return Promise.race([result, parked]);
}

/**
 * The state a completed saga leaves, on every component: failover/detach — CloudStack has moved
 * the volume, the dm device errors I/O; delete — nothing left anywhere; attach/failback — on the
 * appliance, linear, its export served. Also: the audit says completed, nothing compensated.
 */
export async function assertCompletedState(
  s: StateView & { applianceVmId: string; targetVmId: string },
  saga: string,
  volumeId: string,
  r: { status: string; access?: { exportName: string } },
): Promise<void> {
  assert.equal(r.status, 'completed');
  const after = await snapshot(s, volumeId);
  if (saga === 'failover') {
    assert.equal(after.attachedTo, s.targetVmId);
    assert.deepEqual([after.row?.location, after.dmKind], ['target', 'error']);
  } else if (saga === 'detach') {
    assert.equal(after.attachedTo, null);
    assert.deepEqual([after.row?.location, after.dmKind], ['detached', 'error']);
  } else if (saga === 'delete') {
    assert.deepEqual(after, { ...after, exists: false, row: null, export: null, dmKind: null, served: [] });
  } else {
    assert.equal(after.attachedTo, s.applianceVmId);
    assert.deepEqual([after.row?.location, after.dmKind], ['appliance', 'linear']);
    assert.deepEqual(after.served, [r.access!.exportName]);
  }
  const { op, steps } = await auditOf(s, volumeId, saga);
  assert.equal(op.status, 'completed');
  assert.ok(!steps.some((x) => x.startsWith('compensation')), `nothing compensated: ${steps.join(' ')}`);
}

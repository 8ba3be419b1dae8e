import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { FakeWorld, READ_ONLY, type Hold } from '../support/fake-activities.js';
import {
  APPLIANCE,
  cancelSeenByWorkflow,
  handleOf,
  happyRun,
  limiter,
  LISTED,
  outcome,
  PATHS,
  prepare,
  startTier,
  TARGET,
  within,
  type HappyRun,
  type PlannedCall,
  type SagaPath,
  type Tier,
} from './harness.js';

/**
 * The step matrix, on the real workflow code with faked activities: for every saga path, every
 * activity call its clean run makes (found by running it: nothing listed by hand) × each fault
 *  - fail-after:  the activity acts, then fails for good ("done, but the reply was lost");
 *  - fail-before: it fails for good without acting;
 *  - cancel:      the workflow is cancelled while the call is in flight; the activity hears the
 *                 cancel, and then acts and completes anyway (a CloudStack job cannot be called
 *                 back) — the step in flight must settle before anything is undone.
 * Afterwards every fake component holds exactly what it held before, the compensations that ran
 * are those of the steps entered, newest first, all completed, and the audit says compensated /
 * cancelled. The delete's pivot: a fault past it undoes nothing (a second delete finishes), a
 * cancel at or past it is too late and the delete finishes forward.
 */
let t: Tier;
before(async () => (t = await startTier()));
after(() => t?.close());

// Cases at a time: beyond ~12 the two CPUs (worker and dev server) only queue them longer.
const gate = limiter(Number(process.env.WORKFLOW_TIER_CONCURRENCY ?? 12));
const KINDS = ['fail-after', 'fail-before', 'cancel'] as const;
type Kind = (typeof KINDS)[number];
type PathKey = keyof typeof PATHS;

/** An audit entry `phase:step:status` (compensations: `compensation:undo:<step>:status`). */
function split(entry: string) {
  const parts = entry.split(':');
  const step = parts.slice(1, -1).join(':');
  return { phase: parts[0]!, step: step.replace(/^undo:/, ''), status: parts.at(-1)! };
}

interface Observed {
  /** The step recorded as failed, when the faulted call ran inside one. */
  failedStep?: string;
  /** The step named by the saga's failure (the current step when it failed). */
  namedStep?: string;
}

async function faultCase(key: PathKey, happy: HappyRun, call: PlannedCall, kind: Kind): Promise<Observed> {
  const path: SagaPath = PATHS[key];
  const s = prepare(t, path);
  const w = s.world;
  const before = w.state();
  const stepIndex = (step: string) => happy.steps.indexOf(step);
  const atPivot = path.pivot !== undefined && call.step === path.pivot;
  const pastPivot = path.pivot !== undefined && stepIndex(call.step) > stepIndex(path.pivot);
  let hold: Hold | undefined;
  if (kind === 'fail-after') w.failAfter(call.activity, call.nth);
  else if (kind === 'fail-before') w.failBefore(call.activity, call.nth);
  else hold = w.hold(call.activity, call.nth);

  const h = await path.start(t, s);
  let cancelAt = 0;
  if (hold) {
    await within(hold.started, `${call.activity} to start`);
    cancelAt = Date.now();
    await handleOf(t, h).cancel();
    // Past the pivot the step runs in a non-cancellable scope, and a local step (our database,
    // CloudStack reads) is never cancelled: no activity hears the cancel.
    if (pastPivot) await cancelSeenByWorkflow(t, h);
    else if (hold.call?.local) await cancelSeenByWorkflow(t, h, true);
    else await within(hold.cancelRequested, `the cancel to reach ${call.activity} in flight`);
    hold.release();
    if (hold.call?.local)
      assert.equal(hold.cancelSeen, false, `a local step is not cancelled: ${call.activity}`);
  }
  const out = await outcome(h, w);
  await w.quiet();
  const audit = w.audit(h.operationId).map(split);
  const op = w.operations.get(h.operationId)!;
  const completed = audit.filter((e) => e.phase === 'forward' && e.status === 'completed').map((e) => e.step);
  const failed = audit.filter((e) => e.phase === 'forward' && e.status === 'failed').map((e) => e.step);
  const ctx = `${call.activity}#${call.nth}: ${JSON.stringify(out)} audit ${w.audit(h.operationId).join(' ')}`;

  if (atPivot && kind === 'fail-after') {
    // CloudStack deleted the volume, but the step failed (its reply lost): the saga asks
    // CloudStack, finds the volume gone, and finishes forward past its pivot — nothing undone.
    assert.equal(out.kind, 'completed', ctx);
    assert.deepEqual(failed, [call.step], ctx);
    assert.deepEqual(
      completed,
      happy.steps.filter((x) => x !== call.step),
      ctx,
    );
    assert.deepEqual(
      audit.filter((e) => e.phase === 'compensation'),
      [],
      ctx,
    );
    assert.equal(op.status, 'completed', ctx);
    assert.equal(w.volumes.has(s.volumeId), false);
    return { failedStep: failed[0], namedStep: call.step };
  }

  // The run is the clean run's up to the fault: its steps a prefix of the clean run's, plus at
  // most the next one, failed.
  assert.deepEqual(completed, happy.steps.slice(0, completed.length), ctx);
  assert.ok(failed.length <= 1, ctx);
  if (failed.length) assert.equal(failed[0], happy.steps[completed.length], ctx);
  if (kind !== 'cancel' && LISTED[key]?.some(([step, act]) => step === call.step && act === call.activity))
    assert.deepEqual(failed, [call.step], `the fault of its activity fails "${call.step}": ${ctx}`);
  const entered = [...completed, ...failed];
  const pivotDone = path.pivot !== undefined && completed.includes(path.pivot);
  const expectedUndo = pivotDone ? [] : entered.filter((x) => path.undoable.includes(x)).reverse();
  const named = /(at|after) step "([^"]+)"/.exec(op.error ?? '');
  const namedStep = named?.[2];

  const undone = audit.filter((e) => e.phase === 'compensation');
  assert.deepEqual(
    undone.map((e) => `${e.step}:${e.status}`),
    expectedUndo.map((x) => `${x}:completed`),
    `compensations: those of the steps entered, newest first — ${ctx}`,
  );
  assert.ok(!audit.some((e) => e.phase === 'operator'), ctx);

  if (kind === 'cancel') {
    // The step in flight settled before anything else was done: the workflow scheduled nothing
    // between the cancel and the end of the held call (with "try cancel", the compensations would
    // be scheduled at once, and could undo before the late action).
    const held = hold!.call!;
    // Reads issued in parallel with the held call (before the cancel) may reach the server after
    // it when the held call is a local activity: its workflow task stays open while it runs, and
    // carries their commands only when it completes. They are the step's own calls, not undos.
    const siblings = new Set(happy.calls.filter((c) => c.step === call.step).map((c) => c.activity));
    const early = w.calls.filter(
      (c) =>
        c !== held &&
        c.scheduledAt > cancelAt &&
        c.scheduledAt < held.endedAt! &&
        !(held.local && siblings.has(c.activity)),
    );
    assert.deepEqual(
      early.map((c) => c.activity),
      [],
      `nothing was scheduled while ${call.activity} was in flight after the cancel`,
    );
    if (atPivot || pastPivot) {
      assert.equal(out.kind, 'completed', `too late to cancel: the delete finishes forward — ${ctx}`);
      assert.equal(hold!.cancelSeen, atPivot, 'only a cancellable step hears the cancel');
      assert.equal(op.status, 'completed');
      assert.deepEqual(w.state(), new FakeWorld(APPLIANCE, [TARGET]).state(), 'nothing left anywhere');
      return { failedStep: failed[0], namedStep };
    }
    assert.equal(out.kind, 'cancelled', ctx);
    assert.equal(op.status, 'cancelled');
    assert.match(op.error ?? '', /was cancelled (at|after) step/);
  } else {
    assert.equal(out.kind, 'failed', ctx);
    assert.equal(out.kind === 'failed' && out.type, 'OperationFailed');
    assert.match(out.kind === 'failed' ? out.message : '', new RegExp(`injected: ${call.activity}`));
    if (pastPivot) {
      // Past the pivot nothing is undone, and it is audited so (failed, not "compensated"), with
      // what to do: the volume is gone from CloudStack; its rows are left for a second delete
      // (or already gone, if the failed removal acted), which finishes.
      assert.equal(op.status, 'failed');
      assert.match(op.error ?? '', /past its point of no return, nothing undone: run the delete again/);
      assert.equal(w.volumes.has(s.volumeId), false);
      assert.equal(w.rows.has(s.volumeId), kind === 'fail-before');
      const again = await path.start(t, s);
      const out2 = await outcome(again, w);
      assert.equal(out2.kind, 'completed', JSON.stringify(out2));
      assert.equal(w.rows.size + w.exportRows.size + w.dm.size + w.exports.size, 0);
      return { failedStep: failed[0], namedStep };
    }
    assert.equal(op.status, 'compensated');
    const list = expectedUndo.map((x) => `${x}=completed`).join(', ') || 'nothing to undo';
    assert.ok(op.error?.endsWith(`compensated: ${list}`), `${op.error} (expected: ${list})`);
  }
  assert.ok(namedStep, `the failure names a step: ${op.error}`);
  assert.equal(namedStep, failed[0] ?? completed.at(-1) ?? 'start', ctx);
  // A failure inside a step is named at it; one between steps (a read preparing the next) after
  // the step before it, not blamed on it. A cancel that arrived during the last step is at it.
  const inStep = failed.length > 0 || namedStep === 'start' || completed.length === happy.steps.length;
  assert.equal(named?.[1], inStep ? 'at' : 'after', ctx);
  assert.deepEqual(w.state(), before, `every component as before — ${ctx}`);
  return { failedStep: failed[0], namedStep };
}

/**
 * Which calls each path faults: every call of the six sagas' main paths; on the variants, the
 * call that fails each step (its last). Never "acts, then fails" on a read (the same as "fails").
 */
const MATRIX: { key: PathKey; every: 'call' | 'step' }[] = [
  { key: 'create', every: 'call' },
  { key: 'attach', every: 'call' },
  { key: 'detach', every: 'call' },
  { key: 'failover', every: 'call' },
  { key: 'failback', every: 'call' },
  { key: 'delete', every: 'call' },
  { key: 'attachAgain', every: 'step' },
  { key: 'detachFromTarget', every: 'step' },
  { key: 'deleteFromTarget', every: 'step' },
];

describe(
  'every step of every saga × fails after acting, fails before acting, cancelled in flight',
  { concurrency: true },
  () => {
    for (const { key, every } of MATRIX) {
      const path: SagaPath = PATHS[key];
      test(`${path.label} (every ${every})`, { concurrency: true }, async (tc) => {
        const happy = await gate(() => happyRun(t, path));
        // The sites of each kind: every call, or per step its last call (its last acting one for
        // "acts, then fails").
        const last = (pred: (c: PlannedCall) => boolean) =>
          happy.steps.flatMap((step) => happy.calls.filter((c) => c.step === step && pred(c)).slice(-1));
        const sites = (kind: Kind) => {
          const acts = (c: PlannedCall) => kind !== 'fail-after' || !READ_ONLY.has(c.activity);
          return every === 'call' ? happy.calls.filter(acts) : last(acts);
        };
        const covered = new Map<Kind, Set<string>>(KINDS.map((k) => [k, new Set()]));
        const between: string[] = [];
        const cases = KINDS.flatMap((kind) =>
          sites(kind).map((call) =>
            tc.test(`${kind} ${call.activity}#${call.nth} (step "${call.step}")`, () =>
              gate(async () => {
                const o = await faultCase(key, happy, call, kind);
                if (kind === 'cancel') covered.get(kind)!.add(call.step);
                else if (o.failedStep) covered.get(kind)!.add(o.failedStep);
                else between.push(`${call.activity}#${call.nth} → "${o.namedStep}"`);
              }),
            ),
          ),
        );
        await Promise.all(cases);
        // Every step of the saga failed each way and was cancelled in flight at least once (a step
        // that only reads cannot act and then fail: its "fails" is both).
        const steps = [...happy.steps].sort();
        assert.deepEqual([...covered.get('fail-before')!].sort(), steps, 'fail-before covers every step');
        assert.deepEqual([...covered.get('cancel')!].sort(), steps, 'cancel covers every step');
        const acting = happy.steps.filter((st) =>
          happy.calls.some((c) => c.step === st && !READ_ONLY.has(c.activity)),
        );
        assert.deepEqual(
          [...covered.get('fail-after')!].sort(),
          acting.sort(),
          'fail-after covers every step that acts',
        );
        if (between.length)
          tc.diagnostic(`reads between steps fail "after" the step before them: ${between.join(', ')}`);
      });
    }
  },
);

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { WorkflowUpdateFailedError } from '@temporalio/client';
import { VolumeBusyError } from '../../src/client/index.js';
import { diskSerialFor } from '../../src/cloudstack/serial.js';
import { SA } from '../../src/temporal/search-attributes.js';
import type { StepRecord } from '../../src/db/operations.js';
import { carriedAudit, FakeWorld } from '../support/fake-activities.js';
import {
  APPLIANCE,
  GIB,
  handleOf,
  happyRun,
  LISTED,
  outcome,
  PATHS,
  prepare,
  seeds,
  startTier,
  subject,
  TARGET,
  within,
  workflowIdOf,
  type SagaPath,
  type Subject,
  type Tier,
} from './harness.js';

/**
 * Each saga on the real workflow code, activities faked (test/support/fake-activities.ts): the
 * forward steps in order — checked against test/support/saga-steps.ts, whose lists the lab's
 * step matrix and the crash tests run from, so a renamed or reordered step fails here in
 * seconds — the state each completed saga leaves (every state seed of the workflow tier is
 * proven here to be one a saga really produces), the audit statuses, refusals, no-ops, the
 * progress query and the search attributes.
 */
let t: Tier;
before(async () => (t = await startTier()));
after(() => t?.close());

/** The state `seed` describes, for the same volume: what a completed saga must leave. */
function stateOf(seed: (s: Subject) => void, like: Subject, volumeId = like.volumeId) {
  const w = new FakeWorld(APPLIANCE, [TARGET]);
  seed({ ...like, world: w, volumeId });
  return w.state();
}

/** The steps that end in a database write of ours (workflows: `saga.writeStep`). */
const RECORDED_BY_WRITE = new Set([
  'assign-name',
  'adopt-name',
  'resolve-conflicts',
  'record-mapping',
  'record-location',
  'ensure-export',
  'remove-export',
  'remove-rows',
]);

describe('each saga, no fault', { concurrency: true }, () => {
  for (const [key, path] of Object.entries(PATHS) as [keyof typeof PATHS, SagaPath][]) {
    test(`${path.label}: forward steps in order, the state it leaves, audited completed`, async () => {
      const run = await happyRun(t, path);
      const { subject: s, handle: h, result } = run;
      const listed = LISTED[key];
      if (listed) {
        assert.deepEqual(
          run.steps,
          listed.map(([step]) => step),
          'the steps test/support/saga-steps.ts lists are the ones the workflow runs, in its order',
        );
        for (const [step, activity] of listed) {
          const inStep = run.calls.filter((c) => c.step === step).map((c) => c.activity);
          assert.equal(
            inStep.at(-1),
            activity,
            `"${step}" ends with ${activity} (calls: ${inStep.join(', ')})`,
          );
        }
      }
      assert.equal(result.status, 'completed');
      assert.equal(result.type, path.saga);
      const volumeId = path.saga === 'create' ? result.volumeId : s.volumeId;
      if (path.end) assert.deepEqual(s.world.state(), stateOf(path.end, s, volumeId), 'the end state');
      if (path.saga === 'create') assert.deepEqual(s.world.state(), stateOf(seeds.created, s, volumeId));

      const op = s.world.operations.get(h.operationId)!;
      assert.equal(op.status, 'completed');
      assert.equal(op.finished, true);
      assert.deepEqual(op.response, result);
      assert.equal(op.type, path.saga);
      assert.equal(op.volumeId, volumeId);
      // create learns its volume id mid-way and records it (volumeKnown).
      assert.deepEqual(
        op.statuses,
        path.saga === 'create' ? ['running', 'running', 'completed'] : ['running', 'completed'],
      );
      assert.ok(!s.world.audit(h.operationId).some((e) => !e.startsWith('forward:')), 'nothing compensated');

      // Every workflow-code change before it is one marker (and one upsert) in a new run's history.
      const events = (await handleOf(t, h).fetchHistory()).events ?? [];
      assert.equal(
        events.filter((e) => e.markerRecordedEventAttributes?.markerName === 'core_patch').length,
        1,
        'a new run records one version marker (the baseline), not one per change',
      );

      // A step that ends in a database write of ours is recorded by that write, in its own
      // transaction; every other step by an audit write of its own. Each exactly once.
      const carried = s.world.calls.flatMap((c) => carriedAudit(c)?.step ?? []);
      const separate = s.world.calls.flatMap((c) => {
        const r = c.args[0] as StepRecord;
        return c.activity === 'auditStep' && r.phase === 'forward' ? [r.step] : [];
      });
      assert.deepEqual(
        carried,
        run.steps.filter((st) => RECORDED_BY_WRITE.has(st)),
        'the steps ending in a write carry their audit row',
      );
      assert.deepEqual([...carried, ...separate].sort(), [...run.steps].sort(), 'every step recorded once');

      const sa = (await handleOf(t, h).describe()).typedSearchAttributes;
      assert.equal(sa.get(SA.SagaStep), 'done');
      assert.equal(sa.get(SA.OperationType), path.saga);
      assert.equal(sa.get(SA.VolumeId), volumeId);
      assert.equal(sa.get(SA.NeedsAttention), false);
      assert.equal(sa.get(SA.PersistentName), s.name);
      if (path.saga === 'attach' || path.saga === 'failback') {
        assert.deepEqual(result.access, {
          volumeId,
          persistentName: s.name,
          devicePath: '/dev/vdb',
          mapperPath: `/dev/mapper/${s.name}`,
          exportName: `migration-vol-${s.name}`,
          nbdUri: `nbd://127.0.0.1:10809/migration-vol-${s.name}`,
        });
      }
      if (path.saga === 'create') assert.equal(result.persistentName, s.name);
    });
  }
});

describe('refusals: a check says no, nothing changes, audited refused', { concurrency: true }, () => {
  const refusal = async (
    path: SagaPath,
    arrange: (s: Subject) => void,
    start: (s: Subject) => ReturnType<SagaPath['start']>,
    re: RegExp,
  ) => {
    const s = prepare(t, path);
    arrange(s);
    const before = s.world.state();
    const h = await start(s);
    const out = await outcome(h, s.world);
    assert.equal(out.kind, 'failed', JSON.stringify(out));
    assert.match(out.kind === 'failed' ? out.message : '', re);
    assert.deepEqual(s.world.state(), before, 'nothing changed');
    const op = s.world.operations.get(h.operationId)!;
    assert.equal(op.status, 'refused');
    return { s, h, audit: s.world.audit(h.operationId) };
  };

  test('create of a VM disk another volume has: refused at validate, nothing created in CloudStack', async () => {
    const { s, audit } = await refusal(
      PATHS.create,
      (s) => seeds.created(subject(s.world)), // another volume, same VM disk
      (s) => PATHS.create.start(t, s),
      /at step "validate".*is already mapped to volume/,
    );
    assert.equal(s.world.volumes.size, 1, 'only the other volume');
    assert.deepEqual(audit, ['forward:validate:failed']);
    assert.deepEqual(s.world.activityCalls(), ['dbCheckName'], 'refused before CloudStack is called');
  });

  test('attach of a volume on another VM: refused after validate, fail it back instead', async () => {
    const { audit } = await refusal(
      PATHS.attach,
      (s) => void s.world.csAttach({ volumeId: s.volumeId, vmId: TARGET }),
      (s) => PATHS.attach.start(t, s),
      /failed after step "validate": .*is attached to VM .*fail it back instead/,
    );
    assert.deepEqual(audit, ['forward:validate:completed']);
  });

  test('attach naming the volume otherwise than its row: refused at assign-name, its undo finds nothing', async () => {
    const { audit } = await refusal(
      PATHS.attachAgain,
      () => {},
      (s) =>
        t.volumes.attach({
          volumeId: s.volumeId,
          applianceVmId: APPLIANCE,
          sourceVmName: 'othervm',
          diskKey: 2000,
        }),
      /at step "assign-name".*is mapped as VM "wfvm"/,
    );
    // The undo registered before the step still runs: a refusal is audited as such all the same.
    assert.deepEqual(audit, [
      'forward:validate:completed',
      'forward:assign-name:failed',
      'compensation:undo:assign-name:completed',
    ]);
  });

  test('detach of a volume without a mapping: refused, attach it first', async () => {
    await refusal(
      PATHS.attach,
      () => {},
      (s) => t.volumes.detach({ volumeId: s.volumeId, applianceVmId: APPLIANCE }),
      /has no device mapping: attach it first/,
    );
  });

  test('failover of a volume on a third VM: refused, nothing moved', async () => {
    await refusal(
      PATHS.failover,
      (s) => {
        s.world.vms.add('00000000-0000-4000-8000-000000000003');
        s.world.csDetach({ volumeId: s.volumeId });
        s.world.csAttach({ volumeId: s.volumeId, vmId: '00000000-0000-4000-8000-000000000003' });
      },
      (s) => PATHS.failover.start(t, s),
      /neither the appliance nor the target/,
    );
  });
});

describe('no-ops: already as asked', { concurrency: true }, () => {
  const noop = async (path: SagaPath, seed: (s: Subject) => void, expectCalls: string[]) => {
    const s = prepare(t, { ...path, seed });
    const before = s.world.state();
    const h = await path.start(t, s);
    const out = await outcome(h, s.world);
    assert.equal(out.kind, 'completed');
    assert.equal(out.kind === 'completed' && out.result.noop, true);
    assert.deepEqual(s.world.state(), before);
    assert.deepEqual(s.world.activityCalls(), expectCalls, 'reads only');
    assert.equal(s.world.operations.get(h.operationId)!.status, 'completed');
  };
  test('detach of a detached volume', () =>
    noop(PATHS.detach, seeds.detached, ['dbGetMapping', 'csGetVolume']));
  test('failover of a volume already on the migrated VM', () =>
    noop(PATHS.failover, seeds.onTarget, ['dbGetMapping', 'csGetVolume']));
  test('delete of a volume no one knows', () =>
    noop(PATHS.delete, seeds.gone, ['dbGetMapping', 'csGetVolume', 'dbGetExport']));
});

describe('variants', { concurrency: true }, () => {
  test('failover asRoot: attached to the migrated VM as its root disk (deviceid 0)', async () => {
    const s = prepare(t, PATHS.failover);
    const h = await t.volumes.failover({
      volumeId: s.volumeId,
      applianceVmId: APPLIANCE,
      targetVmId: TARGET,
      asRoot: true,
    });
    assert.equal((await outcome(h, s.world)).kind, 'completed');
    const attach = s.world.calls.find((c) => c.activity === 'csAttach')!;
    assert.deepEqual(attach.args[0], { volumeId: s.volumeId, vmId: TARGET, deviceId: 0 });
    assert.equal(s.world.volumes.get(s.volumeId)!.deviceId, 0);
  });

  test('failback as another /dev/vdY: dm reloaded over it, same export name and path', async () => {
    const s = prepare(t, PATHS.failback);
    s.world.disks.set('vdb', { serial: 'someone-else', sizeBytes: GIB }); // vdb is taken meanwhile
    const exportsBefore = [...s.world.exports];
    const h = await PATHS.failback.start(t, s);
    const out = await outcome(h, s.world);
    assert.equal(out.kind, 'completed');
    assert.equal(out.kind === 'completed' && out.result.access?.devicePath, '/dev/vdc');
    assert.deepEqual(s.world.dm.get(s.name)!.table, {
      kind: 'linear',
      sectors: GIB / 512,
      device: '254:32',
      offset: 0,
    });
    assert.equal(s.world.rows.get(s.volumeId)!.devicePath, '/dev/vdc');
    assert.deepEqual([...s.world.exports], exportsBefore, 'the export never changes');
  });

  test('attach over a /dev/vdX a stale dm device and row still claim: they let go of it', async () => {
    const s = prepare(t, PATHS.attach);
    const stale = 'oldvmdisk0';
    s.world.dm.set(stale, {
      uuid: `VOLLIFE-${stale}`,
      table: { kind: 'linear', sectors: 8, device: '254:16', offset: 0 },
      openCount: 0,
    });
    const other = subject(s.world);
    seeds.created(other);
    Object.assign(s.world.rows.get(other.volumeId)!, {
      sourceVmName: 'oldvm',
      diskIndex: 0,
      persistentName: stale,
      mapperPath: `/dev/mapper/${stale}`,
      devicePath: '/dev/vdb',
    });
    const h = await PATHS.attach.start(t, s);
    assert.equal((await outcome(h, s.world)).kind, 'completed');
    assert.deepEqual(s.world.dm.get(stale)!.table, { kind: 'error', sectors: 8 });
    assert.equal(s.world.rows.get(other.volumeId)!.devicePath, null);
    assert.equal(s.world.dm.get(s.name)!.table.kind, 'linear');
  });

  test('an attach that names nothing keeps the name create gave the volume', async () => {
    const s = prepare(t, { ...PATHS.attach, seed: seeds.created });
    const h = await t.volumes.attach({ volumeId: s.volumeId, applianceVmId: APPLIANCE });
    const out = await outcome(h, s.world);
    assert.equal(out.kind, 'completed', JSON.stringify(out));
    assert.equal(out.kind === 'completed' && out.result.access?.persistentName, s.name);
    assert.deepEqual(s.world.state(), stateOf(seeds.onAppliance, s));
  });

  test('cancelled in flight, the step acts and reports the cancellation: undone all the same', async () => {
    // The saga sees the step cancelled, not done: its undo, registered before it ran, finds the attach.
    const s = prepare(t, PATHS.attach);
    const before = s.world.state();
    const hold = s.world.hold('csAttach', 1, 'cancelled');
    const h = await PATHS.attach.start(t, s);
    await within(hold.started, 'the CloudStack attach to start');
    await handleOf(t, h).cancel();
    await within(hold.cancelRequested, 'the cancel to reach the attach');
    hold.release();
    const out = await outcome(h, s.world);
    assert.equal(out.kind, 'cancelled', JSON.stringify(out));
    assert.equal(hold.call?.outcome, 'cancelled');
    assert.deepEqual(s.world.audit(h.operationId), [
      'forward:validate:completed',
      'forward:assign-name:completed',
      'forward:cloudstack-attach:failed',
      'compensation:undo:cloudstack-attach:completed',
      'compensation:undo:assign-name:completed',
    ]);
    assert.deepEqual(s.world.state(), before, 'the attach it did not report is undone');
  });

  test('a create whose CloudStack reply was lost finds the volume it made instead of a second one', async () => {
    // Nothing to fake here: the create's own retry is the activity's (csCreate looks first).
    const s = prepare(t, PATHS.create);
    const h = await PATHS.create.start(t, s);
    assert.equal((await outcome(h, s.world)).kind, 'completed');
    assert.equal(s.world.volumes.size, 1);
    assert.equal(
      [...s.world.rows.values()][0]!.virtioSerial,
      diskSerialFor([...s.world.volumes.keys()][0]!),
      'the row carries the new volume id',
    );
  });
});

describe('while a saga runs', { concurrency: true }, () => {
  test('progress query and SagaStep show the step in flight; one operation per volume', async () => {
    const s = prepare(t, PATHS.attach);
    const hold = s.world.hold('hostCorrelate');
    const h = await PATHS.attach.start(t, s);
    await within(hold.started, 'correlate to start');
    const p = await h.progress();
    assert.deepEqual(
      {
        currentStep: p.currentStep,
        stepsDone: p.stepsDone,
        state: p.state,
        needsAttention: p.needsAttention,
      },
      {
        currentStep: 'correlate',
        stepsDone: ['validate', 'assign-name', 'cloudstack-attach'],
        state: 'running',
        needsAttention: null,
      },
    );
    const d = await handleOf(t, h).describe();
    assert.equal(d.typedSearchAttributes.get(SA.SagaStep), 'correlate');
    assert.equal(d.typedSearchAttributes.get(SA.PersistentName), s.name);
    // A second operation on the volume is refused, naming the running one (conflict policy FAIL).
    await assert.rejects(
      t.volumes.detach({ volumeId: s.volumeId, applianceVmId: APPLIANCE }),
      (e: unknown) =>
        e instanceof VolumeBusyError &&
        e.running.operationId === h.operationId &&
        e.running.type === 'attach',
    );
    hold.release();
    assert.equal((await outcome(h, s.world)).kind, 'completed');
    const done = await h.progress();
    assert.equal(done.state, 'completed');
    assert.equal(done.currentStep, null);
    assert.equal(done.stepsDone.length, 8);
  });

  test('the same idempotency key while it runs is the same operation, not a second one', async () => {
    const s = prepare(t, PATHS.detach);
    const hold = s.world.hold('hostDmEnsureError');
    const operationId = randomUUID();
    const h = await t.volumes.detach({ operationId, volumeId: s.volumeId, applianceVmId: APPLIANCE });
    await within(hold.started, 'dm-error to start');
    const again = await t.volumes.detach({ operationId, volumeId: s.volumeId, applianceVmId: APPLIANCE });
    assert.equal(again.deduplicated, true);
    assert.equal(again.runId, h.runId);
    hold.release();
    assert.equal((await outcome(h, s.world)).kind, 'completed');
    assert.equal(s.world.operations.size, 1);
    assert.equal(workflowIdOf(PATHS.detach, s), h.workflowId);
  });
});

describe('the operator update', { concurrency: true }, () => {
  /** The update was refused by the workflow's validator, with this message. */
  const refusedWith = (re: RegExp) => (e: unknown) =>
    e instanceof WorkflowUpdateFailedError && re.test(String((e.cause as Error | undefined)?.message));
  /**
   * An attach whose last step acts and fails (its reply lost), so every step is compensated, and
   * whose undo of the CloudStack attach (its first csDetach) fails `times` times: the saga parks.
   */
  const parkedAttach = async (times: number) => {
    const s = prepare(t, PATHS.attach);
    const before = s.world.state();
    s.world.failAfter('dbUpsertExport');
    s.world.failBefore('csDetach', 1, times);
    const h = await PATHS.attach.start(t, s);
    const out = await outcome(h, s.world);
    assert.equal(out.kind, 'parked', JSON.stringify(out));
    return { s, h, before };
  };
  const tail = (s: Subject, operationId: string, n: number) => s.world.audit(operationId).slice(-n);

  test('a failed compensation parks the saga: NeedsAttention, progress and audit say which and why', async () => {
    const { s, h } = await parkedAttach(Infinity);
    const p = await h.progress();
    assert.equal(p.state, 'waiting-for-operator');
    assert.equal(p.currentStep, 'undo:cloudstack-attach');
    assert.equal(p.needsAttention?.step, 'cloudstack-attach');
    assert.match(p.needsAttention?.error ?? '', /injected: csDetach failed before acting/);
    assert.deepEqual(p.compensationsRun, [
      { step: 'ensure-export', status: 'completed' },
      { step: 'record-mapping', status: 'completed' },
      { step: 'dm-map', status: 'completed' },
    ]);
    const d = await handleOf(t, h).describe();
    assert.equal(d.typedSearchAttributes.get(SA.NeedsAttention), true);
    assert.equal(d.typedSearchAttributes.get(SA.SagaStep), 'undo:cloudstack-attach');
    assert.equal(s.world.operations.get(h.operationId)!.status, 'needs_attention');
    assert.deepEqual(tail(s, h.operationId, 1), ['compensation:undo:cloudstack-attach:failed']);
    // The workflow's validator: retry/skip need a reason and a waiting compensation; no other action.
    const raw = handleOf(t, h);
    await assert.rejects(
      raw.executeUpdate('operator', { args: [{ action: 'retry', reason: ' ' }] }),
      refusedWith(/^reason: a reason is required$/),
    );
    await assert.rejects(
      raw.executeUpdate('operator', { args: [{ action: 'reboot', reason: 'x' }] }),
      refusedWith(/^action: must be "retry", "skip" or "abort"$/),
    );
    assert.equal(
      await t.volumes.operator(s.volumeId, { action: 'abort', reason: 'test over', operator: 'ops' }),
      'accepted: abort',
    );
    const out = await outcome(h, s.world);
    assert.equal(out.kind, 'failed');
  });

  test('retry runs the undo again (and parks again if it fails again); then the saga compensates', async () => {
    const { s, h, before } = await parkedAttach(2);
    assert.equal(
      await t.volumes.operator(s.volumeId, { action: 'retry', reason: 'fixed it', operator: 'bob' }),
      'accepted: retry',
    );
    assert.equal((await outcome(h, s.world)).kind, 'parked', 'the retried undo fails again: parked again');
    assert.equal(
      await t.volumes.operator(s.volumeId, { action: 'retry', reason: 'fixed it for real', operator: 'bob' }),
      'accepted: retry',
    );
    const out = await outcome(h, s.world);
    assert.equal(out.kind, 'failed');
    assert.match(
      out.kind === 'failed' ? out.message : '',
      /compensated: ensure-export=completed, record-mapping=completed, dm-map=completed, cloudstack-attach=completed, assign-name=completed$/,
    );
    assert.deepEqual(tail(s, h.operationId, 6), [
      'compensation:undo:cloudstack-attach:failed',
      'operator:operator:retry:completed',
      'compensation:undo:cloudstack-attach:failed',
      'operator:operator:retry:completed',
      'compensation:undo:cloudstack-attach:completed',
      'compensation:undo:assign-name:completed',
    ]);
    const op = s.world.operations.get(h.operationId)!;
    assert.equal(op.status, 'compensated');
    assert.deepEqual(s.world.state(), before, 'everything undone');
    const decision = s.world.steps.find(
      (x) => x.operationId === h.operationId && x.step === 'operator:retry',
    );
    assert.deepEqual(decision?.details, { action: 'retry', reason: 'fixed it', operator: 'bob' });
    const sa = (await handleOf(t, h).describe()).typedSearchAttributes;
    assert.equal(sa.get(SA.NeedsAttention), false);
  });

  test('skip records the undo as skipped (with the reason) and goes on with the rest', async () => {
    const { s, h, before } = await parkedAttach(Infinity);
    await t.volumes.operator(s.volumeId, {
      action: 'skip',
      reason: 'detached it by hand',
      operator: 'carol',
    });
    const out = await outcome(h, s.world);
    assert.equal(out.kind, 'failed');
    assert.match(
      out.kind === 'failed' ? out.message : '',
      /cloudstack-attach=skipped, assign-name=completed$/,
    );
    assert.deepEqual(tail(s, h.operationId, 3), [
      'compensation:undo:cloudstack-attach:failed',
      'operator:operator:skip:completed',
      'compensation:undo:assign-name:completed',
    ]);
    assert.equal(s.world.operations.get(h.operationId)!.status, 'compensated');
    // Everything else undone; the skipped undo's work (the CloudStack detach) left to the operator.
    const after = s.world.state();
    assert.deepEqual({ ...after, volumes: before.volumes, disks: before.disks }, before);
    assert.equal(s.world.volumes.get(s.volumeId)!.attachedTo, APPLIANCE);
  });

  test('abort while parked abandons the remaining undos: audited failed, left to reconciliation', async () => {
    const { s, h } = await parkedAttach(Infinity);
    await t.volumes.operator(s.volumeId, { action: 'abort', reason: 'giving up', operator: 'dave' });
    const out = await outcome(h, s.world);
    assert.equal(out.kind, 'failed');
    assert.equal(out.kind === 'failed' && out.type, 'OperationFailed');
    assert.match(
      out.kind === 'failed' ? out.message : '',
      /compensation abandoned by an operator; reconciliation will finish the clean-up/,
    );
    assert.deepEqual(tail(s, h.operationId, 2), [
      'compensation:undo:cloudstack-attach:failed',
      'operator:operator:abort:completed',
    ]);
    assert.equal(s.world.operations.get(h.operationId)!.status, 'failed');
    assert.ok(s.world.rows.has(s.volumeId), 'assign-name was never undone');
  });

  test('abort while running cancels the forward steps: compensated, audited cancelled, failed as aborted', async () => {
    const s = prepare(t, PATHS.attach);
    const before = s.world.state();
    const hold = s.world.hold('hostCorrelate');
    const h = await PATHS.attach.start(t, s);
    await within(hold.started, 'correlate to start');
    // retry/skip only answer a waiting compensation.
    await assert.rejects(
      t.volumes.operator(s.volumeId, { action: 'retry', reason: 'x' }),
      refusedWith(/"retry" is only valid while a compensation waits for an operator/),
    );
    assert.equal(
      await t.volumes.operator(s.volumeId, { action: 'abort', reason: 'wrong volume', operator: 'erin' }),
      'aborting: completed steps will be compensated',
    );
    await within(hold.cancelRequested, 'the abort to reach the step in flight');
    hold.release();
    const out = await outcome(h, s.world);
    assert.equal(out.kind, 'failed');
    assert.equal(out.kind === 'failed' && out.type, 'OperationAborted');
    assert.match(
      out.kind === 'failed' ? out.message : '',
      /was cancelled at step "[a-z-]+": aborted by erin: wrong volume; compensated: cloudstack-attach=completed, assign-name=completed/,
    );
    assert.equal(s.world.operations.get(h.operationId)!.status, 'cancelled');
    assert.deepEqual(s.world.state(), before);
  });

  test('abort while compensating changes nothing: "nothing to abort"', async () => {
    const s = prepare(t, PATHS.attach);
    const before = s.world.state();
    s.world.failAfter('dbUpsertExport');
    const undo = s.world.hold('csDetach');
    const h = await PATHS.attach.start(t, s);
    await within(undo.started, 'the undo of the CloudStack attach to start');
    assert.equal((await h.progress()).state, 'compensating');
    assert.equal(
      await t.volumes.operator(s.volumeId, { action: 'abort', reason: 'x' }),
      'nothing to abort (compensating)',
    );
    undo.release();
    const out = await outcome(h, s.world);
    assert.equal(out.kind, 'failed');
    assert.equal(s.world.operations.get(h.operationId)!.status, 'compensated');
    assert.ok(
      !s.world.audit(h.operationId).some((e) => e.startsWith('operator:')),
      'no operator decision recorded',
    );
    assert.deepEqual(s.world.state(), before);
  });
});

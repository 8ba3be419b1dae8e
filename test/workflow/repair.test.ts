import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import type { OperationResult } from '../../src/domain/operations.js';
import { controlQueue } from '../../src/temporal/task-queues.js';
import type { repairVolume } from '../../workflows/repair.js';
import { FakeWorld } from '../support/fake-activities.js';
import { APPLIANCE, seeds, startTier, subject, TARGET, within, type Subject, type Tier } from './harness.js';

/**
 * Reconciliation's repair on the real workflow code, activities faked: it converges drifted
 * appliance state back to what a completed saga leaves (the seeds, proven in sagas.test.ts), with
 * the sagas' own steps (the audit names them), and leaves converged state alone.
 */
let t: Tier;
before(async () => (t = await startTier()));
after(() => t?.close());

async function repair(s: Subject): Promise<{ result: OperationResult; steps: string[] }> {
  const operationId = randomUUID();
  const workflowId = `volume:${s.volumeId}`;
  t.fleet.add(workflowId, s.world);
  const h = await t.env.client.workflow.start<typeof repairVolume>('repairVolume', {
    taskQueue: controlQueue(t.prefix),
    workflowId,
    args: [
      {
        operationId,
        volumeId: s.volumeId,
        applianceVmId: APPLIANCE,
        taskQueuePrefix: t.prefix,
        correlationTimeoutMs: 5_000,
        findings: [],
      },
    ],
  });
  const result = await within(h.result(), 'the repair to end');
  await s.world.quiet();
  return { result, steps: s.world.audit(operationId) };
}

/** A world seeded with `seed`, its state, and the same world to drift. */
function seeded(seed: (s: Subject) => void) {
  const s = subject(new FakeWorld(APPLIANCE, [TARGET]));
  seed(s);
  return { s, converged: s.world.state() };
}

describe('repair converges with the sagas steps', { concurrency: true }, () => {
  test('on the appliance, dm device and export gone: dm-map and ensure-export bring them back', async () => {
    const { s, converged } = seeded(seeds.onAppliance);
    s.world.dm.delete(s.name);
    s.world.exports.delete(`migration-vol-${s.name}`);
    s.world.exports.delete(`migration-vol-${s.volumeId}`);
    s.world.exportRows.delete(s.volumeId);
    assert.notDeepEqual(s.world.state(), converged);
    const { result, steps } = await repair(s);
    assert.equal(result.status, 'completed');
    assert.deepEqual(s.world.state(), converged);
    assert.deepEqual(steps, [
      'forward:validate:completed',
      'forward:dm-map:completed',
      'forward:ensure-export:completed',
    ]);
  });

  test('away on the migrated VM with a linear table left: dm-error, the export kept', async () => {
    const { s, converged } = seeded(seeds.onTarget);
    const d = s.world.dm.get(s.name)!;
    s.world.dm.set(s.name, {
      ...d,
      table: { kind: 'linear', sectors: d.table.sectors, device: '254:16', offset: 0 },
    });
    assert.notDeepEqual(s.world.state(), converged);
    const { steps } = await repair(s);
    assert.deepEqual(s.world.state(), converged);
    assert.deepEqual(steps, [
      'forward:validate:completed',
      'forward:dm-error:completed',
      'forward:ensure-export:completed',
    ]);
  });

  test('the row names an old device: dm-map over the one carrying the serial, record-mapping writes it', async () => {
    const { s, converged } = seeded(seeds.onAppliance);
    const row = s.world.rows.get(s.volumeId)!;
    s.world.rows.set(s.volumeId, { ...row, devicePath: '/dev/vdq' });
    assert.notDeepEqual(s.world.state(), converged);
    const { steps } = await repair(s);
    assert.deepEqual(s.world.state(), converged);
    assert.deepEqual(steps, [
      'forward:validate:completed',
      'forward:dm-map:completed',
      'forward:record-mapping:completed',
      'forward:ensure-export:completed',
    ]);
  });
});

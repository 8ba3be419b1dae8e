import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { getMapping } from '../../src/db/mappings.js';
import type { SagaProgress } from '../../src/domain/operations.js';
import { assertConsistent } from '../support/checks.js';
import { startLabStack, type LabStack } from '../support/lab-stack.js';
import { crashAtEveryStep } from '../support/crash-cases.js';

/**
 * Durability on real parts: kill -9 of the appliance's host worker mid-correlation, and right
 * after every device step of every saga (test/support/crash-cases.ts); its supervisor starts a
 * new one. The control worker's steps: test/integration/crash-control.test.ts.
 */
let s: LabStack;
before(
  async () => (s = await startLabStack('crash', { correlationTimeoutMs: 90_000, controlWorker: 'process' })),
);
after(() => s?.close());

test('kill -9 of the host worker mid-correlation: the attach still completes, state consistent', async () => {
  const volumeId = await s.createVolume();
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  // CloudStack's job completes, but the disk reaches the guest only once the gate opens (as when
  // the guest is slow to see a hot-plug): the saga sits in `correlate` on the host worker.
  const plugged: Promise<void>[] = [];
  s.hypervisorOverride.wrap = (inner) => ({
    attach: async (a) => {
      if (a.volumeId !== volumeId) return inner.attach(a);
      plugged.push(gate.then(() => inner.attach(a)));
    },
    detach: (a) => inner.detach(a),
  });
  try {
    s.sim.sim.jobDurationMs = 20;
    const h = await s.volumes.attach({
      applianceVmId: s.applianceVmId,
      volumeId,
      sourceVmName: 'crashvm',
      diskKey: 2000,
    });
    let p: SagaProgress | undefined;
    while (p?.currentStep !== 'correlate') {
      p = await h.progress().catch(() => undefined);
      await new Promise((r) => setTimeout(r, 50));
    }
    await s.restartHostWorker(); // SIGKILL while correlate runs on it, then a fresh worker
    release();
    await Promise.all(plugged);
    const r = await h.result();
    assert.equal(r.access?.persistentName, 'crashvmdisk0');
    assert.equal((await getMapping(s.db.pool, volumeId))?.dmState, 'linear');
    assert.ok((await s.servedExports()).includes('migration-vol-crashvmdisk0'));
    await assertConsistent(s, 'after the worker crash');
  } finally {
    release();
    delete s.hypervisorOverride.wrap;
  }
});

crashAtEveryStep(
  () => ({ ...s, consistent: (label: string) => assertConsistent(s, label) }),
  ['attach', 'detach', 'failover', 'failback', 'delete'],
  'host',
);

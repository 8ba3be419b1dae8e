import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { listMappings } from '../../src/db/mappings.js';
import { listOperations, listSteps } from '../../src/db/operations.js';
import { STEPS } from '../support/saga-steps.js';
import { startStandinStack, type StandinStack } from '../support/standin-stack.js';

/**
 * Load with restarts: 200 attach sagas in flight across 8 appliances (25 disks each, 40 source
 * VMs of 5 disks) while the workers are restarted twice — the control worker (every workflow,
 * CloudStack and database step) once by kill -9 and once by SIGTERM, and every host worker both
 * times. The appliances' kernels are stood in (test/support/host-stand-in.ts: 200 hot-plugs are
 * beyond the lab); Temporal, MariaDB, the simulator and the workers are real.
 */
const N = 200;
const VMS = 40;
let s: StandinStack;
before(async () => {
  s = await startStandinStack('load', { appliances: 8, controlWorker: 'process', dbPoolSize: 30 });
});
after(() => s?.close());

test(`${N} attach sagas finish through two worker restarts: names unique, audit complete`, async (t) => {
  const started = Date.now();
  const requests = await Promise.all(
    Array.from({ length: N }, async (_, i) => ({
      applianceVmId: s.appliances[i % s.appliances.length]!.id,
      volumeId: await s.createVolume(),
      sourceVmName: `loadvm${Math.floor(i / (N / VMS))}`,
      diskKey: 2000 + (i % (N / VMS)),
    })),
  );
  const handles = await Promise.all(requests.map((r) => s.volumes.attach(r)));
  let done = 0;
  const results = handles.map((h) =>
    h.result().then(
      (r) => (done++, r),
      (e: unknown) => (done++, Promise.reject(e)),
    ),
  );
  const waitDone = async (n: number) => {
    while (done < n) await new Promise((r) => setTimeout(r, 20));
  };

  // Restart 1: a crash while ~90% of the sagas are still running.
  await waitDone(N / 10);
  const inFlight1 = N - done;
  await s.restartControlWorker('SIGKILL');
  await s.restartHostWorkers();
  // Restart 2: an orderly restart (SIGTERM drains the worker) with half still running.
  await waitDone(N / 2);
  const inFlight2 = N - done;
  await s.restartControlWorker('SIGTERM');
  await s.restartHostWorkers();
  assert.ok(inFlight1 >= N / 2 && inFlight2 > 0, `in flight at the restarts: ${inFlight1}, ${inFlight2}`);

  const settled = await Promise.allSettled(results);
  const failed = settled.flatMap((r, i) => (r.status === 'rejected' ? [`${i}: ${String(r.reason)}`] : []));
  assert.deepEqual(failed, [], 'every saga completes');
  t.diagnostic(
    `${N} sagas completed in ${((Date.now() - started) / 1000).toFixed(1)} s; in flight at the kill -9: ${inFlight1}, at the SIGTERM: ${inFlight2}`,
  );
  const names = settled.map(
    (r) => (r as PromiseFulfilledResult<Awaited<(typeof results)[0]>>).value.access!.persistentName,
  );

  // Names: unique, each the one its source disk asks for, and the same everywhere.
  assert.equal(new Set(names).size, N);
  assert.deepEqual(
    names,
    requests.map((r) => `${r.sourceVmName}disk${r.diskKey - 2000}`),
  );
  const rows = await listMappings(s.db.pool);
  assert.equal(rows.length, N);
  assert.deepEqual(rows.map((r) => r.persistentName).sort(), [...names].sort());
  assert.ok(rows.every((r) => r.location === 'appliance' && r.dmState === 'linear'));
  const dmNames = s.appliances.flatMap((a) => [...a.dm.devices.keys()]);
  assert.deepEqual(dmNames.sort(), [...names].sort(), 'one dm device per volume, on its appliance');
  for (const a of s.appliances) {
    const tables = [...a.dm.devices.values()].map((d) => d.table.trim());
    assert.ok(
      tables.every((t) => /^0 \d+ linear 254:\d+ 0$/.test(t)),
      tables.join('; '),
    );
    assert.equal(new Set(tables).size, tables.length, 'each dm device over a disk of its own');
  }
  const exported = (await Promise.all(s.appliances.map((a) => s.servedExports(a.id)))).flat();
  // Each under both its names: the persistent one and the engine's (migration-vol-<volume id>).
  assert.deepEqual(
    exported.sort(),
    [...names.map((n) => `migration-vol-${n}`), ...rows.map((r) => `migration-vol-${r.volumeId}`)].sort(),
  );

  // Audit: one completed operation per saga, every attach step recorded once, completed, in order.
  const ops = await listOperations(s.db.pool, { type: 'attach', limit: 1000 });
  assert.equal(ops.length, N);
  const expected = STEPS.attach.map(([step]) => `forward:${step}:completed`);
  for (const op of ops) {
    assert.equal(op.status, 'completed', op.operationId);
    const steps = (await listSteps(s.db.pool, op.operationId)).map((x) => `${x.phase}:${x.step}:${x.status}`);
    assert.deepEqual(steps, expected, `audit of ${op.volumeId}`);
  }
});

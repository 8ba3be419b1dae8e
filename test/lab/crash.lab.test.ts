import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import { getMapping } from '../../src/db/mappings.js';
import type { SagaProgress } from '../../src/domain/operations.js';
import { assertConsistent, nbdkitPid } from '../support/checks.js';
import { startLabStack, type LabStack } from '../support/lab-stack.js';
import { crashAtEveryStep } from '../support/crash-cases.js';
import { killLiveClients, NbdStream } from '../support/nbd-live.js';

/**
 * Durability on real parts: kill -9 of the appliance's host worker mid-correlation, and right
 * after every device step of every saga (test/support/crash-cases.ts); its supervisor starts a
 * new one. The control worker's steps: test/integration/crash-control.test.ts.
 *
 * Then an upgrade of the installed release with an attach in flight (the old worker drains).
 * Throughout, a replication stream (libnbd, one connection) writes and reads back another
 * volume's export: the NBD server outlives every one of those crashes and the upgrade (last test).
 */
let s: LabStack;
let stream: NbdStream;
let nbdkitAtStart: number;
let restartsBefore = 0;
before(async () => {
  s = await startLabStack('crash', { correlationTimeoutMs: 90_000, controlWorker: 'process' });
  const r = await (
    await s.volumes.attach({
      applianceVmId: s.applianceVmId,
      volumeId: await s.createVolume(),
      sourceVmName: 'crashstream',
      diskKey: 2000,
    })
  ).result();
  nbdkitAtStart = await nbdkitPid(s);
  restartsBefore = s.hostWorkerRestarts();
  // Paced (16 write+read pairs of 64 KiB a second): the emulated guest's CPUs are the crash
  // cases' too.
  stream = new NbdStream(s.nbdUri(r.access!.exportName), { opsPerSecond: 16 });
  await stream.started();
});
after(async () => {
  await killLiveClients();
  await s?.close();
});

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

test('an upgrade of the appliance with an attach in flight: the old release finishes its step while draining, the new one runs the rest', async () => {
  const volumeId = await s.createVolume();
  const from = s.hostWorkerVersion();
  assert.ok(from, 'the lab runs the installed release');
  const to = `${from}.next`;
  const fp = {
    id: `upgrade-${randomUUID().slice(0, 8)}`,
    workflowId: `volume:${volumeId}`,
    activityType: 'hostDmEnsureLinear',
    action: 'hold' as const,
  };
  const failpoints = s.failpointsFor(fp.activityType);
  await failpoints.arm(fp);
  const restarts = s.hostWorkerRestarts();
  const h = await s.volumes.attach({
    applianceVmId: s.applianceVmId,
    volumeId,
    sourceVmName: 'upgradevm',
    diskKey: 2000,
  });
  while (!(await failpoints.held(fp.id))) await new Promise((r) => setTimeout(r, 200));
  const old = await s.upgradeHostWorker(to);
  await old.waitForLog(/host worker draining/, 30_000);
  await failpoints.release(fp.id);
  await s.waitHostWorkerRestart(restarts);
  assert.equal((await old.status()).exitCode, 0, 'the old release drained and exited cleanly');
  const r = await h.result();
  assert.equal(r.access?.persistentName, 'upgradevmdisk0');

  // Who ran which step: each host step once, dm-map on the old release, the export on the new.
  const events = (await s.temporal.workflow.getHandle(h.workflowId, h.runId).fetchHistory()).events ?? [];
  const typeOf = new Map<string, string>();
  const ranOn: Record<string, string[]> = {};
  for (const e of events) {
    const sched = e.activityTaskScheduledEventAttributes;
    if (sched) typeOf.set(String(e.eventId), sched.activityType?.name ?? '');
    const started = e.activityTaskStartedEventAttributes;
    if (started) {
      const type = typeOf.get(String(started.scheduledEventId)) ?? '?';
      (ranOn[type] ??= []).push(String(started.identity).split(' volume-lifecycle/')[1] ?? '?');
    }
  }
  assert.deepEqual(ranOn.hostDmEnsureLinear, [from], JSON.stringify(ranOn));
  assert.deepEqual(ranOn.hostExportEnsure, [to], JSON.stringify(ranOn));
  assert.equal((await getMapping(s.db.pool, volumeId))?.dmState, 'linear');
  assert.ok((await s.servedExports()).includes('migration-vol-upgradevmdisk0'));
  await assertConsistent(s, 'after the upgrade');
});

test('the replication stream ran error-free through every host worker crash above, on the same nbdkit', async () => {
  const crashes = s.hostWorkerRestarts() - restartsBefore;
  const summary = await stream.stop();
  console.log(
    `stream through ${crashes} host worker crashes: ${summary.ops} write+read-back ops over ` +
      `${((summary.endedMs - summary.startedMs) / 1000).toFixed(0)} s, errors ${summary.errors}, ` +
      `mismatches ${summary.mismatches}, connects ${summary.connects}, longest op ${summary.maxLatMs.toFixed(0)} ms, ` +
      `blocks verified ${summary.blocksVerified}`,
  );
  assert.ok(crashes >= 10, `host worker crashes during the stream: ${crashes}`);
  assert.deepEqual(summary.firstErrors, []);
  assert.equal(summary.errors + summary.mismatches + summary.blocksBad, 0);
  assert.equal(summary.connects, 1);
  assert.ok(summary.blocksVerified >= 64, `blocks verified: ${summary.blocksVerified}`);
  // Bound: a worker's start-up in the same emulated guest competes with nbdkit for its CPUs.
  assert.ok(summary.maxLatMs < 5_000, `no stall of 5 s or more: longest ${summary.maxLatMs.toFixed(0)} ms`);
  assert.equal(await nbdkitPid(s), nbdkitAtStart, 'the same nbdkit served throughout');
});

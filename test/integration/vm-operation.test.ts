import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { WorkflowFailedError } from '@temporalio/client';
import { getMapping } from '../../src/db/mappings.js';
import { untilCancelRequested } from '../support/saga-state.js';
import { startStandinStack, type StandinStack } from '../support/standin-stack.js';

/**
 * A whole VM at once (workflows/vm.ts), over a stood-in appliance kernel: its 8 volumes failed
 * over in parallel (the OS disk as the stopped VM's root) and back; one abort sends the whole VM
 * back. Prints the VM's failover time against one volume after another, same run: that time is
 * the migration's downtime.
 */
let s: StandinStack;
before(async () => (s = await startStandinStack('vmop', { maxDataVolumes: 64 })));
after(() => s?.close());

const DISKS = 8;
const base = () => ({ applianceVmId: s.applianceVmId });

async function vmOnAppliance(vm: string): Promise<string[]> {
  const vols: string[] = [];
  for (let i = 0; i < DISKS; i++) {
    const volumeId = await s.createVolume(1);
    await (await s.volumes.attach({ ...base(), volumeId, sourceVmName: vm, diskKey: 2000 + i })).result();
    vols.push(volumeId);
  }
  return vols;
}

async function stopTargetWithoutRoot(): Promise<void> {
  s.sim.sim.state.vms.get(s.targetVmId)!.state = 'Stopped';
  const root = (await s.cs.listVolumes({ virtualmachineid: s.targetVmId })).find((v) => v.deviceid === 0);
  if (root) await s.cs.detachVolume(root.id, { fromVmId: s.targetVmId });
}

const where = async (vols: string[]) =>
  Promise.all(
    vols.map(async (v) => [
      (await s.cs.getVolume(v))?.virtualmachineid,
      (await getMapping(s.db.pool, v))?.location,
    ]),
  );

test('8 disks fail over as one operation (OS disk as root) and back; printed against one after another', async () => {
  const vols = await vmOnAppliance('vmall');
  await stopTargetWithoutRoot();
  const volumes = vols.map((volumeId, i) => ({ volumeId, ...(i === 0 ? { asRoot: true } : {}) }));

  let t = performance.now();
  const op = await s.volumes.vm({ ...base(), type: 'failover', targetVmId: s.targetVmId, volumes });
  const r = await op.result();
  const parallelMs = performance.now() - t;
  assert.deepEqual(Object.keys(r.volumes).sort(), [...vols].sort());
  assert.deepEqual(
    await where(vols),
    vols.map(() => [s.targetVmId, 'target']),
  );
  const os = (await s.cs.getVolume(vols[0]!))!;
  assert.deepEqual([os.deviceid, os.type], [0, 'ROOT'], 'the OS disk is the root disk');
  const p = await op.progress();
  assert.ok(
    Object.values(p.volumes).every((v) => v.state === 'completed'),
    JSON.stringify(p),
  );

  t = performance.now();
  await (await s.volumes.vm({ ...base(), type: 'failback', targetVmId: s.targetVmId, volumes })).result();
  const failbackMs = performance.now() - t;
  assert.deepEqual(
    await where(vols),
    vols.map(() => [s.applianceVmId, 'appliance']),
  );

  // The same VM one volume after another, same run.
  t = performance.now();
  for (const v of volumes)
    await (
      await s.volumes.failover({
        ...base(),
        volumeId: v.volumeId,
        targetVmId: s.targetVmId,
        asRoot: v.asRoot,
      })
    ).result();
  const sequentialMs = performance.now() - t;
  for (const v of volumes) await (await s.volumes.failback({ ...base(), volumeId: v.volumeId })).result();
  console.log(
    `VM with ${DISKS} disks: failover as one operation ${parallelMs.toFixed(0)} ms (failback ${failbackMs.toFixed(0)} ms), ` +
      `one volume after another ${sequentialMs.toFixed(0)} ms (sequential / parallel ${(sequentialMs / parallelMs).toFixed(2)})`,
  );
  s.sim.sim.state.vms.get(s.targetVmId)!.state = 'Running';
});

test('one abort sends the whole VM back: volumes in flight compensate, finished ones are failed back', async () => {
  const vols = await vmOnAppliance('vmabort');
  // Hold one volume's CloudStack attach to the target until the abort, so the VM is mid-way.
  const held = vols[DISKS - 1]!;
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  s.sim.sim.beforeCommand = async (cmd, params) => {
    if (cmd === 'attachVolume' && params.id === held && params.virtualmachineid === s.targetVmId) await gate;
  };
  try {
    const op = await s.volumes.vm({
      ...base(),
      type: 'failover',
      targetVmId: s.targetVmId,
      volumes: vols.map((volumeId) => ({ volumeId })),
    });
    // Wait until the others are done and the held one is in flight.
    for (const deadline = Date.now() + 60_000; ;) {
      const p = await op.progress();
      const states = vols.map((v) => p.volumes[v]?.state);
      if (
        states.filter((x) => x === 'completed').length === DISKS - 1 &&
        p.volumes[held]?.state === 'running'
      )
        break;
      assert.ok(Date.now() < deadline, `progress: ${JSON.stringify(p)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    await op.abort();
    // CloudStack answers the held attach only once the abort has reached that volume's saga, so
    // the saga sees the cancel with its attach in flight (otherwise its last step may finish first).
    await untilCancelRequested(s.temporal.workflow.getHandle(`volume:${held}`), {
      processed: false,
      timeoutMs: 60_000,
      what: 'the abort never reached the held volume',
    });
    release();
    await assert.rejects(op.result(), (e: unknown) => e instanceof WorkflowFailedError);
    const p = await op.progress();
    assert.equal(p.volumes[held]?.state, 'cancelled');
    assert.ok(
      vols.slice(0, -1).every((v) => p.volumes[v]?.state === 'undone'),
      JSON.stringify(p),
    );
  } finally {
    release();
    delete s.sim.sim.beforeCommand;
  }
  assert.deepEqual(
    await where(vols),
    vols.map(() => [s.applianceVmId, 'appliance']),
    'the whole VM is back',
  );
});

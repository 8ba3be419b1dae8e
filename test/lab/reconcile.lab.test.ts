import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import { getMapping } from '../../src/db/mappings.js';
import type { DriftKind } from '../../src/reconcile/drift.js';
import { reconcileNow } from '../../src/reconcile/schedule.js';
import { GUEST_EXPORTS_DIR } from '../../harness/lab/stack.js';
import type { ReconcileResult } from '../../workflows/reconcile.js';
import { assertConsistent } from '../support/checks.js';
import { recordHistory } from '../support/histories.js';
import { startLabStack, type LabStack } from '../support/lab-stack.js';

/**
 * Drift created behind the sagas' backs on real components — the guest kernel's dm tables,
 * nbdkit's export directory, the simulator's CloudStack state, the database — and one
 * reconcile pass that repairs what is safe, reports the rest, and a second pass that finds
 * nothing once the drift is gone.
 */
let s: LabStack;
before(async () => (s = await startLabStack('recon')));
after(() => s?.close());

let disk = 0;
async function attached(): Promise<{
  volumeId: string;
  name: string;
  exportName: string;
  devicePath: string;
}> {
  const volumeId = await s.createVolume();
  const r = await (
    await s.volumes.attach({
      applianceVmId: s.applianceVmId,
      volumeId,
      sourceVmName: 'recon',
      diskKey: 2000 + disk++,
    })
  ).result();
  return {
    volumeId,
    name: r.access!.persistentName,
    exportName: r.access!.exportName,
    devicePath: r.access!.devicePath,
  };
}

async function reconcile(dryRun = false, record?: string): Promise<ReconcileResult> {
  const run = await reconcileNow(s.temporal, {
    applianceVmId: s.applianceVmId,
    taskQueuePrefix: s.prefix,
    backend: 'nbdkit-dir',
    dryRun,
    correlationTimeoutMs: 10_000,
  });
  const r = await run.result();
  if (record) await recordHistory(s.temporal, run.workflowId, run.runId, record);
  return r;
}
const kinds = (r: ReconcileResult) => r.findings.map((f) => `${f.kind}:${f.outcome}`).sort();
const guest = (file: string, args: string[]) => s.lab.runner.run(file, args);

test('an appliance in sync has no findings', async () => {
  await attached();
  const r = await reconcile(false, 'reconcile-clean');
  assert.deepEqual(kinds(r), []);
});

test('device-level drift is repaired through per-volume repair workflows, then nothing is found', async () => {
  const a = await attached();
  const b = await attached();
  const c = await attached();
  await guest('dmsetup', ['remove', a.name]); // dm device gone
  await guest('dmsetup', ['reload', b.name, '--table', `0 ${2 ** 21} error`]); // error target though attached
  await guest('dmsetup', ['resume', b.name]);
  await guest('rm', ['-f', `${GUEST_EXPORTS_DIR}/${c.exportName}`]); // export config gone

  const dry = await reconcile(true);
  assert.deepEqual(kinds(dry), [
    'dm-error-while-attached:dry-run',
    'dm-missing:dry-run',
    'export-missing:dry-run',
  ]);
  assert.equal(await s.dmTable(a.name), null, 'dry run changes nothing');

  const r = await reconcile(false, 'reconcile-repair');
  assert.deepEqual(kinds(r), [
    'dm-error-while-attached:repaired',
    'dm-missing:repaired',
    'export-missing:repaired',
  ]);
  await assertConsistent(s, 'after repair');
  assert.deepEqual(kinds(await reconcile()), [], 'a second run finds nothing');
});

test('orphans: our idle dm device and an export with no row are removed; a foreign dm device is not touched', async () => {
  await guest('dmsetup', ['create', 'ghostdisk7', '--uuid', 'VOLLIFE-ghostdisk7', '--table', '0 8 zero']);
  await guest('dmsetup', ['create', 'foreignvg-datadisk1', '--table', '0 8 zero']);
  await guest('ln', ['-s', '/dev/mapper/ghostdisk7', `${GUEST_EXPORTS_DIR}/migration-vol-ghostdisk7`]);
  const r = await reconcile();
  assert.deepEqual(kinds(r), ['dm-orphan:removed', 'export-orphan:removed']);
  assert.equal(await s.dmTable('ghostdisk7'), null);
  assert.equal(await s.dmTable('foreignvg-datadisk1'), '0 8 zero');
  assert.deepEqual(kinds(await reconcile()), []);
  await guest('dmsetup', ['remove', 'foreignvg-datadisk1']);
});

test('a row from the old daemon without a persistent name is adopted: named, mapped, exported', async () => {
  const volumeId = await s.createVolume();
  await s.cs.attachVolume(volumeId, s.applianceVmId);
  const serial = volumeId.replace(/-/g, '').slice(0, 20);
  await s.db.pool.query(
    `INSERT INTO device_mappings (volume_id, source_vm_name, disk_index, appliance_vm_id, location, virtio_serial, size_bytes, dm_state)
     VALUES (?, 'legacyvm', 0, ?, 'appliance', ?, ?, 'absent')`,
    [volumeId, s.applianceVmId, serial, 2 ** 30],
  );
  const r = await reconcile(false, 'reconcile-adopt');
  assert.deepEqual(kinds(r), ['unnamed-volume:repaired']);
  const m = await getMapping(s.db.pool, volumeId);
  assert.equal(m?.persistentName, 'legacyvmdisk0');
  assert.equal(m?.dmState, 'linear');
  assert.ok((await s.servedExports()).includes('migration-vol-legacyvmdisk0'));
  await assertConsistent(s, 'after adoption');
  assert.deepEqual(kinds(await reconcile()), []);
});

test('reported, never repaired: a volume attached to an unknown VM; fixed by the operator, then nothing', async () => {
  const a = await attached();
  const tableBefore = await s.dmTable(a.name);
  const stranger = s.sim.sim.state.addVm({ name: 'stranger', zoneid: s.sim.zone.id });
  // Behind our back: off the appliance, onto another VM.
  await s.cs.detachVolume(a.volumeId);
  await s.cs.attachVolume(a.volumeId, stranger.id);
  const r = await reconcile();
  assert.deepEqual(kinds(r), ['cloudstack-unknown-vm:reported']);
  assert.match(r.findings[0]!.remedy, new RegExp(stranger.id));
  assert.equal(await s.dmTable(a.name), tableBefore, 'reported only: the dm device is untouched');
  // The operator's remedy: put it back where the database says it is.
  await s.cs.detachVolume(a.volumeId);
  await s.cs.attachVolume(a.volumeId, s.applianceVmId);
  const after = await reconcile();
  // Back on the appliance, possibly as another /dev/vdX: at most a dm reload to repair.
  assert.ok(
    kinds(after).every((k) => k === 'dm-wrong-device:repaired'),
    kinds(after).join(),
  );
  assert.deepEqual(kinds(await reconcile()), []);
});

test('a repair never runs beside a saga: the volume is reported busy and skipped', async () => {
  const a = await attached();
  await guest('dmsetup', ['remove', a.name]);
  // The detach saga is held inside CloudStack's detach (the hypervisor has not let the disk go)
  // until the reconcile pass is over: the volume's workflow id is taken the whole time.
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  s.hypervisorOverride.wrap = (inner) => ({
    attach: (x) => inner.attach(x),
    detach: async (x) => {
      if (x.volumeId === a.volumeId) await gate;
      return inner.detach(x);
    },
  });
  try {
    const h = await s.volumes.detach({
      applianceVmId: s.applianceVmId,
      volumeId: a.volumeId,
      operationId: randomUUID(),
    });
    for (;;) {
      const p = await h.progress().catch(() => undefined);
      if (p?.currentStep === 'cloudstack-detach') break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const r = await reconcile();
    const mine = r.findings.filter((f) => f.volumeId === a.volumeId);
    assert.ok(mine.length > 0, 'the drifted volume was found');
    assert.ok(
      mine.every((f) => f.outcome === 'busy' || f.decision === 'report'),
      JSON.stringify(mine),
    );
    assert.ok(
      mine.some((f) => f.outcome === 'busy'),
      JSON.stringify(mine),
    );
    release();
    await h.result();
  } finally {
    release();
    delete s.hypervisorOverride.wrap;
  }
  assert.deepEqual(kinds(await reconcile()), []);
});

test('every run is recorded with its findings', async () => {
  const [runs] = await s.db.pool.query('SELECT COUNT(*) AS n FROM reconcile_runs WHERE status = "completed"');
  assert.ok(Number((runs as { n: number }[])[0]!.n) >= 8);
  const [f] = await s.db.pool.query('SELECT DISTINCT kind FROM reconcile_findings ORDER BY kind');
  const recorded = (f as { kind: DriftKind }[]).map((x) => x.kind);
  for (const k of ['dm-missing', 'export-orphan', 'unnamed-volume', 'cloudstack-unknown-vm'] as DriftKind[]) {
    assert.ok(recorded.includes(k), `${k} recorded`);
  }
});

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import type { RowDataPacket } from 'mysql2/promise';
import { buildApi } from '../../src/api/server.js';
import { reconcileNow } from '../../src/reconcile/schedule.js';
import { getMapping } from '../../src/db/mappings.js';
import { listOperations } from '../../src/db/operations.js';
import { STEPS } from '../support/saga-steps.js';
import { engineExportNameOf, exportNameOf } from '../../src/domain/device-names.js';
import {
  engine,
  assertEngineRowsFollow,
  recordCreatedVolume,
  seedVm,
  type EngineVm,
} from '../support/engine-db.js';
import { OldContractClient, VolumeDaemonError } from '../support/old-contract-client.js';
import { startStandinStack, type StandinStack } from '../support/standin-stack.js';

/**
 * The migration engine's database beside ours (ENGINE_DB_NAME; its production schema's shape
 * with every foreign key, and the old daemon's triggers still on it): every engine flow, in the
 * engine's order, through /api/v1 as its client calls it. After each step the engine's own
 * queries (test/support/engine-db.ts) are run and their answers checked against our rows,
 * CloudStack (the simulator) and the NBD exports of the (stood-in) appliance. The VM has disks
 * with VMware keys 2000 and 2016, and the engine lists their exports in the other order.
 */
const NBD_PORT = 10998;
let s: StandinStack;
let app: FastifyInstance;
let client: OldContractClient;
let vm: EngineVm;
let testVmId: string;
const vols = new Map<number, string>(); // VMware disk key → volume id
const NAMES = new Map([
  [2000, 'pgdbdisk0'],
  [2016, 'pgdbdisk1'],
]);

before(async () => {
  s = await startStandinStack('enginedb', { engineDb: { oldTriggers: true } });
  app = await buildApi({
    volumes: s.volumes,
    db: s.db.pool,
    engine: s.engineDb!.rows,
    applianceVmId: s.applianceVmId,
    token: 'engine-db-token',
    listenHost: '127.0.0.1',
    nbdPort: NBD_PORT,
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  client = new OldContractClient(`http://127.0.0.1:${(app.server.address() as AddressInfo).port}`, {
    pollMs: 100,
  });
  vm = await seedVm(s.engineDb!.pool, 'pgdb', [2000, 2016]);
  testVmId = randomUUID();
  s.sim.sim.state.addVm({ name: 'pgdb-test', zoneid: s.sim.zone.id, id: testVmId });
  for (const id of [testVmId, s.targetVmId]) await stoppedWithoutRoot(id);
});

/** A VM the engine gives an OS disk to: stopped, its placeholder root disk taken off. */
async function stoppedWithoutRoot(vmId: string) {
  s.sim.sim.state.vms.get(vmId)!.state = 'Stopped';
  const root = (await s.cs.listVolumes({ virtualmachineid: vmId })).find((v) => v.deviceid === 0);
  if (root) await s.cs.detachVolume(root.id, { fromVmId: vmId });
}
after(async () => {
  await app?.close();
  await s?.close();
});

const edb = () => s.engineDb!.pool;
const done = async (p: Promise<{ id: string }>) => {
  const op = await client.waitForCompletion((await p).id, 60_000);
  assert.equal(op.status, 'completed', `${op.type}: ${op.error}`);
  return op;
};
const ossea = async (volumeId: string) =>
  (
    await edb().query<RowDataPacket[]>('SELECT device_path, status FROM ossea_volumes WHERE volume_id = ?', [
      volumeId,
    ])
  )[0][0];
const exportRow = async (volumeId: string) =>
  (await edb().query<RowDataPacket[]>('SELECT * FROM nbd_exports WHERE volume_id = ?', [volumeId]))[0];

/** After every step: the engine's rows follow ours, and ours agree with CloudStack and the appliance. */
async function consistent(label: string) {
  for (const [key, v] of vols) {
    await assertEngineRowsFollow(s.db.pool, s.engineDb!, v, `${label} (disk ${key})`);
    const m = await getMapping(s.db.pool, v);
    const where = s.sim.sim.state.liveVolumes().find((x) => x.id === v)?.vmId ?? null;
    const dm = (
      await edb().query<RowDataPacket[]>('SELECT * FROM device_mappings WHERE volume_uuid = ?', [v])
    )[0][0];
    if (dm) {
      assert.equal(
        dm.cloudstack_state,
        where ? 'attached' : 'detached',
        `${label}: CloudStack vs engine row`,
      );
      if (where) assert.equal(dm.vm_id, where, `${label}: the VM CloudStack has it on`);
    }
    if (m?.persistentName && (await exportRow(v)).length > 0) {
      // Both names on the appliance, one device: what replication opens by either name.
      const served = await s.servedExports();
      assert.ok(served.includes(exportNameOf(m.persistentName)), `${label}: persistent export served`);
      assert.ok(served.includes(engineExportNameOf(v)), `${label}: the engine's export name served`);
      const targets = (await s.appliances[0]!.exports.listConfigured())
        .filter(
          (e) => e.exportName === exportNameOf(m.persistentName!) || e.exportName === engineExportNameOf(v),
        )
        .map((e) => e.targetPath);
      assert.deepEqual(targets, [m.mapperPath, m.mapperPath], `${label}: both names, one dm device`);
    }
  }
}

describe('the engine flows, with its database beside ours', () => {
  test('provisioning: create (nothing in the engine tables yet), then attach to the appliance', async () => {
    for (const [unit, key] of [2000, 2016].entries()) {
      const name = `migration-pgdb-pgdb-disk-${unit}`;
      const created = await done(
        client.createVolume({
          name,
          size: 1024 ** 3,
          disk_offering_id: s.sim.offering.id,
          zone_id: s.sim.zone.id,
          metadata: {
            source_vm_name: 'pgdb',
            disk_unit_number: String(unit),
            created_by: 'migration-engine',
          },
        }),
      );
      const volumeId = String(created.response.volume_id);
      vols.set(key, volumeId);
      await consistent(`created ${key}`);
      assert.equal(
        await engine.devicePath(edb(), volumeId),
        'unknown',
        'the old daemon had no mapping either',
      );
      await recordCreatedVolume(edb(), vm, key, volumeId, name);

      const att = await done(client.attachVolume(volumeId, s.applianceVmId));
      const path = String(att.response.device_path);
      assert.equal(path, `/dev/mapper/${NAMES.get(key)}`);
      await engine.recordAttached(edb(), volumeId, path);
      await consistent(`attached ${key}`);
      assert.equal(await engine.devicePath(edb(), volumeId), path);
      assert.deepEqual({ ...(await ossea(volumeId)) }, { device_path: path, status: 'attached' });
      const e = await client.getNbdExport(volumeId);
      assert.equal(e.export_name, `migration-vol-${volumeId}`, 'the name the engine parses');
      assert.equal(e.metadata.persistent_export_name, exportNameOf(NAMES.get(key)!));
      const [dm] = (
        await edb().query<RowDataPacket[]>('SELECT * FROM device_mappings WHERE volume_uuid = ?', [volumeId])
      )[0];
      assert.equal(
        dm!.vm_context_id,
        vm.contextId,
        'the context, from ossea_volumes as the old daemon took it',
      );
      assert.equal(dm!.operation_mode, 'oma');
      assert.equal(dm!.cloudstack_device_id, unit + 1, "CloudStack's device id");
    }
  });

  test('the engine maps each export to its VMware disk, listed in the other order (keys 2016, 2000)', async () => {
    const listed = [2016, 2000].map((k) => vols.get(k)!);
    const names = await Promise.all(listed.map(async (v) => (await client.getNbdExport(v)).export_name));
    assert.equal(await engine.correlateExports(edb(), vm.contextId, names), 2);
    assert.deepEqual(await engine.diskKeys(edb(), names), ['2016', '2000']);
    assert.deepEqual(await engine.uncorrelated(edb(), vm.contextId), []);
    // What the persistent names alone would have led to: the list-position fallback, wrong for both.
    const persistent = [2016, 2000].map((k) => exportNameOf(NAMES.get(k)!));
    assert.deepEqual(await engine.diskKeys(edb(), persistent), ['2000', '2001']);
  });

  test('snapshot tracking: unknown volumes refused; a second context moves the volume and says so', async () => {
    for (const v of vols.values()) await engine.recordSnapshot(edb(), v, `snap-${v.slice(0, 8)}`);
    for (const v of vols.values()) {
      const r = await client.request('POST', '/api/v1/snapshots/track', {
        volume_uuid: v,
        vm_context_id: vm.contextId,
        snapshot_id: `snap-${v.slice(0, 8)}`,
      });
      assert.equal(r.status, 201, r.body);
    }
    const snaps = await engine.snapshots(edb(), vm.contextId);
    assert.deepEqual(snaps.map((x) => [x.device_path, x.operation_mode]).sort(), [
      ['/dev/mapper/pgdbdisk0', 'oma'],
      ['/dev/mapper/pgdbdisk1', 'oma'],
    ]);
    const unknown = await client.request('POST', '/api/v1/snapshots/track', {
      volume_uuid: randomUUID(),
      vm_context_id: vm.contextId,
      snapshot_id: 'snap-x',
    });
    assert.equal(unknown.status, 404, unknown.body);
    assert.match(unknown.body, /volume_uuid/);
    const noContext = await client.request('POST', '/api/v1/snapshots/track', {
      volume_uuid: vols.get(2000),
      vm_context_id: 'no-such-context',
      snapshot_id: 'snap-x',
    });
    assert.equal(noContext.status, 400, noContext.body);
    assert.match(noContext.body, /vm_context_id/);

    const other = await seedVm(edb(), 'otherdb', []);
    const moved = await client.request('POST', '/api/v1/snapshots/track', {
      volume_uuid: vols.get(2016),
      vm_context_id: other.contextId,
      snapshot_id: 'snap-moved',
    });
    assert.equal(moved.status, 201, moved.body);
    assert.equal(JSON.parse(moved.body).moved_from_vm_context_id, vm.contextId);
    const first = JSON.parse(
      (await client.request('GET', `/api/v1/snapshots/vm/${vm.contextId}`, undefined)).body,
    );
    assert.deepEqual(
      first.snapshots.map((x: { volume_uuid: string }) => x.volume_uuid),
      [vols.get(2000)],
      'the other volume stays',
    );
    // Back where it belongs, for the flows below.
    const back = await client.request('POST', '/api/v1/snapshots/track', {
      volume_uuid: vols.get(2016),
      vm_context_id: vm.contextId,
      snapshot_id: `snap-${vols.get(2016)!.slice(0, 8)}`,
    });
    assert.equal(JSON.parse(back.body).moved_from_vm_context_id, other.contextId);
    await consistent('snapshots tracked');
  });

  test('test failover: the OS disk detached, then attached as the test VM root; the data disk after it', async () => {
    const os = vols.get(2000)!;
    const data = vols.get(2016)!;
    await done(client.detachVolume(os));
    await consistent('OS disk detached');
    assert.equal(await engine.devicePath(edb(), os), `detached-vol-${os}`);
    assert.equal((await ossea(os))!.status, 'detached');
    await done(client.attachVolumeAsRoot(os, testVmId));
    await consistent('OS disk on the test VM');
    assert.equal(await engine.devicePath(edb(), os), `remote-vm-root-${testVmId}-vol-${os}`);
    await done(client.detachVolume(data));
    await done(client.attachVolume(data, testVmId));
    await consistent('data disk on the test VM');
    assert.equal(await engine.devicePath(edb(), data), `remote-vm-${testVmId}-vol-${data}`);
    assert.equal(await engine.setOperationMode(edb(), vm.contextId, 'failover'), 2);
    // Export rows live on while the volumes are away, and keep the engine's VM disks.
    for (const [key, v] of vols) {
      const [row] = await exportRow(v);
      assert.equal(row!.vm_disk_id, vm.diskIds.get(key), `disk ${key} keeps its vm_disk_id`);
    }
  });

  test('cleanup/test-failover refuses a VM the volume was never given to', async () => {
    const stranger = randomUUID();
    s.sim.sim.state.addVm({ name: 'stranger', zoneid: s.sim.zone.id, id: stranger });
    await assert.rejects(
      client.cleanupTestFailover(stranger, vols.get(2000)!, s.applianceVmId, false),
      (e: unknown) => e instanceof VolumeDaemonError && e.status === 409 && /test_vm_id/.test(e.body),
    );
  });

  test('test-failover rollback: off the test VM, back onto the appliance under the same names', async () => {
    for (const v of (await client.listVolumes(testVmId)).map((x) => x.volume_id)) {
      await done(client.detachVolume(v));
      await consistent(`rollback: ${v} detached`);
    }
    for (const [key, v] of vols) {
      const att = await done(client.attachVolume(v, s.applianceVmId));
      assert.equal(att.response.device_path, `/dev/mapper/${NAMES.get(key)}`);
      assert.equal(att.response.export_name, `migration-vol-${v}`);
      await consistent(`rollback: ${key} back`);
    }
    // Ours never write operation_mode after the row's first write: still the engine's "failover".
    const [modes] = await edb().query<RowDataPacket[]>(
      'SELECT operation_mode FROM device_mappings WHERE vm_context_id = ?',
      [vm.contextId],
    );
    assert.deepEqual(
      modes.map((r) => r.operation_mode),
      ['failover', 'failover'],
    );
    await engine.setOperationMode(edb(), vm.contextId, 'oma');
    const names = await Promise.all(
      [2016, 2000].map(async (k) => (await client.getNbdExport(vols.get(k)!)).export_name),
    );
    assert.deepEqual(await engine.diskKeys(edb(), names), ['2016', '2000']);
    assert.deepEqual(
      await engine.uncorrelated(edb(), vm.contextId),
      [],
      'vm_disk_id survived the round trip',
    );
  });

  test('what the engine wrote in ossea_volumes stays until the volume moves again', async () => {
    const v = vols.get(2016)!;
    await edb().query("UPDATE ossea_volumes SET device_path = 'engine-says' WHERE volume_id = ?", [v]);
    // A write of ours that does not move the volume (an attach of a volume already here).
    await done(client.attachVolume(v, s.applianceVmId));
    assert.equal((await ossea(v))!.device_path, 'engine-says');
    await consistent('attach again');
  });

  test('live failover to the destination VM, then failback', async () => {
    const os = vols.get(2000)!;
    await done(client.detachVolume(os));
    await done(client.attachVolumeAsRoot(os, s.targetVmId));
    await consistent('live failover');
    await done(client.attachVolume(os, s.applianceVmId)); // on our row's target: the failback saga
    await consistent('failback');
    assert.equal((await exportRow(os))[0]!.vm_disk_id, vm.diskIds.get(2000));
  });

  test("reconciliation finds each way the engine's rows can be wrong and repairs them through the sagas' step", async () => {
    const [a, b] = [vols.get(2000)!, vols.get(2016)!];
    const stranger = randomUUID();
    await edb().query('DELETE FROM device_mappings WHERE volume_uuid = ?', [a]); // cascades its export row
    await edb().query("UPDATE nbd_exports SET device_path = '/dev/vdq', port = 1 WHERE volume_id = ?", [b]);
    await edb().query(
      "UPDATE device_mappings SET vm_id = 'someone-else', operation_mode = 'failover' WHERE volume_uuid = ?",
      [b],
    );
    await edb().query(
      `INSERT INTO nbd_exports (volume_id, export_name, port, device_path, status) VALUES
         (?, 'migration-vol-pgdbdisk1', 10809, '/dev/mapper/pgdbdisk1', 'active'),
         (?, ?, 10809, '/dev/vdz', 'active')`,
      [b, stranger, `migration-vol-${stranger}`],
    );
    const r = await (
      await reconcileNow(s.temporal, {
        applianceVmId: s.applianceVmId,
        taskQueuePrefix: s.prefix,
        backend: 'nbdkit-dir',
        dryRun: false,
        correlationTimeoutMs: 20_000,
      })
    ).result();
    const found = r.findings
      .filter((f) => f.kind.startsWith('engine-')) // the stand-in appliance runs no NBD server
      .map((f) => `${f.kind} ${f.decision} ${f.outcome}`)
      .sort();
    assert.deepEqual(found, [
      'engine-export-missing repair repaired', // the cascade took it with the mapping row
      'engine-export-orphan repair repaired',
      'engine-export-stale repair repaired',
      'engine-kept report reported',
      'engine-mapping-missing repair repaired',
      'engine-mapping-stale repair repaired',
      'engine-row-orphan report reported',
    ]);
    assert.equal(r.findings.find((f) => f.kind === 'engine-row-orphan')?.subject, stranger);
    await consistent('after reconciliation');
    const [mode] = (
      await edb().query<RowDataPacket[]>('SELECT operation_mode FROM device_mappings WHERE volume_uuid = ?', [
        b,
      ])
    )[0];
    assert.equal(mode!.operation_mode, 'failover', "the engine's own write is kept");
    // The repaired row of the first volume lost the engine's vm_disk_id with the cascade: the
    // engine's own repair (uncorrelated exports of its context) finds it again.
    assert.deepEqual(await engine.uncorrelated(edb(), vm.contextId), [`migration-vol-${a}`]);
    await engine.correlateExports(edb(), vm.contextId, [`migration-vol-${a}`]);
    await edb().query("UPDATE device_mappings SET operation_mode = 'oma' WHERE volume_uuid = ?", [b]);
    await edb().query('DELETE FROM nbd_exports WHERE volume_id = ?', [stranger]);
  });

  test('job deletion: DeleteVolume each; the engine rows go, its own tables stay', async () => {
    for (const [key, v] of vols) {
      await done(client.deleteVolume(v));
      await consistent(`deleted ${key}`);
      assert.equal(await engine.devicePath(edb(), v), 'unknown');
      assert.deepEqual({ ...(await ossea(v)) }, { device_path: null, status: 'detached' });
    }
    const [disks] = await edb().query<RowDataPacket[]>(
      'SELECT COUNT(*) AS n FROM vm_disks WHERE vm_context_id = ?',
      [vm.contextId],
    );
    assert.equal(Number(disks[0]!.n), 2);
    vols.clear();
  });
});

/**
 * A permanent fault right after each step of ours that writes our rows (the write, and the
 * engine's rows with it, committed; then the step fails for good): the saga compensates, and the
 * engine's rows are again exactly what they were before it started — zero residue — and still
 * follow ours.
 */
describe("a permanent fault after each writing step leaves the engine's rows as they were", () => {
  const WRITES = new Set([
    'dbAssignName',
    'dbClearStaleDevicePath',
    'dbUpdateMapping',
    'dbUpsertExport',
    'dbDeleteExport',
  ]);
  let n = 0;
  /** The engine's rows of a volume, without the times every write refreshes. */
  const engineRowsOf = async (v: string) => {
    const strip = (r: RowDataPacket) => {
      const { last_sync: _l, updated_at: _u, created_at: _c, id: _i, ...rest } = r;
      return rest;
    };
    const [dm] = await edb().query<RowDataPacket[]>('SELECT * FROM device_mappings WHERE volume_uuid = ?', [
      v,
    ]);
    const [ne] = await edb().query<RowDataPacket[]>('SELECT * FROM nbd_exports WHERE volume_id = ?', [v]);
    // ossea_volumes: where the volume is. An undone first attach leaves "detached" where the
    // engine wrote "creating": both say not attached, and "detached" is what the old daemon's
    // detach wrote (docs/engine-contract.md).
    const o = await ossea(v);
    return {
      mappings: dm.map(strip),
      exports: ne.map(strip),
      ossea: { device_path: o?.device_path ?? null, attached: o?.status === 'attached' },
    };
  };
  for (const saga of ['attach', 'detach', 'failover', 'failback', 'delete'] as const) {
    for (const [step, activityType] of STEPS[saga].filter(([, a]) => WRITES.has(a))) {
      test(`${saga}: fail after "${step}" wrote`, async () => {
        const volumeId = await s.createVolume();
        const key = 2000 + n++;
        await edb().query(
          "INSERT INTO ossea_volumes (vm_context_id, volume_id, volume_name, size_gb, status) VALUES (?, ?, ?, 1, 'creating')",
          [vm.contextId, volumeId, `migration-faultdb-faultdb-disk-${key}`],
        );
        const base = { applianceVmId: s.applianceVmId, volumeId };
        const attach = { ...base, sourceVmName: 'faultdb', diskKey: key };
        if (saga !== 'attach') await (await s.volumes.attach(attach)).result();
        if (saga === 'failback')
          await (await s.volumes.failover({ ...base, targetVmId: s.targetVmId })).result();
        const before = await engineRowsOf(volumeId);
        await s.failpoints.arm({
          id: `fault-${saga}-${step}-${n}`,
          workflowId: `volume:${volumeId}`,
          activityType,
          action: 'fail-after',
        });
        const h = await {
          attach: () => s.volumes.attach(attach),
          detach: () => s.volumes.detach(base),
          failover: () => s.volumes.failover({ ...base, targetVmId: s.targetVmId }),
          failback: () => s.volumes.failback(base),
          delete: () => s.volumes.delete(base),
        }[saga]();
        await assert.rejects(h.result());
        const [row] = await listOperations(s.db.pool, { operationId: h.operationId });
        assert.equal(row?.status, 'compensated', `${row?.status}: ${row?.error}`);
        assert.deepEqual(await engineRowsOf(volumeId), before, 'the engine rows as before the saga');
        await assertEngineRowsFollow(s.db.pool, s.engineDb!, volumeId, `${saga} undone after ${step}`);
      });
    }
  }
});

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { buildApi, type ApiDeps } from '../../src/api/server.js';
import { oldStatus, toOldOperation } from '../../src/engine-contract/v1/operation.js';
import { getMapping } from '../../src/db/mappings.js';
import { listOperations, type OperationRow } from '../../src/db/operations.js';
import {
  OldContractClient,
  OperationFailedError,
  VolumeDaemonError,
  type VolumeOperation,
} from '../support/old-contract-client.js';
import { startStandinStack, type StandinStack } from '../support/standin-stack.js';

/**
 * The migration engine's view: /api/v1 driven through a client written to the old daemon's
 * contract exactly as the engine's Go client behaves (test/support/old-contract-client.ts: no
 * headers, only 201 for mutations, Go's decoding of every field), over the real stack —
 * Temporal, MariaDB, the CloudStack simulator, the workers — with the appliance's kernel stood
 * in. Each flow is one the engine runs; each step checks the answer and the end state (rows,
 * CloudStack, dm table, exports).
 */
const TOKEN = 'engine-contract-token';
/** Not the default 10809, so the `port` assertion can tell configuration from a constant. */
const NBD_PORT = 10999;
/** A second appliance at the site (APPLIANCE_VM_IDS). */
const OTHER_APPLIANCE = randomUUID();
const VERSION = (
  JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
).version;

let s: StandinStack;
let app: FastifyInstance;
let engine: OldContractClient;
let healthy = true;

const deps = (over: Partial<ApiDeps> = {}): ApiDeps => ({
  volumes: s.volumes,
  db: s.db.pool,
  applianceVmId: s.applianceVmId,
  applianceVmIds: [OTHER_APPLIANCE],
  token: TOKEN,
  listenHost: '127.0.0.1',
  nbdPort: NBD_PORT,
  health: {
    cloudstack: async () => {
      if (!healthy) throw new Error('CloudStack unreachable');
    },
  },
  ...over,
});

async function listen(a: FastifyInstance, host: string): Promise<string> {
  await a.listen({ host, port: 0 });
  return `http://127.0.0.1:${(a.server.address() as AddressInfo).port}`;
}

before(async () => {
  s = await startStandinStack('contract');
  app = await buildApi(deps());
  engine = new OldContractClient(await listen(app, '127.0.0.1'), { pollMs: 100 });
});
after(async () => {
  await app?.close();
  await s?.close();
});

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;
const liveVolume = (id: string) => s.sim.sim.state.liveVolumes().find((v) => v.id === id);
const sagaOf = async (op: VolumeOperation) =>
  (await listOperations(s.db.pool, { operationId: op.id }))[0]?.type;

/** A mutation's 201: accepted, not finished; the old shape's fields with their values. */
function assertAccepted(op: VolumeOperation, want: { type: string; volumeId: string; vmId: string | null }) {
  assert.ok(['pending', 'executing'].includes(op.status), `accepted status ${op.status}`);
  assert.equal(op.type, want.type);
  assert.equal(op.volume_id, want.volumeId);
  assert.equal(op.vm_id, want.vmId);
  assert.equal(op.error, '');
  assert.equal(op.completed_at, null);
  assert.match(op.created_at, ISO);
  assert.match(op.id, /^[0-9a-f-]{36}$/);
}

describe('the engine flows, through the old contract', () => {
  let vol: string;
  const NAME = 'pgtest3disk0';
  const MAPPER = `/dev/mapper/${NAME}`;
  const EXPORT = `migration-vol-${NAME}`;
  /** The name /api/v1 reports: the one the engine parses the volume id from (same device). */
  const engineExport = () => `migration-vol-${vol}`;
  const bothNames = () => [EXPORT, engineExport()].sort();
  let exportId: string;

  test('GET /health at the root answers 200 {status: "healthy", version}', async () => {
    await engine.healthCheck();
    const r = await engine.request('GET', '/health', undefined);
    assert.equal(r.status, 200);
    const body = JSON.parse(r.body) as Record<string, unknown>;
    assert.equal(body.status, 'healthy');
    assert.equal(body.version, VERSION);
    healthy = false;
    try {
      await assert.rejects(
        engine.healthCheck(),
        (e: unknown) => e instanceof VolumeDaemonError && e.status === 503,
      );
    } finally {
      healthy = true;
    }
  });

  test('provisioning: attach to the appliance with the persistent-naming request; device_path is the mapper path', async () => {
    vol = await s.createVolume(1);
    const op = await engine.attachVolumeWithContext(vol, {
      vm_id: s.applianceVmId,
      vm_name: 'pgtest3',
      disk_id: 'disk-2000',
      request_persistent_name: true,
    });
    assertAccepted(op, { type: 'attach', volumeId: vol, vmId: s.applianceVmId });

    // While it runs, another operation on the volume is refused with the old error shape.
    const busy = await engine.detachVolume(vol).then(
      () => assert.fail('a second operation on a busy volume was accepted'),
      (e: unknown) => e,
    );
    assert.ok(busy instanceof VolumeDaemonError, String(busy));
    assert.equal(busy.status, 409);
    assert.equal(busy.decoded?.code, 'volume_busy');
    assert.match(busy.decoded!.error, new RegExp(op.id));

    const done = await engine.waitForCompletion(op.id, 60_000);
    assert.equal(done.status, 'completed');
    assert.equal(done.response.device_path, MAPPER, 'the stable path, never /dev/vdX');
    assert.equal(done.response.volume_id, vol);
    assert.equal(done.response.export_name, engineExport());
    assert.equal(done.response.persistent_export_name, EXPORT);
    assert.equal(done.response.persistent_device_name, NAME);
    assert.match(done.completed_at ?? '', ISO);
    assert.equal(await sagaOf(done), 'attach');

    const m = await getMapping(s.db.pool, vol);
    assert.equal(m?.location, 'appliance');
    assert.equal(m?.persistentName, NAME);
    assert.equal(m?.dmState, 'linear');
    assert.equal(liveVolume(vol)?.vmId, s.applianceVmId, 'CloudStack: on the appliance');
    assert.match((await s.dmTable(NAME)) ?? '', / linear /);
    assert.deepEqual(await s.servedExports(), bothNames());
  });

  test('provisioning: GET /exports/:id gives export_name, numeric port, device_path, status', async () => {
    const e = await engine.getNbdExport(vol);
    assert.equal(e.export_name, engineExport());
    assert.equal(e.metadata.persistent_export_name, EXPORT);
    assert.equal(e.port, NBD_PORT);
    assert.equal(typeof e.port, 'number');
    assert.equal(e.device_path, MAPPER);
    assert.equal(e.status, 'active');
    assert.equal(e.volume_id, vol);
    assert.equal(e.metadata.persistent_device_name, NAME);
    assert.match(e.id, /^\d+$/);
    exportId = e.id;
    const all = await engine.listNbdExports();
    assert.deepEqual(
      all.map((x) => [x.volume_id, x.export_name, x.port]),
      [[vol, engineExport(), NBD_PORT]],
    );
    const raw = await engine.request('GET', '/api/v1/exports', undefined);
    assert.ok(Array.isArray(JSON.parse(raw.body)), 'a bare array');
  });

  test('reused volumes: GET /volumes/:id/device and GET /vms/:appliance/volumes (a bare array)', async () => {
    const d = await engine.getVolumeDevice(vol);
    assert.equal(d.volume_id, vol);
    assert.equal(d.vm_id, s.applianceVmId);
    assert.equal(d.device_path, MAPPER);
    assert.equal(d.cloudstack_state, 'attached');
    assert.equal(d.linux_state, 'detected');
    assert.equal(d.size, liveVolume(vol)?.size);
    assert.equal(d.size, 1024 ** 3);
    assert.match(d.last_sync, ISO);

    const raw = await engine.request('GET', `/api/v1/vms/${s.applianceVmId}/volumes`, undefined);
    assert.equal(raw.status, 200);
    assert.ok(Array.isArray(JSON.parse(raw.body)), `a bare array: ${raw.body.slice(0, 80)}`);
    const list = await engine.listVolumes(s.applianceVmId);
    assert.deepEqual(
      list.map((v) => [v.volume_id, v.vm_id, v.device_path]),
      [[vol, s.applianceVmId, MAPPER]],
    );
    assert.match(list[0]!.attached_at, ISO);

    const none = await engine.request('GET', `/api/v1/vms/${s.targetVmId}/volumes`, undefined);
    assert.equal(none.status, 404, 'a VM with no volumes is 404, as the old daemon said');
    assert.equal(typeof (JSON.parse(none.body) as { error: unknown }).error, 'string');
    assert.deepEqual(await engine.listVolumes(s.targetVmId), []);
  });

  test('failover: detach from the appliance (no body, no Content-Type), then attach to the destination VM', async () => {
    const det = await engine.detachVolume(vol);
    assertAccepted(det, { type: 'detach', volumeId: vol, vmId: s.applianceVmId });
    assert.equal((await engine.waitForCompletion(det.id, 60_000)).status, 'completed');
    assert.equal((await getMapping(s.db.pool, vol))?.location, 'detached');
    assert.equal(liveVolume(vol)?.vmId, undefined, 'CloudStack: detached');
    // Detached: no device mapping, as the old daemon (which deleted the row) answered.
    await assert.rejects(
      engine.getVolumeDevice(vol),
      (e: unknown) => e instanceof VolumeDaemonError && e.status === 404,
    );

    const give = await engine.attachVolume(vol, s.targetVmId);
    assertAccepted(give, { type: 'attach', volumeId: vol, vmId: s.targetVmId });
    const done = await engine.waitForCompletion(give.id, 60_000);
    assert.equal(await sagaOf(done), 'failover', 'a VM that is not an appliance gets the volume');
    assert.equal(done.response.location, 'target');
    assert.equal(done.response.device_path, undefined, 'no local device on the destination VM');

    const m = await getMapping(s.db.pool, vol);
    assert.equal(m?.location, 'target');
    assert.equal(m?.targetVmId, s.targetVmId);
    assert.equal(liveVolume(vol)?.vmId, s.targetVmId, 'CloudStack: on the destination VM');
    assert.match((await s.dmTable(NAME)) ?? '', / error$/);
    const onTarget = await engine.listVolumes(s.targetVmId);
    assert.deepEqual(
      onTarget.map((v) => [v.volume_id, v.vm_id, v.device_path]),
      [[vol, s.targetVmId, `remote-vm-${s.targetVmId}-vol-${vol}`]],
    );
    assert.deepEqual(await engine.listVolumes(s.applianceVmId), []);
    const d = await engine.getVolumeDevice(vol);
    assert.equal(d.vm_id, s.targetVmId);
  });

  test('rollback: attach back to the appliance is a failback with the same export name', async () => {
    const back = await engine.attachVolume(vol, s.applianceVmId);
    assertAccepted(back, { type: 'attach', volumeId: vol, vmId: s.applianceVmId });
    const done = await engine.waitForCompletion(back.id, 60_000);
    assert.equal(await sagaOf(done), 'failback');
    assert.equal(done.response.device_path, MAPPER);
    assert.equal(done.response.export_name, engineExport());
    const e = await engine.getNbdExport(vol);
    assert.equal(e.export_name, engineExport());
    assert.equal(e.id, exportId, 'the same export, not a new one');
    const m = await getMapping(s.db.pool, vol);
    assert.equal(m?.location, 'appliance');
    assert.equal(m?.dmState, 'linear');
    assert.equal(liveVolume(vol)?.vmId, s.applianceVmId);
    assert.match((await s.dmTable(NAME)) ?? '', / linear /);
    assert.deepEqual(await s.servedExports(), bothNames());
  });

  test('job deletion: DELETE /volumes/:id (no body) deletes it everywhere; the operation stays readable', async () => {
    const del = await engine.deleteVolume(vol);
    assertAccepted(del, { type: 'delete', volumeId: vol, vmId: null });
    const done = await engine.waitForCompletion(del.id, 60_000);
    assert.equal(done.status, 'completed');
    assert.equal(await getMapping(s.db.pool, vol), undefined, 'row removed');
    assert.equal(liveVolume(vol), undefined, 'CloudStack: deleted');
    assert.equal(await s.dmTable(NAME), null, 'dm device removed');
    assert.deepEqual(await s.servedExports(), []);
    await assert.rejects(
      engine.getNbdExport(vol),
      (e: unknown) => e instanceof VolumeDaemonError && e.status === 404,
    );
    assert.equal((await engine.getOperation(del.id)).status, 'completed', 'the audit trail stays');
  });
});

describe('the old contract, route by route', () => {
  test('attach with vm_id "" (Go\'s empty string) or none means the appliance; the name comes from the CloudStack volume name', async () => {
    // The engine names volumes migration-<vm>-<vm>-disk-<unit> and sends AttachVolume {vm_id}.
    const v = await s.cs.createVolume({
      name: 'migration-pgtest4-pgtest4-disk-1',
      sizeGb: 1,
      diskOfferingId: s.sim.offering.id,
      zoneId: s.sim.zone.id,
    });
    const op = await engine.attachVolume(v.id, '');
    assertAccepted(op, { type: 'attach', volumeId: v.id, vmId: s.applianceVmId });
    const done = await engine.waitForCompletion(op.id, 60_000);
    assert.equal(done.response.device_path, '/dev/mapper/pgtest4disk1');
    assert.equal(liveVolume(v.id)?.vmId, s.applianceVmId);
    assert.equal(
      (await engine.waitForCompletion((await engine.deleteVolume(v.id)).id, 60_000)).status,
      'completed',
    );
  });

  test('which VM ids are appliances is configuration: another configured appliance is an attach, any other id a failover', async () => {
    for (const [vmId, saga] of [
      [OTHER_APPLIANCE, 'attach'],
      [randomUUID(), 'failover'],
    ] as const) {
      const v = await s.createVolume(1);
      const r = await engine.request('POST', `/api/v1/volumes/${v}/attach`, {
        vm_id: vmId,
        vm_name: 'cfgvm',
        disk_id: 'disk-2001',
      });
      assert.equal(r.status, 201, r.body);
      const op = JSON.parse(r.body) as { saga: string; vm_id: string; id: string };
      assert.equal(op.saga, saga, vmId);
      assert.equal(op.vm_id, vmId);
      const d = await s.temporal.workflow.getHandle(`volume:${v}`).describe();
      assert.equal(d.type, saga === 'attach' ? 'attachVolume' : 'failoverVolume');
      // Nothing serves the other appliance's host queue here: stop the operation now.
      await s.temporal.workflow
        .getHandle(`volume:${v}`)
        .terminate('test done')
        .catch(() => {});
    }
  });

  test('an unknown volume: detach is accepted (201) and ends "failed" with the reason', async () => {
    const unknown = randomUUID();
    // Some clients send Content-Type: application/json with an empty body: that is no body.
    const r = await app.inject({
      method: 'POST',
      url: `/api/v1/volumes/${unknown}/detach`,
      headers: { 'content-type': 'application/json' },
      payload: '',
    });
    assert.equal(r.statusCode, 201, r.body);
    const id = (r.json() as { id: string }).id;
    const failed = await engine.waitForCompletion(id, 60_000).then(
      () => assert.fail('detach of an unknown volume completed'),
      (e: unknown) => e,
    );
    assert.ok(failed instanceof OperationFailedError, String(failed));
    assert.equal(failed.operation.status, 'failed');
    assert.match(failed.operation.error, new RegExp(unknown));
  });

  test('GET /operations/:id: 404 unknown, 400 not a UUID, errors as {"error": "<text>"}', async () => {
    for (const [id, status] of [
      [randomUUID(), 404],
      ['not-a-uuid', 400],
    ] as const) {
      const r = await engine.request('GET', `/api/v1/operations/${id}`, undefined);
      assert.equal(r.status, status);
      const body = JSON.parse(r.body) as { error: unknown; code: unknown };
      assert.equal(typeof body.error, 'string', r.body);
      assert.equal(typeof body.code, 'string');
    }
    await assert.rejects(
      engine.getOperation(randomUUID()),
      (e: unknown) => e instanceof VolumeDaemonError && e.status === 404,
    );
  });

  test('routes not served answer 501 {"error": what is missing and what to do}; nothing starts', async () => {
    const before = (await listOperations(s.db.pool, { limit: 1000 })).length;
    for (const [method, path] of [
      ['POST', '/api/v1/exports'],
      ['GET', '/api/v1/operations'],
    ] as const) {
      const r = await engine.request(method, path, method === 'POST' ? {} : undefined);
      assert.equal(r.status, 501, `${method} ${path}`);
      assert.match((JSON.parse(r.body) as { error: string }).error, /is not supported yet: .+/);
    }
    // A create is validated before anything starts: a bad size is never accepted.
    const bad = await engine.request('POST', '/api/v1/volumes', {
      name: 'x',
      size: -1,
      disk_offering_id: 'o',
      zone_id: 'z',
    });
    assert.equal(bad.status, 400);
    assert.match((JSON.parse(bad.body) as { error: string }).error, /size: /);
    assert.equal((await listOperations(s.db.pool, { limit: 1000 })).length, before, 'no operation started');
  });
});

/**
 * The rest of the engine's flows as it runs them for a VM with an OS disk (disk-2000) and a data
 * disk: provisioning by CreateVolume (the name is born there) and AttachVolume {vm_id} only;
 * failover with the OS disk by AttachVolumeAsRoot to the stopped destination and the data disk
 * by AttachVolume to it; test-failover rollback with snapshot tracking and CleanupTestFailover;
 * failed-execution clean-up; job deletion.
 */
describe('the engine flows for a whole VM: create, root-disk failover, rollback, clean-up, deletion', () => {
  const VM = 'webvm';
  const vols: { os?: string; data?: string } = {};
  const GiB = 1024 ** 3;
  const dest = () => s.targetVmId;
  const exportNames = new Map<string, string>();

  test('provisioning: CreateVolume names the volume from its metadata; AttachVolume {vm_id} alone maps it', async () => {
    for (const [unit, key] of [
      [0, 'os'],
      [1, 'data'],
    ] as const) {
      const op = await engine.createVolume({
        name: `migration-${VM}-${VM}-disk-${unit}`,
        size: 10 * GiB + 5 * GiB, // capacity + 5 GiB, as the engine asks
        disk_offering_id: s.sim.offering.id,
        zone_id: s.sim.zone.id,
        metadata: {
          migration_job_id: 'job-1',
          source_vm_name: VM,
          source_vm_path: `/dc/vm/${VM}`,
          disk_unit_number: String(unit),
          vmware_capacity_bytes: String(10 * GiB),
          created_by: 'engine',
        },
      });
      assert.equal(op.type, 'create');
      assert.equal(op.volume_id, '', 'no volume id before CloudStack gives one');
      const done = await engine.waitForCompletion(op.id, 60_000);
      assert.equal(done.status, 'completed');
      const volumeId = String(done.response.volume_id);
      assert.match(volumeId, /^[0-9a-f-]{36}$/);
      assert.equal(done.volume_id, volumeId);
      assert.equal(liveVolume(volumeId)?.size, 15 * GiB);
      assert.equal(
        (await getMapping(s.db.pool, volumeId))?.persistentName,
        `${VM}disk${unit}`,
        'born at create',
      );
      vols[key] = volumeId;
    }
    for (const v of [vols.os!, vols.data!]) {
      const op = await engine.attachVolume(v, s.applianceVmId);
      const done = await engine.waitForCompletion(op.id, 60_000);
      assert.equal(done.status, 'completed', done.error);
      const name = (await getMapping(s.db.pool, v))!.persistentName!;
      assert.equal(done.response.device_path, `/dev/mapper/${name}`);
      const e = await engine.getNbdExport(v);
      assert.equal(e.export_name, `migration-vol-${v}`);
      assert.equal(e.metadata.persistent_export_name, `migration-vol-${name}`);
      assert.equal(e.port, NBD_PORT);
      exportNames.set(v, e.export_name);
    }
  });

  test('failover: the OS disk as root of the stopped destination (AttachVolumeAsRoot), the data disk by AttachVolume', async () => {
    const vm = s.sim.sim.state.vms.get(dest())!;
    vm.state = 'Stopped';
    const placeholder = (await s.cs.listVolumes({ virtualmachineid: dest() })).find((v) => v.deviceid === 0);
    if (placeholder) await s.cs.detachVolume(placeholder.id, { fromVmId: dest() });
    for (const v of [vols.os!, vols.data!]) {
      const det = await engine.waitForCompletion((await engine.detachVolume(v)).id, 60_000);
      assert.equal(det.status, 'completed', det.error);
    }
    const root = await engine.waitForCompletion(
      (await engine.attachVolumeAsRoot(vols.os!, dest())).id,
      60_000,
    );
    assert.equal(root.status, 'completed', root.error);
    assert.deepEqual(
      [liveVolume(vols.os!)?.vmId, liveVolume(vols.os!)?.deviceId, liveVolume(vols.os!)?.type],
      [dest(), 0, 'ROOT'],
    );
    const data = await engine.waitForCompletion((await engine.attachVolume(vols.data!, dest())).id, 60_000);
    assert.equal(data.status, 'completed', data.error);
    assert.equal(liveVolume(vols.data!)?.vmId, dest());
    const onDest = await engine.listVolumes(dest());
    assert.deepEqual(
      onDest.map((x) => [x.volume_id, x.device_path]).sort(),
      [
        [vols.os!, `remote-vm-root-${dest()}-vol-${vols.os!}`],
        [vols.data!, `remote-vm-${dest()}-vol-${vols.data!}`],
      ].sort(),
    );
    for (const v of [vols.os!, vols.data!])
      assert.match((await s.dmTable((await getMapping(s.db.pool, v))!.persistentName!)) ?? '', / error$/);
  });

  test('test-failover rollback: snapshots tracked, CleanupTestFailover brings each volume back under the same export', async () => {
    for (const v of [vols.os!, vols.data!]) {
      const r = await engine.request('POST', '/api/v1/snapshots/track', {
        volume_uuid: v,
        vm_context_id: 'ctx-webvm',
        snapshot_id: `snap-${v.slice(0, 8)}`,
        disk_id: v === vols.os ? 'disk-2000' : 'disk-2001',
        snapshot_status: 'ready',
      });
      assert.ok(r.status >= 200 && r.status < 300, r.body);
    }
    const listed = await engine.request('GET', '/api/v1/snapshots/vm/ctx-webvm', undefined);
    assert.equal(listed.status, 200);
    const snaps = (JSON.parse(listed.body) as { snapshots: { volume_uuid: string; snapshot_id: string }[] })
      .snapshots;
    assert.deepEqual(snaps.map((x) => x.volume_uuid).sort(), [vols.os!, vols.data!].sort());

    for (const v of [vols.data!, vols.os!]) {
      const op = await engine.cleanupTestFailover(dest(), v, s.applianceVmId, true);
      const done = await engine.waitForCompletion(op.id, 60_000);
      assert.equal(done.status, 'completed', done.error);
      assert.equal(liveVolume(v)?.vmId, s.applianceVmId);
      assert.equal((await engine.getNbdExport(v)).export_name, exportNames.get(v), 'the same export name');
      const put = await engine.request('PUT', `/api/v1/snapshots/${v}`, {
        snapshot_status: 'rollback_complete',
      });
      assert.equal(put.status, 200);
    }
    const cleared = await engine.request('DELETE', '/api/v1/snapshots/vm/ctx-webvm', undefined);
    assert.equal(cleared.status, 200);
    assert.equal((JSON.parse(cleared.body) as { cleared: number }).cleared, 2);
    s.sim.sim.state.vms.get(dest())!.state = 'Running';
  });

  test('failed-execution clean-up and job deletion: detach, attach back, then DeleteVolume removes everything', async () => {
    const det = await engine.waitForCompletion((await engine.detachVolume(vols.data!)).id, 60_000);
    assert.equal(det.status, 'completed', det.error);
    const back = await engine.waitForCompletion(
      (await engine.attachVolume(vols.data!, s.applianceVmId)).id,
      60_000,
    );
    assert.equal(back.status, 'completed', back.error);
    for (const v of [vols.os!, vols.data!]) {
      const name = (await getMapping(s.db.pool, v))!.persistentName!;
      const del = await engine.waitForCompletion((await engine.deleteVolume(v)).id, 60_000);
      assert.equal(del.status, 'completed', del.error);
      assert.equal(liveVolume(v), undefined, 'gone from CloudStack');
      assert.equal(await getMapping(s.db.pool, v), undefined, 'rows removed');
      assert.equal(await s.dmTable(name), null, 'dm device removed');
      assert.ok(!(await s.servedExports()).includes(`migration-vol-${name}`), 'export removed');
    }
  });
});

describe('who may call /api/v1 without a token', () => {
  const badBody = { vm_id: 'not-a-uuid' };
  const attachUrl = () => `/api/v1/volumes/${randomUUID()}/attach`;

  test('loopback peers of a loopback-bound API: accepted (the schema answers next)', async () => {
    for (const remoteAddress of ['127.0.0.1', '127.5.6.7', '::1', '::ffff:127.0.0.1']) {
      const r = await app.inject({ method: 'POST', url: attachUrl(), payload: badBody, remoteAddress });
      assert.equal(r.statusCode, 400, `${remoteAddress}: ${r.body}`);
      assert.match(r.json<{ error: string }>().error, /vm_id: /);
    }
  });

  test('any other peer: 401 before the body is looked at; with the token: accepted', async () => {
    for (const remoteAddress of ['10.1.2.3', '192.168.0.7', '::ffff:10.0.0.1', 'fe80::1', '128.0.0.1']) {
      const r = await app.inject({ method: 'POST', url: attachUrl(), payload: badBody, remoteAddress });
      assert.equal(r.statusCode, 401, `${remoteAddress}: ${r.body}`);
      const body = r.json<{ error: unknown; code: string }>();
      assert.equal(typeof body.error, 'string');
      assert.equal(body.code, 'unauthorized');
      assert.doesNotMatch(r.body, /vm_id/, 'nothing of the schema leaks');
      const detach = await app.inject({
        method: 'POST',
        url: `/api/v1/volumes/${randomUUID()}/detach`,
        remoteAddress,
      });
      assert.equal(detach.statusCode, 401);
      const withToken = await app.inject({
        method: 'POST',
        url: attachUrl(),
        payload: badBody,
        remoteAddress,
        headers: { authorization: `Bearer ${TOKEN}` },
      });
      assert.equal(withToken.statusCode, 400, `${remoteAddress} with the token: ${withToken.body}`);
    }
    // Reads stay open, as the old daemon's were.
    const read = await app.inject({
      method: 'GET',
      url: `/api/v1/operations/${randomUUID()}`,
      remoteAddress: '10.1.2.3',
    });
    assert.equal(read.statusCode, 404);
  });

  test('a wrong token is refused from loopback too', async () => {
    const r = await app.inject({
      method: 'POST',
      url: attachUrl(),
      payload: badBody,
      headers: { authorization: 'Bearer wrong' },
    });
    assert.equal(r.statusCode, 401);
  });

  test('an API listening on all interfaces takes no tokenless mutation, even from loopback', async () => {
    const wide = await buildApi(deps({ listenHost: '0.0.0.0' }));
    try {
      const client = new OldContractClient(await listen(wide, '0.0.0.0'), { pollMs: 100 });
      const e = await client.detachVolume(randomUUID()).then(
        () => assert.fail('accepted'),
        (err: unknown) => err,
      );
      assert.ok(e instanceof VolumeDaemonError, String(e));
      assert.equal(e.status, 401);
      assert.match(e.decoded?.error ?? '', /bearer token is required/);
      await client.healthCheck(); // reads answer
    } finally {
      await wide.close();
    }
  });

  test('API_V1_TRUST_LOOPBACK=false: the token everywhere', async () => {
    const strict = await buildApi(deps({ v1TrustLoopback: false }));
    try {
      const r = await strict.inject({ method: 'POST', url: attachUrl(), payload: badBody });
      assert.equal(r.statusCode, 401);
    } finally {
      await strict.close();
    }
  });
});

describe('operation status in the old vocabulary', () => {
  const row = (status: string, extra: Partial<OperationRow> = {}): OperationRow => ({
    operationId: randomUUID(),
    workflowId: 'volume:x',
    runId: null,
    type: 'attach',
    volumeId: randomUUID(),
    vmId: null,
    status: status as OperationRow['status'],
    request: {},
    response: null,
    error: 'why',
    startedAt: new Date(),
    updatedAt: new Date(),
    finishedAt: null,
    ...extra,
  });

  test('each audit status maps to one the engine knows; nothing it would poll forever', () => {
    const want: Record<string, string> = {
      running: 'executing',
      completed: 'completed',
      failed: 'failed',
      compensated: 'failed',
      refused: 'failed',
      needs_attention: 'failed',
      cancelled: 'cancelled',
      pending: 'pending',
      'some-future-status': 'failed',
    };
    for (const [ours, theirs] of Object.entries(want)) assert.equal(oldStatus(ours), theirs, ours);
    const refused = toOldOperation(row('refused'));
    assert.equal(refused.status, 'failed');
    assert.equal(refused.error, 'why');
  });

  test('an operation parked for an operator is "failed" at once, naming the volume, the step and volumectl', async () => {
    const vol = randomUUID();
    const opId = randomUUID();
    await s.db.pool.query(
      `INSERT INTO volume_operations (operation_id, workflow_id, type, volume_id, status, error, request)
       VALUES (?, ?, 'attach', ?, 'needs_attention', 'dmsetup remove: device busy', ?)`,
      [opId, `volume:${vol}`, vol, JSON.stringify({ applianceVmId: s.applianceVmId })],
    );
    await s.db.pool.query(
      `INSERT INTO volume_operation_steps (operation_id, seq, step, phase, status, error, started_at)
       VALUES (?, 1, 'dm-create', 'forward', 'failed', 'boom', CURRENT_TIMESTAMP(3)),
              (?, 2, 'undo:dm-create', 'compensation', 'failed', 'dmsetup remove: device busy', CURRENT_TIMESTAMP(3))`,
      [opId, opId],
    );
    const op = await engine.getOperation(opId);
    assert.equal(op.status, 'failed');
    assert.equal(op.vm_id, s.applianceVmId);
    for (const part of [
      vol,
      '"dm-create"',
      'device busy',
      `volumectl retry ${vol}`,
      `volumectl skip ${vol}`,
      `volumectl abort ${vol}`,
    ])
      assert.ok(op.error.includes(part), `error names ${part}: ${op.error}`);
    // The engine's wait ends at its first look, not at its timeout.
    const t0 = Date.now();
    const e = await engine.waitForCompletion(opId, 20_000).then(
      () => assert.fail('completed'),
      (err: unknown) => err,
    );
    assert.ok(e instanceof OperationFailedError, String(e));
    assert.match(e.message, /needs an operator/);
    assert.ok(Date.now() - t0 < 5_000, `${Date.now() - t0} ms`);

    for (const [status, theirs] of [
      ['running', 'executing'],
      ['compensated', 'failed'],
      ['cancelled', 'cancelled'],
    ] as const) {
      const id = randomUUID();
      await s.db.pool.query(
        `INSERT INTO volume_operations (operation_id, workflow_id, type, volume_id, status) VALUES (?, 'volume:y', 'failover', ?, ?)`,
        [id, randomUUID(), status],
      );
      const o = await engine.getOperation(id);
      assert.equal(o.status, theirs, status);
      assert.equal(o.type, 'attach', 'failover is an attach to another VM in the old vocabulary');
    }
  });
});

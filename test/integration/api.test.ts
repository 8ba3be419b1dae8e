import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { buildApi } from '../../src/api/server.js';
import { OPERATION_STATUSES, OPERATION_TYPES } from '../../src/domain/operations.js';
import { VolumeLifecycleClient } from '../../src/client/index.js';
import { createApiMetrics } from '../../src/observability/metrics.js';
import { connectClient } from '../../src/temporal/connection.js';
import { freshDatabase } from '../support/db.js';

/**
 * Every route against the real database and the real Temporal dev server. No worker polls this
 * test's queue, so a started operation stays in flight: exactly what the 409 case needs.
 */
const TOKEN = 'test-token-123';
const APPLIANCE = randomUUID();
let db: Awaited<ReturnType<typeof freshDatabase>>;
let app: FastifyInstance;
let temporal: Awaited<ReturnType<typeof connectClient>>;
const started: string[] = [];
let healthy = true;

before(async () => {
  db = await freshDatabase('api');
  temporal = await connectClient({
    TEMPORAL_ADDRESS: process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233',
    TEMPORAL_NAMESPACE: 'default',
  });
  app = await buildApi({
    volumes: new VolumeLifecycleClient({
      client: temporal.client,
      taskQueuePrefix: `api-${randomUUID().slice(0, 8)}`,
    }),
    db: db.pool,
    applianceVmId: APPLIANCE,
    token: TOKEN,
    servedExports: async () => [
      { exportName: 'migration-vol-apivmdisk0' },
      { exportName: 'migration-vol-strangerdisk9' },
    ],
    startReconcile: async (dryRun) => ({
      workflowId: `reconcile:${APPLIANCE}:on-demand`,
      runId: dryRun ? 'dry' : 'real',
    }),
    health: {
      cloudstack: async () => {
        if (!healthy) throw new Error('CloudStack unreachable');
      },
    },
    metrics: () => createApiMetrics(db.pool).collect(),
  });
});
after(async () => {
  for (const id of started)
    await temporal.client.workflow
      .getHandle(id)
      .terminate('test done')
      .catch(() => {});
  await app?.close();
  await temporal?.connection.close();
  await db?.close();
});

const auth = { authorization: `Bearer ${TOKEN}` };
const attachBody = { source_vm_name: 'apivm', disk_key: 2000 };

test('mutating routes need the bearer token, from loopback too, checked before the body', async () => {
  const vol = randomUUID();
  for (const headers of [{}, { authorization: 'Bearer wrong' }, { authorization: TOKEN }]) {
    // A valid body and a body the schema refuses get the same 401: the token is checked in
    // onRequest, so an unauthenticated caller learns nothing of the schema.
    for (const payload of [attachBody, { disk_key: 'nonsense', extra: [1] }]) {
      const r = await app.inject({
        method: 'POST',
        url: `/api/v2/volumes/${vol}/attach`,
        headers,
        payload,
        remoteAddress: '127.0.0.1', // /api/v2 never trusts loopback without the token
      });
      assert.equal(r.statusCode, 401, `${JSON.stringify(headers)} ${JSON.stringify(payload)}`);
      assert.equal(r.json().error.code, 'unauthorized');
      assert.equal(r.json().error.fields[0].field, 'Authorization');
    }
  }
  const malformed = await app.inject({
    method: 'POST',
    url: `/api/v2/volumes/${vol}/attach`,
    headers: { 'content-type': 'application/json' },
    payload: '{"source_vm_name":',
  });
  assert.equal(malformed.statusCode, 401, 'the token is checked before the body is parsed');
  await assert.rejects(temporal.client.workflow.getHandle(`volume:${vol}`).describe(), /not found/i);
});

test('bad input names each field; malformed and oversized bodies are JSON errors; nothing is started', async () => {
  const bad = await app.inject({
    method: 'POST',
    url: '/api/v2/volumes/not-a-uuid/attach',
    headers: auth,
    payload: { disk_key: 2000 },
  });
  assert.equal(bad.statusCode, 400);
  assert.equal(bad.json().error.code, 'invalid_request');
  const vol = randomUUID();
  const cases: [Record<string, unknown>, string][] = [
    [{ disk_key: 2000 }, 'source_vm_name'],
    [{ source_vm_name: 'a\nb', disk_key: 2000 }, 'sourceVmName'],
    [{ source_vm_name: '../etc', disk_key: 2000 }, 'sourceVmName'],
    [{ source_vm_name: 'vm', disk_key: -5 }, 'diskKey'],
    [{ source_vm_name: 'vm', disk_key: 2000, vm_id: 'x' }, 'vm_id'],
  ];
  for (const [payload, field] of cases) {
    const r = await app.inject({
      method: 'POST',
      url: `/api/v2/volumes/${vol}/attach`,
      headers: auth,
      payload,
    });
    assert.equal(r.statusCode, 400, JSON.stringify(payload));
    assert.ok(
      r.json().error.fields.some((f: { field: string }) => f.field.includes(field)),
      `${field} named in ${r.body}`,
    );
  }
  const malformed = await app.inject({
    method: 'POST',
    url: `/api/v2/volumes/${vol}/attach`,
    headers: { ...auth, 'content-type': 'application/json' },
    payload: '{"source_vm_name":',
  });
  assert.equal(malformed.statusCode, 400);
  assert.equal(malformed.json().error.code, 'malformed_body');
  const huge = await app.inject({
    method: 'POST',
    url: `/api/v2/volumes/${vol}/attach`,
    headers: auth,
    payload: { ...attachBody, pad: 'x'.repeat(70_000) },
  });
  assert.equal(huge.statusCode, 413);
  const ops = await app.inject({ method: 'GET', url: `/api/v2/operations?volume_id=${vol}` });
  assert.deepEqual(ops.json().operations, []);
  await assert.rejects(temporal.client.workflow.getHandle(`volume:${vol}`).describe(), /not found/i);
});

test('an operation is accepted (202), a retry with the same key is the same operation, another is 409', async () => {
  const vol = randomUUID();
  const key = randomUUID();
  const first = await app.inject({
    method: 'POST',
    url: `/api/v2/volumes/${vol}/attach`,
    headers: { ...auth, 'idempotency-key': key },
    payload: attachBody,
  });
  started.push(`volume:${vol}`);
  assert.equal(first.statusCode, 202);
  const op = first.json();
  assert.equal(op.id, key);
  assert.equal(op.type, 'attach');
  assert.equal(op.volume_id, vol);
  for (const f of [
    'id',
    'type',
    'status',
    'volume_id',
    'vm_id',
    'request',
    'response',
    'error',
    'created_at',
    'updated_at',
    'completed_at',
  ])
    assert.ok(f in op, f);
  const again = await app.inject({
    method: 'POST',
    url: `/api/v2/volumes/${vol}/attach`,
    headers: { ...auth, 'idempotency-key': key },
    payload: attachBody,
  });
  assert.equal(again.statusCode, 202);
  assert.equal(again.json().id, key);
  const other = await app.inject({
    method: 'POST',
    url: `/api/v2/volumes/${vol}/failover`,
    headers: auth,
    payload: { vm_id: randomUUID() },
  });
  assert.equal(other.statusCode, 409);
  assert.equal(other.json().error.code, 'volume_busy');
  assert.equal(other.json().error.running_operation.operationId, key);
  assert.match(other.json().error.message, new RegExp(key));
});

test('read routes over the database: volume, device, device path, VM, exports, operations', async () => {
  const vol = randomUUID();
  await db.pool.query(
    `INSERT INTO device_mappings (volume_id, source_vm_name, disk_index, appliance_vm_id, location, device_path, virtio_serial, size_bytes, persistent_device_name, mapper_path, dm_state)
     VALUES (?, 'apivm', 0, ?, 'appliance', '/dev/vdq', 'serial', 1073741824, 'apivmdisk0', '/dev/mapper/apivmdisk0', 'linear')`,
    [vol, APPLIANCE],
  );
  await db.pool.query(
    `INSERT INTO nbd_exports (export_name, volume_id, target_path, config_path, backend) VALUES ('migration-vol-apivmdisk0', ?, '/dev/mapper/apivmdisk0', '/x', 'nbdkit-dir')`,
    [vol],
  );
  const opId = randomUUID();
  await db.pool.query(
    `INSERT INTO volume_operations (operation_id, workflow_id, type, volume_id, status, finished_at) VALUES (?, ?, 'attach', ?, 'completed', CURRENT_TIMESTAMP(3))`,
    [opId, `volume:${vol}`, vol],
  );

  const dev = (await app.inject({ method: 'GET', url: `/api/v2/volumes/${vol}/device` })).json();
  assert.equal(dev.persistent_device_name, 'apivmdisk0');
  assert.equal(dev.mapper_path, '/dev/mapper/apivmdisk0');
  assert.equal(dev.location, 'appliance');
  assert.equal(
    (
      await app.inject({ method: 'GET', url: `/api/v2/devices/${encodeURIComponent('/dev/vdq')}/volume` })
    ).json().volume_id,
    vol,
  );
  assert.equal(
    (await app.inject({ method: 'GET', url: `/api/v2/devices/${encodeURIComponent('/dev/../etc')}/volume` }))
      .statusCode,
    400,
  );
  assert.equal(
    (await app.inject({ method: 'GET', url: `/api/v2/vms/${APPLIANCE}/volumes` })).json().volumes.length,
    1,
  );
  assert.equal(
    (await app.inject({ method: 'GET', url: `/api/v2/exports/${vol}` })).json().exportName,
    'migration-vol-apivmdisk0',
  );
  assert.equal((await app.inject({ method: 'GET', url: `/api/v2/volumes/${randomUUID()}` })).statusCode, 404);
  await db.pool.query(
    `INSERT INTO volume_operation_steps (operation_id, seq, step, phase, status, started_at, finished_at)
     VALUES (?, 1, 'validate', 'forward', 'completed', '2026-01-02 03:04:05.678', '2026-01-02 03:04:06.000')`,
    [opId],
  );
  const o = (await app.inject({ method: 'GET', url: `/api/v2/operations/${opId}` })).json();
  assert.equal(o.status, 'completed');
  assert.ok(o.completed_at);
  assert.equal(o.steps.length, 1);
  assert.equal(o.steps[0].step, 'validate');
  assert.match(o.steps[0].startedAt, /^2026-01-0[12]T\d\d:04:05\.678Z$/, 'a step time is an ISO string');
  const list = (
    await app.inject({
      method: 'GET',
      url: `/api/v2/operations?type=attach&status=completed&volume_id=${vol}&limit=5`,
    })
  ).json();
  assert.deepEqual(
    list.operations.map((x: { id: string }) => x.id),
    [opId],
  );
  assert.equal((await app.inject({ method: 'GET', url: '/api/v2/operations?status=bogus' })).statusCode, 400);
  // Every type and status the audit table holds is a filter (create and refused were once refused).
  for (const q of [
    ...OPERATION_TYPES.map((t) => `type=${t}`),
    ...OPERATION_STATUSES.map((st) => `status=${st}`),
  ])
    assert.equal((await app.inject({ method: 'GET', url: `/api/v2/operations?${q}` })).statusCode, 200, q);

  const v = (await app.inject({ method: 'POST', url: '/api/v2/exports/validate', headers: auth })).json();
  assert.equal(v.in_sync, false);
  assert.deepEqual(v.unknown_to_database, ['migration-vol-strangerdisk9']);
  assert.deepEqual(v.missing_from_server, []);
});

test('reconcile now, health, metrics, OpenAPI, and routes that are gone', async () => {
  const r = await app.inject({ method: 'POST', url: '/api/v2/admin/force-sync', headers: auth });
  assert.equal(r.statusCode, 202);
  assert.equal(r.json().reconcile.workflowId, `reconcile:${APPLIANCE}:on-demand`);
  assert.equal((await app.inject({ method: 'POST', url: '/api/v2/exports/cleanup' })).statusCode, 401);

  assert.equal((await app.inject({ method: 'GET', url: '/api/v2/health' })).json().status, 'ok');
  healthy = false;
  const sick = await app.inject({ method: 'GET', url: '/api/v2/health' });
  healthy = true;
  assert.equal(sick.statusCode, 503);
  assert.equal(sick.json().checks.cloudstack.ok, false);
  assert.equal(sick.json().checks.database.ok, true);

  const m = await app.inject({ method: 'GET', url: '/api/v2/metrics' });
  assert.match(m.headers['content-type'] as string, /text\/plain/);
  assert.match(m.body, /volume_operations\{type="attach",status="completed"\} 1/);

  const doc = (await app.inject({ method: 'GET', url: '/api/v2/openapi.json' })).json();
  for (const p of [
    '/api/v2/volumes/{id}/attach',
    '/api/v2/volumes/{id}/failover',
    '/api/v2/operations/{id}',
    '/api/v2/exports/validate',
  ])
    assert.ok(doc.paths[p], p);
  // Every route of /api/v2 is in the document, described by its schemas; /api/v1 is not.
  assert.deepEqual(
    Object.keys(doc.paths).filter((p) => !p.startsWith('/api/v2/')),
    [],
    'only /api/v2 in the document',
  );
  assert.equal(Object.keys(doc.paths).length, 20, Object.keys(doc.paths).join(' '));
  const attach = doc.paths['/api/v2/volumes/{id}/attach'].post;
  assert.deepEqual(attach.requestBody.content['application/json'].schema.required, [
    'source_vm_name',
    'disk_key',
  ]);
  assert.deepEqual(Object.keys(attach.responses).sort(), ['202', '400', '401', '409', '413', '415']);
  assert.ok(attach.responses['202'].content['application/json'].schema.properties.needs_attention);
  assert.deepEqual(attach.security, [{ bearer: [] }]);
  assert.equal(doc.paths['/api/v2/operations/{id}'].get.security, undefined, 'reads need no token');
  const opSchema =
    doc.paths['/api/v2/operations/{id}'].get.responses['200'].content['application/json'].schema;
  assert.equal(opSchema.properties.steps.items.properties.startedAt.format, 'date-time');

  // The OS disk goes on as the migrated VM's root disk through failover (as_root), not a route
  // of its own: v2 answers none of the old daemon's workaround routes.
  const failover = doc.paths['/api/v2/volumes/{id}/failover'].post;
  assert.ok(failover.requestBody.content['application/json'].schema.properties.as_root);
  const old = await app.inject({ method: 'POST', url: `/api/v2/volumes/${randomUUID()}/attach-root` });
  assert.equal(old.statusCode, 404);
});

/** The input the saga was started with (no worker polls this test's queue: it waits there). */
async function startedInput(workflowId: string): Promise<Record<string, unknown>> {
  started.push(workflowId);
  const history = await temporal.client.workflow.getHandle(workflowId).fetchHistory();
  const payload = history.events?.[0]?.workflowExecutionStartedEventAttributes?.input?.payloads?.[0];
  return JSON.parse(Buffer.from(payload!.data!).toString()) as Record<string, unknown>;
}

test('/api/v2 starts every operation: create, failover as root, and a whole VM', async () => {
  const create = await app.inject({
    method: 'POST',
    url: '/api/v2/volumes',
    headers: auth,
    payload: {
      name: 'migration-apivm-apivm-disk-0',
      size_bytes: 3 * 1024 ** 3 + 1,
      disk_offering_id: randomUUID(),
      zone_id: randomUUID(),
      source_vm_name: 'apivm',
      disk_key: 2001,
    },
  });
  assert.equal(create.statusCode, 202, create.body);
  assert.equal(create.json().type, 'create');
  assert.equal(create.json().vm_id, null, 'a create goes to no VM, as its audit row says');
  const c = await startedInput(`create:${create.json().id}`);
  assert.equal(c.sizeGb, 4, 'bytes round up to whole GiB');
  assert.equal(c.sourceVmName, 'apivm');
  assert.equal(c.diskIndex, 1);
  const bad = await app.inject({
    method: 'POST',
    url: '/api/v2/volumes',
    headers: auth,
    payload: { name: 'x', size_bytes: -1, disk_offering_id: randomUUID(), zone_id: randomUUID() },
  });
  assert.equal(bad.statusCode, 400);
  assert.deepEqual(
    bad.json().error.fields.map((f: { field: string }) => f.field),
    ['sizeBytes'],
  );

  const vol = randomUUID();
  const target = randomUUID();
  const root = await app.inject({
    method: 'POST',
    url: `/api/v2/volumes/${vol}/failover`,
    headers: auth,
    payload: { vm_id: target, as_root: true },
  });
  assert.equal(root.statusCode, 202, root.body);
  const f = await startedInput(`volume:${vol}`);
  assert.equal(f.targetVmId, target);
  assert.equal(f.asRoot, true);

  const [os, data] = [randomUUID(), randomUUID()];
  const vm = await app.inject({
    method: 'POST',
    url: `/api/v2/vms/${target}/operations`,
    headers: auth,
    payload: {
      type: 'failover',
      volumes: [{ volume_id: os, as_root: true }, { volume_id: data }],
    },
  });
  assert.equal(vm.statusCode, 202, vm.body);
  assert.deepEqual(vm.json().volumes, [os, data]);
  const v = await startedInput(vm.json().workflow_id);
  assert.equal(v.targetVmId, target);
  assert.deepEqual(v.volumes, [{ volumeId: os, asRoot: true }, { volumeId: data }]);
  const twoRoots = await app.inject({
    method: 'POST',
    url: `/api/v2/vms/${target}/operations`,
    headers: auth,
    payload: {
      type: 'failover',
      volumes: [
        { volume_id: os, as_root: true },
        { volume_id: data, as_root: true },
      ],
    },
  });
  assert.equal(twoRoots.statusCode, 400);
  assert.match(twoRoots.json().error.message + JSON.stringify(twoRoots.json().error.fields), /root disk/);
});

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { buildApi } from '../../src/api/server.js';
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

test('mutating routes need the bearer token', async () => {
  const vol = randomUUID();
  for (const headers of [{}, { authorization: 'Bearer wrong' }, { authorization: TOKEN }]) {
    const r = await app.inject({
      method: 'POST',
      url: `/api/v1/volumes/${vol}/attach`,
      headers,
      payload: attachBody,
    });
    assert.equal(r.statusCode, 401);
    assert.equal(r.json().error.code, 'unauthorized');
    assert.equal(r.json().error.fields[0].field, 'Authorization');
  }
});

test('bad input names each field; malformed and oversized bodies are JSON errors; nothing is started', async () => {
  const bad = await app.inject({
    method: 'POST',
    url: '/api/v1/volumes/not-a-uuid/attach',
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
      url: `/api/v1/volumes/${vol}/attach`,
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
    url: `/api/v1/volumes/${vol}/attach`,
    headers: { ...auth, 'content-type': 'application/json' },
    payload: '{"source_vm_name":',
  });
  assert.equal(malformed.statusCode, 400);
  assert.equal(malformed.json().error.code, 'malformed_body');
  const huge = await app.inject({
    method: 'POST',
    url: `/api/v1/volumes/${vol}/attach`,
    headers: auth,
    payload: { ...attachBody, pad: 'x'.repeat(70_000) },
  });
  assert.equal(huge.statusCode, 413);
  const ops = await app.inject({ method: 'GET', url: `/api/v1/operations?volume_id=${vol}` });
  assert.deepEqual(ops.json().operations, []);
  await assert.rejects(temporal.client.workflow.getHandle(`volume:${vol}`).describe(), /not found/i);
});

test('an operation is accepted (202), a retry with the same key is the same operation, another is 409', async () => {
  const vol = randomUUID();
  const key = randomUUID();
  const first = await app.inject({
    method: 'POST',
    url: `/api/v1/volumes/${vol}/attach`,
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
    url: `/api/v1/volumes/${vol}/attach`,
    headers: { ...auth, 'idempotency-key': key },
    payload: attachBody,
  });
  assert.equal(again.statusCode, 202);
  assert.equal(again.json().id, key);
  const other = await app.inject({
    method: 'POST',
    url: `/api/v1/volumes/${vol}/failover`,
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

  const dev = (await app.inject({ method: 'GET', url: `/api/v1/volumes/${vol}/device` })).json();
  assert.equal(dev.persistent_device_name, 'apivmdisk0');
  assert.equal(dev.mapper_path, '/dev/mapper/apivmdisk0');
  assert.equal(dev.location, 'appliance');
  assert.equal(
    (
      await app.inject({ method: 'GET', url: `/api/v1/devices/${encodeURIComponent('/dev/vdq')}/volume` })
    ).json().volume_id,
    vol,
  );
  assert.equal(
    (await app.inject({ method: 'GET', url: `/api/v1/devices/${encodeURIComponent('/dev/../etc')}/volume` }))
      .statusCode,
    400,
  );
  assert.equal(
    (await app.inject({ method: 'GET', url: `/api/v1/vms/${APPLIANCE}/volumes` })).json().volumes.length,
    1,
  );
  assert.equal(
    (await app.inject({ method: 'GET', url: `/api/v1/exports/${vol}` })).json().exportName,
    'migration-vol-apivmdisk0',
  );
  assert.equal((await app.inject({ method: 'GET', url: `/api/v1/volumes/${randomUUID()}` })).statusCode, 404);
  const o = (await app.inject({ method: 'GET', url: `/api/v1/operations/${opId}` })).json();
  assert.equal(o.status, 'completed');
  assert.ok(o.completed_at);
  const list = (
    await app.inject({
      method: 'GET',
      url: `/api/v1/operations?type=attach&status=completed&volume_id=${vol}&limit=5`,
    })
  ).json();
  assert.deepEqual(
    list.operations.map((x: { id: string }) => x.id),
    [opId],
  );
  assert.equal((await app.inject({ method: 'GET', url: '/api/v1/operations?status=bogus' })).statusCode, 400);

  const v = (await app.inject({ method: 'POST', url: '/api/v1/exports/validate', headers: auth })).json();
  assert.equal(v.in_sync, false);
  assert.deepEqual(v.unknown_to_database, ['migration-vol-strangerdisk9']);
  assert.deepEqual(v.missing_from_server, []);
});

test('reconcile now, health, metrics, OpenAPI, and routes that are gone', async () => {
  const r = await app.inject({ method: 'POST', url: '/api/v1/admin/force-sync', headers: auth });
  assert.equal(r.statusCode, 202);
  assert.equal(r.json().reconcile.workflowId, `reconcile:${APPLIANCE}:on-demand`);
  assert.equal((await app.inject({ method: 'POST', url: '/api/v1/exports/cleanup' })).statusCode, 401);

  assert.equal((await app.inject({ method: 'GET', url: '/api/v1/health' })).json().status, 'ok');
  healthy = false;
  const sick = await app.inject({ method: 'GET', url: '/api/v1/health' });
  healthy = true;
  assert.equal(sick.statusCode, 503);
  assert.equal(sick.json().checks.cloudstack.ok, false);
  assert.equal(sick.json().checks.database.ok, true);

  const m = await app.inject({ method: 'GET', url: '/api/v1/metrics' });
  assert.match(m.headers['content-type'] as string, /text\/plain/);
  assert.match(m.body, /volume_operations\{type="attach",status="completed"\} 1/);

  const doc = (await app.inject({ method: 'GET', url: '/api/v1/openapi.json' })).json();
  for (const p of [
    '/api/v1/volumes/{id}/attach',
    '/api/v1/volumes/{id}/failover',
    '/api/v1/operations/{id}',
    '/api/v1/exports/validate',
  ])
    assert.ok(doc.paths[p], p);

  const gone = await app.inject({ method: 'POST', url: `/api/v1/volumes/${randomUUID()}/attach-root` });
  assert.equal(gone.statusCode, 410);
  assert.match(gone.json().error.message, /root volumes/);
});

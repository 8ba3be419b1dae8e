import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { execa } from 'execa';
import type { FastifyInstance } from 'fastify';
import { buildApi } from '../../src/api/server.js';
import { listOperations } from '../../src/db/operations.js';
import { startStandinStack, type StandinStack } from '../support/standin-stack.js';

/**
 * Bad input found by trying the service as a new user would (#28): each gets a clear 4xx (or,
 * for the CLI, exit 2) naming the field, and nothing is written or started; and an operation a
 * check turned down stays reachable by the tools.
 */
const TOKEN = 'bad-input-engine-token';
const ROOT = path.resolve(import.meta.dirname, '../..');
let s: StandinStack;
let app: FastifyInstance;

before(async () => {
  s = await startStandinStack('badengine');
  app = await buildApi({
    volumes: s.volumes,
    db: s.db.pool,
    applianceVmId: s.applianceVmId,
    token: TOKEN,
    listenHost: '127.0.0.1',
  });
});
after(async () => {
  await app?.close();
  await s?.close();
});

const send = (method: 'POST' | 'GET', url: string, payload?: string | Buffer, v2 = false) =>
  app.inject({
    method,
    url,
    remoteAddress: '127.0.0.1',
    headers: {
      'content-type': 'application/json',
      ...(v2 ? { authorization: `Bearer ${TOKEN}` } : {}),
    },
    ...(payload !== undefined ? { payload } : {}),
  });
const fieldsOf = (body: string): string[] => {
  const b = JSON.parse(body) as { error: unknown; details?: { fields: { field: string }[] } };
  const fields =
    typeof b.error === 'object' && b.error !== null
      ? (b.error as { fields: { field: string }[] }).fields
      : (b.details?.fields ?? []);
  return fields.map((f) => f.field);
};
const operationsNow = async () => (await listOperations(s.db.pool, { limit: 1000 })).length;

test('HTTP bodies: bytes that are not UTF-8, lone surrogates and __proto__ keys are refused naming the field', async () => {
  const before = await operationsNow();
  const vol = randomUUID();
  const attach = `/api/v1/volumes/${vol}/attach`;
  /** A JSON body whose `field` carries two bytes that are not UTF-8. */
  const notUtf8 = (before: string, after: string) =>
    Buffer.concat([Buffer.from(before), Buffer.from([0xff, 0xfe]), Buffer.from(after)]);
  for (const [url, v2, body, field] of [
    [attach, false, notUtf8('{"vm_name":"pg', '","disk_id":"disk-2000"}'), 'vm_name'],
    [
      `/api/v2/volumes/${vol}/attach`,
      true,
      notUtf8('{"source_vm_name":"pg', '","disk_key":2000}'),
      'source_vm_name',
    ],
  ] as const) {
    const r = await send('POST', url, body, v2);
    assert.equal(r.statusCode, 400, r.body);
    assert.deepEqual(fieldsOf(r.body), [field], r.body);
    assert.match(r.body, /not valid UTF-8/);
  }
  const lone = await send('POST', attach, '{"vm_name":"pg\\ud800x","disk_id":"disk-2000"}');
  assert.equal(lone.statusCode, 400, lone.body);
  assert.deepEqual(fieldsOf(lone.body), ['vm_name']);
  assert.match(lone.body, /lone UTF-16 surrogate/);
  const proto = await send('POST', attach, '{"vm_name":"pg","disk_id":"disk-2000","__proto__":{"x":1}}');
  assert.equal(proto.statusCode, 400, proto.body);
  assert.match(JSON.parse(proto.body).error, /__proto__/);
  assert.doesNotMatch(JSON.parse(proto.body).error, /not valid JSON/);
  const nbsp = await send('POST', attach, '{"vm_name":"pg\u00a0test3","disk_id":"disk-2000"}');
  assert.equal(nbsp.statusCode, 400, nbsp.body);
  assert.deepEqual(fieldsOf(nbsp.body), ['vm_name']);
  assert.match(nbsp.body, /U\+00A0/);
  assert.equal(await operationsNow(), before, 'nothing written');
});

test('v1 create: a size past 2^53 and a bad metadata VM name are named as the engine sent them', async () => {
  const base = {
    name: 'migration-pg-pg-disk-0',
    size: 2 ** 30,
    disk_offering_id: s.sim.offering.id,
    zone_id: s.sim.zone.id,
  };
  const big = await send('POST', '/api/v1/volumes', JSON.stringify({ ...base, size: 1e20 }));
  assert.equal(big.statusCode, 400, big.body);
  assert.match(JSON.parse(big.body).error, /size: must be at most 9007199254740991 bytes/);
  const vm = await send(
    'POST',
    '/api/v1/volumes',
    JSON.stringify({ ...base, metadata: { source_vm_name: 'pg\u200btest', disk_unit_number: '0' } }),
  );
  assert.equal(vm.statusCode, 400, vm.body);
  assert.deepEqual(fieldsOf(vm.body), ['metadata.source_vm_name']);
});

test('a create CloudStack refuses (no such zone) fails at once, compensated, never parked for an operator', async () => {
  const r = await send(
    'POST',
    '/api/v1/volumes',
    JSON.stringify({
      name: 'migration-zoneless-zoneless-disk-0',
      size: 2 ** 30,
      disk_offering_id: s.sim.offering.id,
      zone_id: randomUUID(),
    }),
  );
  assert.equal(r.statusCode, 201, r.body);
  const id = (JSON.parse(r.body) as { id: string }).id;
  for (;;) {
    const [row] = await listOperations(s.db.pool, { operationId: id });
    if (row && row.status !== 'running') {
      // Failed with nothing to undo, in the engine's words "failed": never needs_attention.
      assert.equal(row.status, 'compensated', `${row.status}: ${row.error}`);
      assert.match(row.error ?? '', /cloudstack-create=completed/);
      assert.match(row.error ?? '', /zoneid/);
      // It has no volume id: the tools find it by its operation id.
      const shown = await execa(path.join(ROOT, 'scripts/volumectl'), ['--json', 'show', id], {
        reject: false,
        env: { DB_NAME: s.db.name },
      });
      assert.equal(shown.exitCode, 0, shown.stderr);
      assert.equal(JSON.parse(shown.stdout).operation.status, 'compensated');
      break;
    }
    await new Promise((res) => setTimeout(res, 50));
  }
});

test('every operation is reachable by the tools by its operation id: a create held in flight is aborted by it', async () => {
  const operationId = randomUUID();
  await s.failpoints.arm({
    id: 'hold-create',
    workflowId: `create:${operationId}`,
    activityType: 'csCreate',
    action: 'hold',
  });
  const h = await s.volumes.create({
    operationId,
    applianceVmId: s.applianceVmId,
    name: 'migration-held-held-disk-0',
    sizeBytes: 2 ** 30,
    diskOfferingId: s.sim.offering.id,
    zoneId: s.sim.zone.id,
  });
  while (!(await s.failpoints.held('hold-create'))) await new Promise((res) => setTimeout(res, 50));
  const answer = await s.volumes.operator(operationId, {
    action: 'abort',
    reason: 'wrong size',
    operator: 'ops',
  });
  assert.match(answer, /aborting/);
  await assert.rejects(h.result(), (e: Error & { cause?: Error }) =>
    /cancel|abort/i.test(String(e.cause?.message)),
  );
  const [row] = await listOperations(s.db.pool, { operationId });
  assert.equal(row?.status, 'cancelled');
  await assert.rejects(
    s.volumes.operator(randomUUID(), { action: 'abort', reason: 'x', operator: 'ops' }),
    /no running operation has the volume id or operation id/,
  );
});

test('the same idempotency key with another VM name or disk key is refused, naming the mismatch', async () => {
  const vol = await s.createVolume();
  const key = randomUUID();
  const url = `/api/v2/volumes/${vol}/attach`;
  const first = await app.inject({
    method: 'POST',
    url,
    headers: { authorization: `Bearer ${TOKEN}`, 'idempotency-key': key },
    payload: { source_vm_name: 'idemvm', disk_key: 2000 },
  });
  assert.equal(first.statusCode, 202, first.body);
  const again = await app.inject({
    method: 'POST',
    url,
    headers: { authorization: `Bearer ${TOKEN}`, 'idempotency-key': key },
    payload: { source_vm_name: 'idemvm', disk_key: 2000 },
  });
  assert.equal(again.statusCode, 202, 'the same request: that operation again');
  assert.equal(JSON.parse(again.body).id, key);
  const other = await app.inject({
    method: 'POST',
    url,
    headers: { authorization: `Bearer ${TOKEN}`, 'idempotency-key': key },
    payload: { source_vm_name: 'othervm', disk_key: 2016 },
  });
  assert.equal(other.statusCode, 409, other.body);
  const err = JSON.parse(other.body).error as { code: string; fields: { field: string; message: string }[] };
  assert.equal(err.code, 'idempotency_mismatch');
  assert.deepEqual(err.fields.map((f) => f.field).sort(), ['diskKey', 'sourceVmName']);
  assert.match(err.fields.find((f) => f.field === 'diskKey')!.message, /was disk-2000, now disk-2016/);
});

test('GET /api/v1/exports filters by vm_name and status, and names an unknown filter', async () => {
  const vol = await s.createVolume();
  await (
    await s.volumes.attach({
      applianceVmId: s.applianceVmId,
      volumeId: vol,
      sourceVmName: 'filtervm',
      diskKey: 2000,
    })
  ).result();
  const list = async (q: string) => {
    const r = await send('GET', `/api/v1/exports${q}`);
    assert.equal(r.statusCode, 200, r.body);
    return (JSON.parse(r.body) as { volume_id: string }[]).map((e) => e.volume_id);
  };
  assert.deepEqual(await list('?vm_name=filtervm'), [vol]);
  assert.deepEqual(await list('?vm_name=nobody'), []);
  assert.ok((await list('?status=active')).includes(vol));
  assert.deepEqual(await list('?status=failed'), []);
  assert.deepEqual(await list('?vm_name=filtervm&status=active'), [vol]);
  const bad = await send('GET', '/api/v1/exports?status=gone');
  assert.equal(bad.statusCode, 400, bad.body);
  assert.deepEqual(fieldsOf(bad.body), ['status']);
  const unknown = await send('GET', '/api/v1/exports?vm=filtervm');
  assert.equal(unknown.statusCode, 400, unknown.body);
});

test('volumectl: an argument that is not UTF-8 is refused naming the option, before anything runs', async () => {
  const r = await execa(
    'bash',
    ['-c', `./scripts/volumectl attach $'${'\\x'}ff' --vm-name $'pg${'\\x'}ed${'\\x'}a0${'\\x'}80'`],
    {
      cwd: ROOT,
      reject: false,
    },
  );
  assert.equal(r.exitCode, 2, r.stderr);
  assert.match(r.stderr, /argument 2: contains bytes that are not valid UTF-8/);
  assert.match(r.stderr, /--vm-name: contains bytes that are not valid UTF-8/);
});

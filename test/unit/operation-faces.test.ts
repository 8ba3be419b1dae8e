import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import type { Pool } from 'mysql2/promise';
import { buildApi } from '../../src/api/server.js';
import { VolumeLifecycleClient } from '../../src/client/index.js';
import { OPERATIONS, STARTABLE_OPERATIONS } from '../../src/domain/operation-table.js';

// Every operation a caller can start reaches every face: the client, /api/v2 and volumectl. A row
// added to src/domain/operation-table.ts without its method, route or command fails here.

test('the client has a method for every operation', () => {
  for (const op of STARTABLE_OPERATIONS)
    assert.equal(typeof VolumeLifecycleClient.prototype[op], 'function', `VolumeLifecycleClient.${op}`);
});

test('/api/v2 serves every operation at its route, behind the bearer token', async () => {
  // The document is built from the registered routes; nothing here is started or read.
  const app = await buildApi({
    volumes: {} as VolumeLifecycleClient,
    db: {} as Pool,
    applianceVmId: '33333333-0000-4000-8000-000000000003',
    token: 'face-test',
  });
  try {
    const doc = (await app.inject({ method: 'GET', url: '/api/v2/openapi.json' })).json() as {
      paths: Record<string, Record<string, { security?: unknown[] }>>;
    };
    for (const op of STARTABLE_OPERATIONS) {
      const { method, path } = OPERATIONS[op].v2;
      const route = doc.paths[`/api/v2${path}`.replace(/:(\w+)/g, '{$1}')]?.[method.toLowerCase()];
      assert.ok(route, `${op}: ${method} /api/v2${path} is served`);
      assert.ok(route.security?.length, `${op}: ${method} /api/v2${path} needs the bearer token`);
    }
    // Without the token nothing starts: the client above has no methods to start anything with.
    const res = await app.inject({ method: 'POST', url: '/api/v2/volumes', payload: {} });
    assert.equal(res.statusCode, 401);
  } finally {
    await app.close();
  }
});

test('volumectl has a command for every operation', async () => {
  const cli = fileURLToPath(new URL('../../scripts/volumectl', import.meta.url));
  const { stdout } = await execa(cli, ['--help']);
  const commands = new Set([...stdout.matchAll(/^ {2}([a-z][a-z-]*) /gm)].map((m) => m[1]));
  for (const op of STARTABLE_OPERATIONS)
    assert.ok(commands.has(OPERATIONS[op].cli), `volumectl ${OPERATIONS[op].cli} (${op})`);
  // The failover takes --as-root, as the client and /api/v2 do.
  const failover = await execa(cli, [OPERATIONS.failover.cli, '--help']);
  assert.match(failover.stdout, /--as-root/);
});

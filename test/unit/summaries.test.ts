import assert from 'node:assert/strict';
import { test } from 'node:test';
import { summaryOf } from '../../src/client/index.js';

const ctx = {
  operationId: '11111111-0000-4000-8000-000000000001',
  volumeId: '22222222-0000-4000-8000-000000000002',
  applianceVmId: '33333333-0000-4000-8000-000000000003',
  taskQueuePrefix: 'volume-lifecycle',
  correlationTimeoutMs: 60_000,
};

test('the Temporal UI list names the persistent name, the VM and disk, and where the volume goes', () => {
  assert.equal(
    summaryOf('attach', { ...ctx, sourceVmName: 'pgtest3', diskIndex: 0 }),
    `attach pgtest3disk0 (VM "pgtest3" disk-2000), volume ${ctx.volumeId}`,
  );
  assert.equal(
    summaryOf('failover', { ...ctx, targetVmId: '44444444-0000-4000-8000-000000000004', asRoot: true }),
    `failover volume ${ctx.volumeId} to VM 44444444-0000-4000-8000-000000000004 as its root disk`,
  );
  assert.equal(
    summaryOf('create', {
      ...ctx,
      volumeId: '',
      name: 'migration-pgtest3-pgtest3-disk-1',
      sourceVmName: 'pgtest3',
      diskIndex: 1,
    }),
    'create pgtest3disk1 (VM "pgtest3" disk-2001)',
  );
  assert.equal(summaryOf('detach', ctx), `detach volume ${ctx.volumeId}`);
});

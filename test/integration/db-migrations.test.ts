import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { RowDataPacket } from 'mysql2/promise';
import { createMigrator } from '../../src/db/migrator.js';
import { DM_STATES, EXPORT_BACKENDS, VOLUME_LOCATIONS } from '../../src/domain/mapping.js';
import { OPERATION_STATUSES, OPERATION_TYPES } from '../../src/domain/operations.js';
import { freshDatabase } from '../support/db.js';

let db: Awaited<ReturnType<typeof freshDatabase>>;
before(async () => (db = await freshDatabase('migr')));
after(async () => db?.close());

async function tables(): Promise<string[]> {
  const [rows] = await db.pool.query<RowDataPacket[]>('SHOW TABLES');
  return rows.map((r) => String(Object.values(r)[0])).sort();
}

test('migrations go up, down and up again cleanly on the real database', async () => {
  const m = createMigrator(db.pool);
  assert.deepEqual(await m.pending(), []);
  const up = await tables();
  for (const t of [
    'device_mappings',
    'nbd_exports',
    'volume_operations',
    'volume_operation_steps',
    'reconcile_runs',
    'reconcile_findings',
  ]) {
    assert.ok(up.includes(t), `table ${t} exists after up`);
  }
  await m.down({ to: 0 });
  assert.deepEqual(await tables(), ['schema_migrations']);
  await m.up();
  assert.deepEqual(await tables(), up);
});

test('the ENUM columns hold exactly the vocabulary the code defines (src/domain/mapping.ts)', async () => {
  const enumOf = async (table: string, column: string) => {
    const [rows] = await db.pool.query<RowDataPacket[]>(
      'SELECT COLUMN_TYPE AS t FROM INFORMATION_SCHEMA.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME = ?',
      [table, column],
    );
    const m = /^enum\((.*)\)$/.exec(String(rows[0]?.t));
    assert.ok(m, `${table}.${column} is an ENUM column (got ${String(rows[0]?.t)})`);
    return m[1]!.split(',').map((v) => v.replace(/^'|'$/g, ''));
  };
  assert.deepEqual(await enumOf('device_mappings', 'location'), [...VOLUME_LOCATIONS]);
  assert.deepEqual(await enumOf('device_mappings', 'dm_state'), [...DM_STATES]);
  assert.deepEqual(await enumOf('nbd_exports', 'backend'), [...EXPORT_BACKENDS]);
  // The audit trail's: a type or status added in code needs a migration that adds it here.
  assert.deepEqual(await enumOf('volume_operations', 'type'), [...OPERATION_TYPES]);
  assert.deepEqual(await enumOf('volume_operations', 'status'), [...OPERATION_STATUSES]);
  assert.deepEqual(await enumOf('volume_operation_steps', 'phase'), ['forward', 'compensation', 'operator']);
  assert.deepEqual(await enumOf('volume_operation_steps', 'status'), [
    'started',
    'completed',
    'failed',
    'skipped',
  ]);
});

test('persistent_device_name is unique (the seed allowed duplicates)', async () => {
  const insert = (vol: string, disk: number) =>
    db.pool.query(
      `INSERT INTO device_mappings (volume_id, source_vm_name, disk_index, appliance_vm_id, virtio_serial, size_bytes, persistent_device_name)
       VALUES (?, 'vm', ?, '00000000-0000-0000-0000-000000000001', 'serial', 1, 'samename')`,
      [vol, disk],
    );
  await insert('00000000-0000-0000-0000-00000000000a', 0);
  await assert.rejects(insert('00000000-0000-0000-0000-00000000000b', 1), /Duplicate entry/);
});

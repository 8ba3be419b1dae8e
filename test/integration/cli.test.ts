import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { execa } from 'execa';
import { freshDatabase } from '../support/db.js';

const CLI = fileURLToPath(new URL('../../scripts/volumectl', import.meta.url));
let db: Awaited<ReturnType<typeof freshDatabase>>;
const APPLIANCE = randomUUID();
const run = (...args: string[]) =>
  execa(CLI, args, {
    reject: false,
    env: {
      DB_NAME: db.name,
      APPLIANCE_VM_ID: APPLIANCE,
      TASK_QUEUE_PREFIX: `cli-${randomUUID().slice(0, 8)}`,
    },
  });

before(async () => (db = await freshDatabase('cli')));
after(() => db?.close());

test('bad input exits 2 naming the field, and starts nothing', async () => {
  const notUuid = await run('attach', 'not-a-uuid', '--vm-name', 'vm', '--disk-key', '2000');
  assert.equal(notUuid.exitCode, 2, notUuid.stderr);
  assert.match(notUuid.stderr, /volumeId/);
  const vol = randomUUID();
  for (const [vm, field] of [
    ['a/b', 'sourceVmName'],
    ['x\ny', 'sourceVmName'],
    ['..', 'sourceVmName'],
  ] as const) {
    const r = await run('--json', 'attach', vol, '--vm-name', vm, '--disk-key', '2000');
    assert.equal(r.exitCode, 2, r.stderr);
    assert.equal(JSON.parse(r.stderr).error.fields[0].field, field);
  }
  const key = await run('attach', vol, '--vm-name', 'vm', '--disk-key', 'disk-99');
  assert.equal(key.exitCode, 2);
  assert.match(key.stderr, /diskKey/);
  const ops = await run('--json', 'ops');
  assert.deepEqual(JSON.parse(ops.stdout), []);
});

test('show, list and ops read the database; --json parses', async () => {
  const vol = randomUUID();
  await db.pool.query(
    `INSERT INTO device_mappings (volume_id, source_vm_name, disk_index, appliance_vm_id, location, device_path, virtio_serial, size_bytes, persistent_device_name, mapper_path, dm_state)
     VALUES (?, 'clivm', 0, ?, 'appliance', '/dev/vdc', 'serial', 1073741824, 'clivmdisk0', '/dev/mapper/clivmdisk0', 'linear')`,
    [vol, APPLIANCE],
  );
  const show = await run('--json', 'show', vol);
  assert.equal(show.exitCode, 0, show.stderr);
  assert.equal(JSON.parse(show.stdout).mapping.persistentName, 'clivmdisk0');
  const human = await run('show', vol);
  assert.match(human.stdout, /clivmdisk0/);
  assert.match(human.stdout, /\/dev\/vdc → \/dev\/mapper\/clivmdisk0/);
  const list = JSON.parse((await run('--json', 'list')).stdout) as { volumeId: string }[];
  assert.deepEqual(
    list.map((m) => m.volumeId),
    [vol],
  );
  const missing = await run('show', randomUUID());
  assert.equal(missing.exitCode, 2);
});

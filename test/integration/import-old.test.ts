import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import type { RowDataPacket } from 'mysql2/promise';
import { loadConfig } from '../../src/config/index.js';
import { importOldDatabase } from '../../src/engine-contract/import-old.js';
import { getMapping } from '../../src/db/mappings.js';
import { createPool, dropDatabase, ensureDatabase } from '../../src/db/pool.js';
import { freshDatabase } from '../support/db.js';
import { EngineRows } from '../../src/engine-contract/engine-rows.js';
import { differences, engineMappingOf } from '../../src/engine-contract/engine-view.js';

/**
 * The old daemon's database (its production schema: harness/engine-db/schema.sql) beside
 * ours on one server: the import adopts what it can, says why for the rest, writes nothing on a
 * dry run and never changes the old tables.
 */
const APPLIANCE = 'a0000000-0000-4000-8000-000000000001';
const DEST = 'd0000000-0000-4000-8000-000000000002';
const V = (n: number) => `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`;

let ours: Awaited<ReturnType<typeof freshDatabase>>;
const oldName = `vl_test_old_${process.pid}`;
const oldCfg = { ...loadConfig(), DB_NAME: oldName };
let old: ReturnType<typeof createPool>;

before(async () => {
  ours = await freshDatabase('importold');
  await ensureDatabase(oldCfg);
  old = createPool(oldCfg, { multipleStatements: true });
  await old.query(
    await readFile(path.join(import.meta.dirname, '../../harness/engine-db/schema.sql'), 'utf8'),
  );
  const mapping = (n: number, vm: string, mode: string, name: string | null, dev: string) =>
    old.query(
      `INSERT INTO device_mappings (id, volume_uuid, vm_id, operation_mode, cloudstack_device_id, device_path,
         cloudstack_state, linux_state, size, persistent_device_name)
       VALUES (?, ?, ?, ?, 1, ?, 'attached', 'detected', 5368709120, ?)`,
      [`m${n}`, V(n), vm, mode, dev, name],
    );
  const volume = (n: number, name: string) =>
    old.query('INSERT INTO ossea_volumes (volume_id, volume_name, size_gb) VALUES (?, ?, 5)', [V(n), name]);
  // 1: on the appliance with the seed's persistent name; exported by the old daemon.
  await mapping(1, APPLIANCE, 'oma', 'pgtest3disk0', '/dev/disk/by-id/virtio-0001');
  await volume(1, 'migration-pgtest3-pgtest3-disk-0');
  await old.query(
    "INSERT INTO nbd_exports (volume_id, export_name, port, device_path, status) VALUES (?, 'migration-vol-pgtest3disk0', 10809, '/dev/vdb', 'active')",
    [V(1)],
  );
  // 2: on the appliance, never named: reconcile names it by the rule.
  await mapping(2, APPLIANCE, 'oma', null, '/dev/disk/by-id/virtio-0002');
  await volume(2, 'migration-PG-Web-PG-Web-disk-1');
  // 3: failed over to the destination VM (the old daemon's remote-vm path).
  await mapping(3, DEST, 'failover', null, `remote-vm-${DEST}`);
  await volume(3, 'migration-pgtest3-pgtest3-disk-1');
  // 4: no engine volume row: nothing says which VM disk it is.
  await mapping(4, APPLIANCE, 'oma', null, '/dev/disk/by-id/virtio-0004');
  // 5: a volume name that is not the engine's pattern.
  await mapping(5, APPLIANCE, 'oma', null, '/dev/disk/by-id/virtio-0005');
  await volume(5, 'DATA-5');
  // 6: a persistent name that device-mapper would not take.
  await mapping(6, APPLIANCE, 'oma', 'Bad Name', '/dev/disk/by-id/virtio-0006');
  await volume(6, 'migration-x-x-disk-0');
});
after(async () => {
  await old?.end();
  await dropDatabase(oldCfg).catch(() => {});
  await ours?.close();
});

async function oldChecksum(): Promise<string> {
  const [rows] = await old.query<RowDataPacket[]>(
    'CHECKSUM TABLE device_mappings, nbd_exports, ossea_volumes',
  );
  return JSON.stringify(rows.map((r) => r.Checksum));
}

test('dry run: the plan, with the reason for every row it cannot adopt; nothing written', async () => {
  const before = await oldChecksum();
  const r = await importOldDatabase(ours.pool, { from: oldName, applianceVmId: APPLIANCE, apply: false });
  assert.equal(r.dryRun, true);
  assert.deepEqual(r.adopted.map((d) => d.volumeId).sort(), [V(1), V(2), V(3)]);
  const why = Object.fromEntries(r.skipped.map((d) => [d.volumeId, d.action === 'skip' ? d.why : '']));
  assert.match(why[V(4)]!, /no ossea_volumes row names it/);
  assert.match(why[V(5)]!, /"DATA-5" is not the engine's migration-<vm>-<vm>-disk-<unit>/);
  assert.match(why[V(6)]!, /"Bad Name" is not valid for device-mapper/);
  for (const n of [1, 2, 3])
    assert.equal(await getMapping(ours.pool, V(n)), undefined, 'dry run writes nothing');
  assert.equal(await oldChecksum(), before);
});

test('apply: rows adopted where the old daemon left them, old names kept, old tables untouched; again: nothing new', async () => {
  const before = await oldChecksum();
  const r = await importOldDatabase(ours.pool, { from: oldName, applianceVmId: APPLIANCE, apply: true });
  assert.equal(r.adopted.length, 3);
  const one = (await getMapping(ours.pool, V(1)))!;
  assert.equal(one.persistentName, 'pgtest3disk0', 'the old name, kept as it was');
  assert.equal(one.mapperPath, '/dev/mapper/pgtest3disk0');
  assert.deepEqual(
    [one.location, one.dmState, one.sourceVmName, one.diskIndex],
    ['appliance', 'absent', 'pgtest3', 0],
  );
  const two = (await getMapping(ours.pool, V(2)))!;
  assert.equal(two.persistentName, null, 'unnamed: reconcile adopts it by the rule');
  assert.deepEqual([two.sourceVmName, two.diskIndex], ['PG-Web', 1]);
  const three = (await getMapping(ours.pool, V(3)))!;
  assert.deepEqual([three.location, three.targetVmId], ['target', DEST]);
  assert.equal(await oldChecksum(), before, 'the old database is read, never written');

  const again = await importOldDatabase(ours.pool, { from: oldName, applianceVmId: APPLIANCE, apply: true });
  assert.deepEqual(again.present.sort(), [V(1), V(2), V(3)]);
  assert.equal(again.adopted.length, 0);
});

test('a database name that is not a plain identifier is refused before any SQL', async () => {
  await assert.rejects(
    importOldDatabase(ours.pool, { from: 'x`; DROP TABLE y; --', applianceVmId: APPLIANCE, apply: false }),
    /--from-db: .* is not a database name/,
  );
});

test("apply with the engine's database set (it is the old one): named rows take our form there, the engine's own columns kept, unnamed rows untouched", async () => {
  const ours2 = await freshDatabase('importengine');
  try {
    // A column the engine (or the old daemon's snapshot tracking) wrote: the import must keep it.
    await old.query("UPDATE device_mappings SET ossea_snapshot_id = 'snap-kept' WHERE volume_uuid = ?", [
      V(1),
    ]);
    const [unnamedBefore] = await old.query<RowDataPacket[]>(
      'SELECT * FROM device_mappings WHERE volume_uuid = ?',
      [V(2)],
    );
    const r = await importOldDatabase(ours2.pool, {
      from: oldName,
      applianceVmId: APPLIANCE,
      apply: true,
      engine: new EngineRows({ database: oldName, nbdPort: 10809 }),
    });
    assert.equal(r.adopted.length, 3);
    const row = async (n: number) =>
      (
        await old.query<RowDataPacket[]>('SELECT * FROM device_mappings WHERE volume_uuid = ?', [V(n)])
      )[0][0]!;
    const one = await row(1);
    assert.deepEqual(differences(one, engineMappingOf((await getMapping(ours2.pool, V(1))) as never)), []);
    assert.equal(one.device_path, '/dev/mapper/pgtest3disk0');
    assert.equal(one.ossea_snapshot_id, 'snap-kept', 'a column not ours is kept');
    assert.equal(one.operation_mode, 'oma');
    const three = await row(3);
    assert.equal(
      three.device_path,
      `remote-vm-${DEST}`,
      'unnamed too: reconcile names it, then it takes our form',
    );
    assert.deepEqual(
      { ...(await row(2)) },
      { ...unnamedBefore[0] },
      'unnamed: as the old daemon left it, until named',
    );
    const [exports] = await old.query<RowDataPacket[]>(
      'SELECT export_name FROM nbd_exports WHERE volume_id = ?',
      [V(1)],
    );
    assert.deepEqual(
      exports,
      [],
      "the seed's export name, which the engine cannot parse, is gone; reconcile writes migration-vol-<id>",
    );
  } finally {
    await ours2.close();
  }
});

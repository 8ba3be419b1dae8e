import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import { assignName, DiskAlreadyMappedError, getMapping, releaseName } from '../../src/db/mappings.js';
import { diskIndexFromKey } from '../../src/domain/naming.js';
import { freshDatabase } from '../support/db.js';

let db: Awaited<ReturnType<typeof freshDatabase>>;
before(async () => (db = await freshDatabase('naming')));
after(async () => db?.close());

const APPLIANCE = '3f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b';
const input = (vm: string, disk: number, volumeId = randomUUID()) => ({
  volumeId,
  sourceVmName: vm,
  diskIndex: disk,
  applianceVmId: APPLIANCE,
  virtioSerial: volumeId.replace(/-/g, '').slice(0, 20),
  sizeBytes: 1 << 30,
  operationId: randomUUID(),
});

test('a name is assigned once and never changes', async () => {
  const req = input('stable1', 0);
  const first = await assignName(db.pool, req);
  assert.equal(first.created, true);
  assert.equal(first.mapping.persistentName, 'stable1disk0');
  const again = await assignName(db.pool, { ...req, operationId: randomUUID() });
  assert.equal(again.created, false);
  assert.equal(again.mapping.persistentName, 'stable1disk0');
});

test('pg-test3 and pgtest3 get distinct names, deterministically', async () => {
  const a = await assignName(db.pool, input('pgtest3', 0));
  const b = await assignName(db.pool, input('pg-test3', 0));
  assert.equal(a.mapping.persistentName, 'pgtest3disk0');
  assert.match(b.mapping.persistentName!, /^pgtest3-[0-9a-f]{6}disk0$/);
  assert.notEqual(a.mapping.persistentName, b.mapping.persistentName);
});

test('the same VM disk cannot be mapped to two volumes', async () => {
  await assignName(db.pool, input('dupvm', 1));
  await assert.rejects(assignName(db.pool, input('dupvm', 1)), DiskAlreadyMappedError);
});

test('50 concurrent attaches across 10 VMs with colliding names: all unique, none lost', async () => {
  // 5 pairs of VMs that clean to the same stem (`db-N` vs `dbN`), disk keys 2000..2004 each.
  const vms = Array.from({ length: 5 }, (_, i) => [`db-${i}`, `db${i}`]).flat();
  const requests = vms.flatMap((vm) =>
    [2000, 2001, 2002, 2003, 2004].map((k) => input(vm, diskIndexFromKey(k))),
  );
  const results = await Promise.all(requests.map((r) => assignName(db.pool, r)));
  const names = results.map((r) => r.mapping.persistentName);
  assert.equal(new Set(names).size, 50, 'all names distinct');
  for (const [i, r] of requests.entries()) {
    const row = await getMapping(db.pool, r.volumeId);
    assert.equal(row?.persistentName, names[i], `volume ${r.volumeId} kept its name`);
    assert.ok(row!.persistentName!.endsWith(`disk${r.diskIndex}`));
  }
});

test('releasing a name only deletes a row this operation created and left untouched', async () => {
  const req = input('rel', 0);
  await assignName(db.pool, req);
  assert.equal(await releaseName(db.pool, req.volumeId, randomUUID()), false, 'other operation: kept');
  assert.ok(await getMapping(db.pool, req.volumeId));
  assert.equal(await releaseName(db.pool, req.volumeId, req.operationId), true);
  assert.equal(await getMapping(db.pool, req.volumeId), undefined);
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  alternativeName,
  baseName,
  cleanVmName,
  diskIndexFromKey,
  exportNameFor,
  mapperPathFor,
  persistentNameSchema,
} from '../../src/domain/naming.js';
import { attachRequest } from '../../src/domain/operations.js';

test('disk index is key - 2000 for every disk, including 2010 that broke the old prefix trim', () => {
  for (let key = 2000; key <= 2015; key++) assert.equal(diskIndexFromKey(key), key - 2000);
  assert.equal(diskIndexFromKey('disk-2010'), 10);
  assert.equal(diskIndexFromKey('2001'), 1);
  assert.equal(diskIndexFromKey(2031), 31);
  assert.throws(() => diskIndexFromKey(1999), /below 2000/);
  assert.throws(() => diskIndexFromKey('disk-20x0'), /not a VMware disk key/);
});

test('VM names are cleaned to the persistent-name alphabet', () => {
  assert.equal(cleanVmName('pgtest3'), 'pgtest3');
  assert.equal(cleanVmName('pg-test3'), 'pgtest3');
  assert.equal(cleanVmName('Web_Server.01'), 'webserver01');
  assert.equal(cleanVmName('../../etc'), 'etc');
  assert.equal(cleanVmName('\n[]=/'), 'vm');
  assert.equal(baseName('pgtest3', 0), 'pgtest3disk0');
  assert.ok(baseName('x'.repeat(300), 15).length <= 64);
});

test('alternatives are deterministic per raw VM name and distinct between colliding VMs', () => {
  const a = alternativeName('pg-test3', 0, 1);
  assert.equal(a, alternativeName('pg-test3', 0, 1));
  assert.notEqual(a, alternativeName('pgtest3', 0, 1));
  assert.notEqual(a, baseName('pg-test3', 0));
  assert.match(a, /^pgtest3-[0-9a-f]{6}disk0$/);
  assert.notEqual(alternativeName('pg-test3', 0, 2), a);
});

test('persistent names refuse anything unsafe for dm, NBD config or paths', () => {
  for (const bad of ['a/b', 'a]b', 'a=b', 'a\nb', '..', '-lead', 'UPPER', 'x'.repeat(65), '']) {
    assert.equal(persistentNameSchema.safeParse(bad).success, false, bad);
  }
  assert.equal(exportNameFor('pgtest3disk0'), 'migration-vol-pgtest3disk0');
  assert.equal(mapperPathFor('pgtest3disk0'), '/dev/mapper/pgtest3disk0');
  assert.throws(() => mapperPathFor('../x'));
});

test('attach requests name the field at fault', () => {
  const ok = {
    volumeId: '8a4f3a2e-1c2b-4d5e-9f60-7a8b9c0d1e2f',
    applianceVmId: '3f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b',
    sourceVmName: 'pgtest3',
    diskKey: 2000,
  };
  assert.equal(attachRequest.safeParse(ok).success, true);
  const cases: [Record<string, unknown>, string][] = [
    [{ volumeId: 'not-a-uuid' }, 'volumeId'],
    [{ sourceVmName: 'a\nb' }, 'sourceVmName'],
    [{ sourceVmName: 'a[1]' }, 'sourceVmName'],
    [{ sourceVmName: '../x' }, 'sourceVmName'],
    [{ sourceVmName: 'x'.repeat(81) }, 'sourceVmName'],
    [{ diskKey: -1 }, 'diskKey'],
    [{ applianceVmId: '' }, 'applianceVmId'],
  ];
  for (const [patch, field] of cases) {
    const r = attachRequest.safeParse({ ...ok, ...patch });
    assert.equal(r.success, false, JSON.stringify(patch));
    assert.equal(r.error!.issues[0]!.path[0], field);
  }
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  cleanVmName,
  describeDisk,
  diskIndexFromKey,
  DISK_INDEX_MAX,
  exportNameFor,
  exportNameSchema,
  isCanonicalVmName,
  mapperPathFor,
  NAME_TAG_LENGTH,
  namingFromEngineVolumeName,
  normalizeVmName,
  persistentNameFor,
  persistentNameSchema,
  PERSISTENT_NAME_MAX,
  VmNameError,
} from '../../src/domain/naming.js';
import { attachRequest, normalizedVmName } from '../../src/domain/operations.js';

// Names that all clean to the stem `pgtest3`: the hostile set the naming rule must keep apart.
const PGTEST3_FAMILY = [
  'pgtest3',
  'PG_TEST3',
  'pg-test3',
  'pg.test3',
  'PgTest3',
  'pg test3',
  'ｐｇｔｅｓｔ３',
  'pg__test3',
  'p-g-t-e-s-t-3',
  'PGTEST3',
  'pg-test-3',
  'pg.test.3',
];

// Characters that must be refused, never stripped: control, zero-width, bidi, separators.
const INVISIBLE = [
  '\u0000',
  '\u0007',
  '\u001b',
  '\u007f',
  '\u0085',
  '\u200b', // zero-width space
  '\u200c',
  '\u200d',
  '\u2060', // word joiner
  '\ufeff', // BOM, inside a name
  '\u200e', // LRM
  '\u200f', // RLM
  '\u202a',
  '\u202d', // LRO
  '\u202e', // RLO
  '\u2066',
  '\u2069',
  '\u2028', // line separator
  '\u2029',
  '\ue000', // private use
];

const nameOf = (raw: string, index: number) => persistentNameFor(normalizeVmName(raw), index);

/** Any VM name the boundary accepts, from ASCII, the pgtest3 family, and random Unicode. */
const acceptedVmName = fc
  .oneof(
    fc.constantFrom(...PGTEST3_FAMILY),
    fc.stringMatching(/^[a-z0-9]{1,45}$/),
    fc.stringMatching(/^[A-Za-z0-9 ._-]{1,80}$/),
    fc.string({ unit: 'grapheme', minLength: 1, maxLength: 40 }),
    fc.string({ unit: 'binary', minLength: 1, maxLength: 30 }),
  )
  .filter((raw) => {
    try {
      normalizeVmName(raw);
      return true;
    } catch {
      return false;
    }
  });
const diskIndexArb = fc.integer({ min: 0, max: DISK_INDEX_MAX });

test('disk index is key - 2000 for every disk, including 2010 that broke the old prefix trim', () => {
  for (let key = 2000; key <= 2015; key++) assert.equal(diskIndexFromKey(key), key - 2000);
  assert.equal(diskIndexFromKey('disk-2010'), 10);
  assert.equal(diskIndexFromKey('2001'), 1);
  assert.equal(diskIndexFromKey(2031), 31);
  assert.throws(() => diskIndexFromKey(1999), /below 2000/);
  assert.throws(() => diskIndexFromKey('disk-20x0'), /not a VMware disk key/);
  assert.equal(describeDisk(0), 'disk key 2000 (disk 0)');
});

test('the rule: canonical names keep <vm>disk<N>, every other name gets a 20-hex tag of its normal form', () => {
  assert.equal(nameOf('pgtest3', 0), 'pgtest3disk0');
  assert.equal(nameOf('pgtest3', 10), 'pgtest3disk10');
  const tagged = nameOf('PG_TEST3', 0);
  assert.match(tagged, new RegExp(`^pgtest3-[0-9a-f]{${NAME_TAG_LENGTH}}disk0$`));
  assert.equal(isCanonicalVmName('pgtest3'), true);
  assert.equal(isCanonicalVmName('pg-test3'), false);
  assert.equal(isCanonicalVmName('x'.repeat(41)), false, 'longer than 40: tagged, so the name stays short');
  // Trimmed and NFC: the spellings of one name are one VM (and one name).
  assert.equal(nameOf('pgtest3 ', 0), nameOf('pgtest3', 0));
  assert.equal(nameOf('caf\u00e9', 1), nameOf('cafe\u0301', 1));
  assert.notEqual(nameOf('café', 1), nameOf('cafe', 1));
});

test('property: every accepted VM name gives a valid dm/NBD name within bounds, the same every time', () => {
  fc.assert(
    fc.property(acceptedVmName, diskIndexArb, (raw, index) => {
      const vm = normalizeVmName(raw);
      assert.equal(normalizeVmName(vm), vm, 'normalizing twice changes nothing');
      assert.doesNotThrow(() => normalizedVmName.parse(vm));
      const name = persistentNameFor(vm, index);
      assert.equal(persistentNameFor(vm, index), name, 'a pure function');
      assert.ok(persistentNameSchema.safeParse(name).success, name);
      assert.ok(name.length <= PERSISTENT_NAME_MAX);
      assert.ok(exportNameSchema.safeParse(exportNameFor(name)).success);
      assert.equal(mapperPathFor(name), `/dev/mapper/${name}`);
      assert.ok(name.endsWith(`disk${index}`));
      assert.equal(name.includes('-'), !isCanonicalVmName(vm), 'the two forms never meet');
    }),
    { numRuns: 2000 },
  );
});

test('property: distinct (VM name, disk) pairs get distinct names, colliding stems included', () => {
  const family = fc.uniqueArray(
    fc.oneof(
      fc.constantFrom(...PGTEST3_FAMILY),
      // Deliberate stem collisions: pgtest3 with separators, case and spaces sprinkled in.
      fc
        .array(fc.constantFrom('', '-', '_', '.', ' ', 'A'), { minLength: 7, maxLength: 7 })
        .map((seps) =>
          [...'pgtest3'].map((c, i) => (seps[i] === 'A' ? c.toUpperCase() : c + seps[i])).join(''),
        ),
      acceptedVmName,
    ),
    { minLength: 2, maxLength: 60, selector: (raw) => normalizeVmName(raw) },
  );
  fc.assert(
    fc.property(family, fc.array(diskIndexArb, { minLength: 1, maxLength: 4 }), (raws, indexes) => {
      const seen = new Map<string, string>();
      for (const raw of raws) {
        for (const index of new Set(indexes)) {
          const name = nameOf(raw, index);
          const pair = `${normalizeVmName(raw)}#${index}`;
          const other = seen.get(name);
          assert.ok(other === undefined || other === pair, `${name}: ${pair} and ${other}`);
          seen.set(name, pair);
        }
      }
    }),
    { numRuns: 300 },
  );
});

/**
 * The database's part of the rule, as a model: UNIQUE(volume), UNIQUE(vm, disk), UNIQUE(name),
 * first writer wins. The name itself comes from the real `persistentNameFor`; the integration
 * test (db-naming) runs the real assignName against MariaDB the same way.
 */
function assignAll(requests: { volume: string; raw: string; index: number }[]) {
  const byName = new Map<string, string>();
  const byDisk = new Map<string, string>();
  const out = new Map<string, string>();
  for (const r of requests) {
    const vm = normalizeVmName(r.raw);
    const name = persistentNameFor(vm, r.index);
    const disk = `${vm}#${r.index}`;
    if (byDisk.has(disk)) out.set(r.volume, `refused: disk held by ${byDisk.get(disk)}`);
    else if (byName.has(name)) out.set(r.volume, `refused: name held by ${byName.get(name)}`);
    else {
      byDisk.set(disk, r.volume);
      byName.set(name, r.volume);
      out.set(r.volume, name);
    }
  }
  return out;
}

test('property: a volume gets the same name in every arrival order and every fresh database', () => {
  const requests = fc
    .uniqueArray(fc.tuple(acceptedVmName, diskIndexArb), {
      minLength: 1,
      maxLength: 40,
      selector: ([raw, index]) => `${normalizeVmName(raw)}#${index}`,
    })
    .map((pairs) => pairs.map(([raw, index], i) => ({ volume: `v${i}`, raw, index })));
  fc.assert(
    fc.property(requests, fc.integer(), fc.integer(), (reqs, seedA, seedB) => {
      const orderA = fc.sample(fc.shuffledSubarray(reqs, { minLength: reqs.length }), {
        seed: seedA,
        numRuns: 1,
      })[0]!;
      const orderB = fc.sample(fc.shuffledSubarray(reqs, { minLength: reqs.length }), {
        seed: seedB,
        numRuns: 1,
      })[0]!;
      const a = assignAll(orderA);
      const b = assignAll(orderB);
      for (const r of reqs) {
        assert.equal(a.get(r.volume), b.get(r.volume), `volume ${r.volume} (${r.raw}, ${r.index})`);
        assert.equal(a.get(r.volume), nameOf(r.raw, r.index), 'named, never refused: the pairs are distinct');
      }
    }),
    { numRuns: 300 },
  );
});

test('property: invisible, control, bidi and surrogate characters are refused, naming the field', () => {
  const poisoned = fc
    .tuple(
      fc.stringMatching(/^[a-z0-9]{0,10}$/),
      fc.oneof(fc.constantFrom(...INVISIBLE), fc.constantFrom('\ud800', '\udbff', '\udc00', '\udfff')),
      fc.stringMatching(/^[a-z0-9]{1,10}$/),
    )
    .map(([a, bad, b]) => a + bad + b);
  fc.assert(
    fc.property(poisoned, (raw) => {
      assert.throws(() => normalizeVmName(raw), VmNameError);
      const r = attachRequest.safeParse({ ...okAttach, sourceVmName: raw });
      assert.equal(r.success, false, JSON.stringify(raw));
      assert.deepEqual(r.error!.issues[0]!.path, ['sourceVmName']);
      assert.match(r.error!.issues[0]!.message, /surrogate|control, invisible or bidirectional/);
    }),
    { numRuns: 500 },
  );
});

test('spaces other than U+0020 inside a name are refused, naming the code point; plain spaces are kept', () => {
  for (const space of ['\u00a0', '\u3000', '\u2003', '\u202f', '\u1680']) {
    const r = attachRequest.safeParse({ ...okAttach, sourceVmName: `pg${space}test3` });
    assert.equal(r.success, false, JSON.stringify(space));
    assert.deepEqual(r.error!.issues[0]!.path, ['sourceVmName']);
    assert.match(r.error!.issues[0]!.message, /space U\+[0-9A-F]{4} at position 3: only the plain space/);
  }
  assert.equal(normalizeVmName('pg test3'), 'pg test3');
});

const okAttach = {
  volumeId: '8a4f3a2e-1c2b-4d5e-9f60-7a8b9c0d1e2f',
  applianceVmId: '3f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b',
  sourceVmName: 'pgtest3',
  diskKey: 2000,
};

test('attach requests name the field at fault, with the right reason', () => {
  assert.equal(attachRequest.safeParse(okAttach).success, true);
  assert.equal(
    attachRequest.parse({ ...okAttach, sourceVmName: ' caf\u0065\u0301 ' }).sourceVmName,
    'caf\u00e9',
  );
  const { sourceVmName: _vm, diskKey: _key, ...unnamed } = okAttach;
  assert.equal(attachRequest.safeParse(unnamed).success, true, 'both left out: the volume keeps its name');
  const cases: [Record<string, unknown>, string, RegExp][] = [
    [{ volumeId: 'not-a-uuid' }, 'volumeId', /./],
    [{ sourceVmName: 'a\nb' }, 'sourceVmName', /control/],
    [{ sourceVmName: 'a[1]' }, 'sourceVmName', /"\["/],
    [{ sourceVmName: '../x' }, 'sourceVmName', /"\/"/],
    [{ sourceVmName: '.' }, 'sourceVmName', /must not be "\." or "\.\."/],
    [{ sourceVmName: '   ' }, 'sourceVmName', /empty/],
    [{ sourceVmName: 'x'.repeat(81) }, 'sourceVmName', /at most 80/],
    [{ diskKey: -1 }, 'diskKey', /VMware disk key/],
    [{ diskKey: undefined }, 'diskKey', /come together/],
    [{ applianceVmId: '' }, 'applianceVmId', /./],
  ];
  for (const [patch, field, why] of cases) {
    const r = attachRequest.safeParse({ ...okAttach, ...patch });
    assert.equal(r.success, false, JSON.stringify(patch));
    assert.equal(r.error!.issues[0]!.path[0], field);
    assert.match(r.error!.issues[0]!.message, why, JSON.stringify(patch));
  }
  assert.equal(normalizedVmName.safeParse('pgtest3 ').success, false, 'inside the system: stored form only');
});

test("the engine's volume names carry the VM and the disk unit; anything ambiguous carries nothing", () => {
  assert.deepEqual(namingFromEngineVolumeName('migration-pgtest3-pgtest3-disk-0'), {
    sourceVmName: 'pgtest3',
    diskIndex: 0,
  });
  assert.deepEqual(namingFromEngineVolumeName('migration-web-01-web-01-disk-2'), {
    sourceVmName: 'web-01',
    diskIndex: 2,
  });
  assert.equal(
    namingFromEngineVolumeName('migration-a-b-disk-0'),
    undefined,
    'two names: the split is unknown',
  );
  assert.equal(namingFromEngineVolumeName('data-volume-7'), undefined);
  assert.equal(namingFromEngineVolumeName('migration-x-x-disk-99999'), undefined);
});

test('persistent names refuse anything unsafe for dm, NBD config or paths', () => {
  for (const bad of ['a/b', 'a]b', 'a=b', 'a\nb', '..', '-lead', 'UPPER', 'x'.repeat(65), '']) {
    assert.equal(persistentNameSchema.safeParse(bad).success, false, bad);
  }
  assert.equal(exportNameFor('pgtest3disk0'), 'migration-vol-pgtest3disk0');
  assert.equal(mapperPathFor('pgtest3disk0'), '/dev/mapper/pgtest3disk0');
  assert.throws(() => mapperPathFor('../x'));
  assert.equal(cleanVmName('Web_Server.01'), 'webserver01');
  assert.equal(cleanVmName('[]=/'), 'vm');
});

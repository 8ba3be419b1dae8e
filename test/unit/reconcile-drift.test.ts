import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  computeDrift,
  volumesToRepair,
  type DesiredVolume,
  type DriftKind,
  type Inventory,
} from '../../src/reconcile/drift.js';

const APPLIANCE = 'aaaaaaaa-0000-0000-0000-000000000001';
const TARGET = 'bbbbbbbb-0000-0000-0000-000000000002';
const VOL = '8a4f3a2e-1c2b-4d5e-9f60-7a8b9c0d1e2f';
const SERIAL = '8a4f3a2e1c2b4d5e9f60';
/** The same export under the name the migration engine parses (its volume id). */
const ENGINE_EXPORT = `migration-vol-${VOL}`;
const PRIMARY = { exportName: 'migration-vol-pgtest3disk0', targetPath: '/dev/mapper/pgtest3disk0' };
const opts = { applianceVmId: APPLIANCE, backend: 'nbdkit-dir' as const };

function vol(p: Partial<DesiredVolume> = {}): DesiredVolume {
  return {
    volumeId: VOL,
    persistentName: 'pgtest3disk0',
    location: 'appliance',
    targetVmId: null,
    devicePath: '/dev/vdb',
    dmState: 'linear',
    sizeBytes: 1 << 30,
    serial: SERIAL,
    exportName: 'migration-vol-pgtest3disk0',
    ...p,
  };
}

/** The in-sync world for vol(): device present, dm linear over it, export configured and served. */
function inSync(p: Partial<Inventory> = {}): Inventory {
  return {
    dm: [
      {
        name: 'pgtest3disk0',
        table: { kind: 'linear', sectors: 2097152, device: '254:16', offset: 0 },
        openCount: 0,
        uuid: 'VOLLIFE-pgtest3disk0',
      },
    ],
    devices: [{ kernelName: 'vdb', devicePath: '/dev/vdb', serial: SERIAL, devNumber: '254:16' }],
    exportsConfigured: [PRIMARY, { exportName: ENGINE_EXPORT, targetPath: '/dev/mapper/pgtest3disk0' }],
    exportsServed: ['migration-vol-pgtest3disk0', ENGINE_EXPORT],
    ...p,
  };
}
const attached = { attachments: { [VOL]: APPLIANCE } };
const kinds = (fs: { kind: DriftKind }[]) => fs.map((f) => f.kind).sort();

test('an in-sync appliance has no findings', () => {
  assert.deepEqual(computeDrift([vol()], inSync(), attached, opts), []);
  const away = vol({ location: 'target', targetVmId: TARGET, devicePath: null, dmState: 'error' });
  const inv = inSync({
    devices: [],
    dm: [
      {
        name: 'pgtest3disk0',
        table: { kind: 'error', sectors: 2097152 },
        openCount: 0,
        uuid: 'VOLLIFE-pgtest3disk0',
      },
    ],
  });
  assert.deepEqual(computeDrift([away], inv, { attachments: { [VOL]: TARGET } }, opts), []);
});

test('each device-level drift gets a repair decision', () => {
  const cases: [Partial<Inventory>, DriftKind][] = [
    [{ dm: [] }, 'dm-missing'],
    [
      {
        dm: [
          {
            name: 'pgtest3disk0',
            table: { kind: 'linear', sectors: 1, device: '254:32', offset: 0 },
            openCount: 1,
            uuid: 'VOLLIFE-pgtest3disk0',
          },
        ],
      },
      'dm-wrong-device',
    ],
    [
      {
        dm: [
          {
            name: 'pgtest3disk0',
            table: { kind: 'error', sectors: 1 },
            openCount: 0,
            uuid: 'VOLLIFE-pgtest3disk0',
          },
        ],
      },
      'dm-error-while-attached',
    ],
    [
      { exportsConfigured: [inSync().exportsConfigured[1]!], exportsServed: [ENGINE_EXPORT] },
      'export-missing',
    ],
    // The engine's name alone missing, or pointing elsewhere: the same repairs.
    [{ exportsConfigured: [PRIMARY], exportsServed: [PRIMARY.exportName] }, 'export-missing'],
    [
      { exportsConfigured: [PRIMARY, { exportName: ENGINE_EXPORT, targetPath: '/dev/vdb' }] },
      'export-wrong-target',
    ],
    [
      { exportsConfigured: [{ ...PRIMARY, targetPath: '/dev/vdb' }, inSync().exportsConfigured[1]!] },
      'export-wrong-target',
    ],
  ];
  for (const [patch, kind] of cases) {
    const f = computeDrift([vol()], inSync(patch), attached, opts);
    assert.deepEqual(kinds(f), [kind], kind);
    assert.equal(f[0]!.decision, 'repair');
    assert.equal(f[0]!.volumeId, VOL);
  }
});

test('a linear table for a volume that is away is pointed at an error target', () => {
  const away = vol({ location: 'detached', devicePath: null, dmState: 'error' });
  const f = computeDrift([away], inSync({ devices: [] }), { attachments: { [VOL]: null } }, opts);
  assert.deepEqual(kinds(f), ['dm-linear-while-away']);
});

test('orphans: config and idle dm device are removed, an open one and foreign dm devices are not', () => {
  const inv = inSync({
    dm: [
      ...inSync().dm,
      {
        name: 'oldvmdisk3',
        table: { kind: 'linear', sectors: 8, device: '254:48', offset: 0 },
        openCount: 0,
        uuid: 'VOLLIFE-oldvmdisk3',
      },
      {
        name: 'busyvmdisk1',
        table: { kind: 'error', sectors: 8 },
        openCount: 2,
        uuid: 'VOLLIFE-busyvmdisk1',
      },
      {
        name: 'vg0-root',
        table: { kind: 'linear', sectors: 8, device: '8:1', offset: 0 },
        openCount: 0,
        uuid: 'LVM-abc',
      },
      // Named like ours, but not created by us: ownership is the dm UUID, not the name.
      { name: 'foreignvg-datadisk1', table: { kind: 'error', sectors: 8 }, openCount: 0, uuid: '' },
    ],
    exportsConfigured: [
      ...inSync().exportsConfigured,
      { exportName: 'migration-vol-ghostdisk0', targetPath: '/dev/mapper/ghostdisk0' },
      // The engine's name of a volume we hold no row for: an orphan too.
      { exportName: `migration-vol-${TARGET}`, targetPath: '/dev/mapper/ghostdisk0' },
    ],
    exportsServed: [...inSync().exportsServed!, 'migration-vol-ghostdisk0', `migration-vol-${TARGET}`],
  });
  const f = computeDrift([vol()], inv, attached, opts);
  assert.deepEqual(kinds(f), ['dm-orphan', 'dm-orphan-open', 'export-orphan', 'export-orphan']);
  assert.equal(f.find((x) => x.kind === 'dm-orphan')!.subject, 'oldvmdisk3');
  assert.equal(f.find((x) => x.kind === 'dm-orphan-open')!.decision, 'report');
  assert.ok(
    !f.some((x) => x.subject === 'vg0-root' || x.subject === 'foreignvg-datadisk1'),
    'devices that are not ours are never touched, whatever their name',
  );
});

test('reported, never repaired: unknown VM, location mismatch, stale server memory, missing device', () => {
  const unknownVm = computeDrift(
    [vol()],
    inSync(),
    { attachments: { [VOL]: 'cccccccc-0000-0000-0000-000000000003' } },
    opts,
  );
  assert.deepEqual(kinds(unknownVm), ['cloudstack-unknown-vm']);
  assert.equal(unknownVm[0]!.decision, 'report');

  const mismatch = computeDrift([vol()], inSync(), { attachments: { [VOL]: null } }, opts);
  assert.deepEqual(kinds(mismatch), ['cloudstack-location-mismatch']);

  const stale = computeDrift(
    [vol()],
    inSync({ exportsServed: ['migration-vol-pgtest3disk0', ENGINE_EXPORT, 'migration-vol-gonedisk0'] }),
    attached,
    {
      ...opts,
      backend: 'nbd-server',
    },
  );
  assert.deepEqual(kinds(stale), ['served-stale']);
  assert.match(stale[0]!.remedy, /restart/);

  const noDevice = computeDrift([vol()], inSync({ devices: [] }), attached, opts);
  assert.deepEqual(kinds(noDevice), ['device-missing']);

  const down = computeDrift([vol()], inSync({ exportsServed: null }), attached, opts);
  assert.deepEqual(kinds(down), ['nbd-server-down']);
});

test('rows from the old daemon without a name are adopted', () => {
  const f = computeDrift(
    [vol({ persistentName: null, exportName: null })],
    inSync({ dm: [], exportsConfigured: [], exportsServed: [] }),
    attached,
    opts,
  );
  assert.deepEqual(kinds(f), ['unnamed-volume']);
  assert.deepEqual(volumesToRepair(f), [VOL]);
});

test('volumesToRepair lists each volume once and skips reports and orphans', () => {
  const f = computeDrift(
    [vol()],
    inSync({ dm: [], exportsConfigured: [], exportsServed: [] }),
    attached,
    opts,
  );
  assert.deepEqual(kinds(f), ['dm-missing', 'export-missing', 'export-missing']);
  assert.deepEqual(
    f
      .filter((x) => x.kind === 'export-missing')
      .map((x) => x.subject)
      .sort(),
    [ENGINE_EXPORT, 'migration-vol-pgtest3disk0'],
  );
  assert.deepEqual(volumesToRepair(f), [VOL]);
});

test('an export hidden because its dm device is missing is not reported on its own', () => {
  const f = computeDrift([vol()], inSync({ dm: [], exportsServed: [] }), attached, opts);
  assert.deepEqual(kinds(f), ['dm-missing']);
  const notServed = computeDrift([vol()], inSync({ exportsServed: [] }), attached, opts);
  assert.deepEqual(kinds(notServed), ['export-not-served', 'export-not-served']);
});

test('the inventory is packed well under the 2 MiB payload limit at 10,000 volumes, and round-trips', async () => {
  const { packInventory, unpackInventory } = await import('../../src/reconcile/inventory-codec.js');
  const inv = inSync();
  for (let i = 0; i < 10_000; i++) {
    inv.dm.push({
      name: `vm${i}disk0`,
      table: { kind: 'linear', sectors: 2097152, device: `254:${i}`, offset: 0 },
      openCount: 0,
      uuid: `VOLLIFE-vm${i}disk0`,
    });
    inv.exportsConfigured.push({
      exportName: `migration-vol-vm${i}disk0`,
      targetPath: `/dev/mapper/vm${i}disk0`,
    });
  }
  const packed = packInventory(inv);
  assert.ok(JSON.stringify(inv).length > 2 * 2 ** 20 * 0.5);
  assert.ok(JSON.stringify(packed).length < 2 ** 20, `packed ${JSON.stringify(packed).length} bytes`);
  assert.deepEqual(unpackInventory(packed), inv);
  assert.throws(() => unpackInventory({ encoding: 'zstd' as 'gzip-json', data: '' }), /encoding/);
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ExportRecord } from '../../src/db/exports.js';
import type { MappingRecord } from '../../src/db/mappings.js';
import { engineDrift } from '../../src/engine-contract/engine-drift.js';
import {
  engineDevicePath,
  engineExportOf,
  engineMappingOf,
  isHeld,
  osseaChange,
} from '../../src/engine-contract/engine-view.js';

const APPLIANCE = 'aaaaaaaa-0000-4000-8000-000000000001';
const VM = 'bbbbbbbb-0000-4000-8000-000000000002';
const V1 = '11111111-0000-4000-8000-000000000001';
const V2 = '22222222-0000-4000-8000-000000000002';

function row(p: Partial<MappingRecord> = {}): MappingRecord & { persistentName: string } {
  return {
    volumeId: V1,
    sourceVmName: 'pgdb',
    diskIndex: 0,
    applianceVmId: APPLIANCE,
    location: 'appliance',
    targetVmId: null,
    cloudstackDeviceId: 1,
    devicePath: '/dev/vdb',
    virtioSerial: '111111110000400080000',
    sizeBytes: 2 ** 30,
    persistentName: 'pgdbdisk0',
    mapperPath: '/dev/mapper/pgdbdisk0',
    dmState: 'linear',
    lastOperationId: null,
    version: 3,
    ...p,
  } as MappingRecord & { persistentName: string };
}
const exp = (volumeId = V1, name = 'pgdbdisk0'): ExportRecord => ({
  exportName: `migration-vol-${name}`,
  volumeId,
  targetPath: `/dev/mapper/${name}`,
  configPath: `/run/volume-lifecycle/exports/migration-vol-${name}`,
  backend: 'nbdkit-dir',
  status: 'active',
});
const away = (p: Partial<MappingRecord> = {}) =>
  row({ location: 'target', targetVmId: VM, devicePath: null, dmState: 'error', ...p });

test('device_path: the mapper path here, a marker with the volume id on a VM, one for detached; never two alike', () => {
  assert.equal(engineDevicePath(row()), '/dev/mapper/pgdbdisk0');
  assert.equal(engineDevicePath(away()), `remote-vm-${VM}-vol-${V1}`);
  assert.equal(engineDevicePath(away({ cloudstackDeviceId: 0 })), `remote-vm-root-${VM}-vol-${V1}`);
  assert.equal(engineDevicePath(row({ location: 'detached', dmState: 'error' })), `detached-vol-${V1}`);
  const twoDisks = [away(), away({ volumeId: V2, persistentName: 'pgdbdisk1', cloudstackDeviceId: 2 })];
  assert.equal(new Set(twoDisks.map(engineDevicePath)).size, 2, 'two disks of one VM');
});

test('held: once anywhere, or detached with its dm device or export living on; not while only created', () => {
  const created = row({
    location: 'detached',
    dmState: 'absent',
    devicePath: null,
    cloudstackDeviceId: null,
  });
  assert.equal(isHeld(created, false), false);
  assert.equal(isHeld(created, true), true);
  assert.equal(isHeld(row({ location: 'detached', dmState: 'error' }), false), true);
  assert.equal(isHeld(row(), false), true);
  assert.equal(
    isHeld(row({ persistentName: null }), true),
    false,
    'unnamed rows are the old daemon’s until named',
  );
});

test('the mapping row: VM, states and device id per location', () => {
  assert.deepEqual(engineMappingOf(row()), {
    vm_id: APPLIANCE,
    cloudstack_device_id: 1,
    requires_device_correlation: 1,
    device_path: '/dev/mapper/pgdbdisk0',
    cloudstack_state: 'attached',
    linux_state: 'detected',
    size: 2 ** 30,
    persistent_device_name: 'pgdbdisk0',
    symlink_path: '/dev/mapper/pgdbdisk0',
  });
  const t = engineMappingOf(away({ cloudstackDeviceId: 0 }));
  assert.deepEqual(
    [t.vm_id, t.cloudstack_device_id, t.requires_device_correlation, t.linux_state],
    [VM, 0, 0, 'n/a'],
  );
  const d = engineMappingOf(row({ location: 'detached', dmState: 'error', cloudstackDeviceId: 3 }));
  assert.deepEqual([d.vm_id, d.cloudstack_state, d.cloudstack_device_id], [APPLIANCE, 'detached', null]);
  assert.equal(engineExportOf(exp(), 10809).export_name, `migration-vol-${V1}`);
});

test('ossea_volumes changes only when the volume moves onto, off or between VMs', () => {
  const created = row({ location: 'detached', dmState: 'absent', devicePath: null });
  assert.equal(osseaChange(undefined, created), undefined, 'a new row, detached: nothing');
  assert.deepEqual(osseaChange(created, row()), { device_path: '/dev/mapper/pgdbdisk0', status: 'attached' });
  assert.equal(
    osseaChange(row(), row({ devicePath: '/dev/vdc', version: 4 })),
    undefined,
    'a device change under dm',
  );
  assert.deepEqual(osseaChange(row(), away()), {
    device_path: `remote-vm-${VM}-vol-${V1}`,
    status: 'attached',
  });
  assert.deepEqual(osseaChange(away(), row({ location: 'detached', dmState: 'error' })), {
    device_path: null,
    status: 'detached',
  });
  assert.deepEqual(osseaChange(row(), undefined), { device_path: null, status: 'detached' }, 'deleted');
});

test('engine drift: each kind, kept and orphan reported, repairs held back while CloudStack disagrees', () => {
  const good = {
    mappings: [{ volume_uuid: V1, operation_mode: 'oma', ...engineMappingOf(row()) }],
    exports: [{ ...engineExportOf(exp(), 10809) }],
  };
  const opts = { nbdPort: 10809, database: 'migratekit_oma', known: new Set([V1]) };
  const ours = [{ mapping: row(), exported: exp() }];
  assert.deepEqual(engineDrift(ours, good, opts), []);

  const kinds = (r: ReturnType<typeof engineDrift>) => r.map((f) => `${f.kind}:${f.decision}`).sort();
  assert.deepEqual(kinds(engineDrift(ours, { mappings: [], exports: [] }, opts)), [
    'engine-export-missing:repair',
    'engine-mapping-missing:repair',
  ]);
  const stale = {
    mappings: [{ ...good.mappings[0]!, device_path: '/dev/disk/by-id/virtio-x', operation_mode: 'failover' }],
    exports: [
      { ...good.exports[0]!, port: 1 },
      { ...good.exports[0]!, export_name: 'migration-vol-pgdbdisk0' },
      { volume_uuid: V2, volume_id: V2, export_name: `migration-vol-${V2}` },
    ],
  };
  const found = engineDrift(ours, stale, opts);
  assert.deepEqual(kinds(found), [
    'engine-export-orphan:repair',
    'engine-export-stale:repair',
    'engine-kept:report',
    'engine-mapping-stale:repair',
    'engine-row-orphan:report',
  ]);
  assert.deepEqual(
    (
      found.find((f) => f.kind === 'engine-mapping-stale')!.details as { fields: { field: string }[] }
    ).fields.map((f) => f.field),
    ['device_path'],
  );
  const held = engineDrift(ours, { mappings: [], exports: [] }, { ...opts, hold: new Set([V1]) });
  assert.ok(
    held.every((f) => f.decision === 'report'),
    'no repair beside a CloudStack finding',
  );
});

import type { MappingPatch, MappingRecord } from '../src/db/mappings.js';
import type { VolumeAccess, WorkflowContext } from '../src/domain/operations.js';
import { diskSerialFor } from '../src/cloudstack/serial.js';
import type { Activities } from './proxies.js';
import { engineExportNameOf, exportNameOf, mapperPathOf } from '../src/domain/device-names.js';
import { permanentFailure, type Saga } from './saga.js';
import type { DmState } from '../src/domain/mapping.js';

/**
 * The step library every saga and reconciliation's repair use: single steps (map, error,
 * record, export) and the sequences built of them, bringing a volume onto the appliance
 * (attach, failback) and taking it off (detach, failover). Each step: compensation first, then
 * action. One path to make a volume right, whoever asks.
 */

export function requireName(
  m: MappingRecord | null,
  volumeId: string,
): MappingRecord & { persistentName: string } {
  if (!m)
    throw permanentFailure(`volume ${volumeId} has no device mapping: attach it first`, 'VolumeNotFound');
  if (!m.persistentName) {
    throw permanentFailure(
      `volume ${volumeId} has no persistent name yet (reconciliation adopts it)`,
      'VolumeNotFound',
    );
  }
  return m as MappingRecord & { persistentName: string };
}

/**
 * The `validate` step of the sagas that move a mapped volume: its mapping (which must have a
 * persistent name) and CloudStack's view of it (which must exist).
 */
export async function validateMapped(saga: Saga, acts: Activities, ctx: WorkflowContext) {
  const { mapping, volume } = await saga.step('validate', async () => ({
    mapping: await acts.control.dbGetMapping(ctx.volumeId),
    volume: await acts.control.csGetVolume(ctx.volumeId),
  }));
  const m = requireName(mapping, ctx.volumeId);
  saga.describe({ persistentName: m.persistentName, vmName: m.sourceVmName });
  if (!volume)
    throw permanentFailure(`volume ${ctx.volumeId} does not exist in CloudStack`, 'VolumeNotFound');
  return { m, volume };
}

/** Point the dm device at whatever device now carries the volume's serial, if any. */
async function relinkToCurrentDevice(acts: Activities, name: string, serial: string): Promise<void> {
  const dev = await acts.host.hostFindBySerial(serial);
  if (dev) await acts.host.hostDmEnsureLinear({ name, devicePath: dev.devicePath });
}

/**
 * CloudStack attach to the appliance → correlate → resolve conflicts → dm map → record → export.
 * `attachedBefore`: the volume was on the appliance already (then attach is not undone).
 */
export async function bringToAppliance(
  saga: Saga,
  acts: Activities,
  ctx: WorkflowContext,
  a: { name: string; sizeBytes: number; attachedBefore: boolean },
): Promise<VolumeAccess> {
  const { cloudstack, control, host, correlation } = acts;
  const serial = diskSerialFor(ctx.volumeId);
  const devicesBefore = await host.hostListDevices();

  const attached = await saga.step(
    'cloudstack-attach',
    () => cloudstack.csAttach({ volumeId: ctx.volumeId, vmId: ctx.applianceVmId }),
    a.attachedBefore
      ? undefined
      : () => cloudstack.csDetach({ volumeId: ctx.volumeId, fromVmId: ctx.applianceVmId }),
  );

  const device = await saga.step('correlate', () =>
    correlation.hostCorrelate({
      serial,
      expectedSizeBytes: a.sizeBytes,
      devicesBefore,
      timeoutMs: ctx.correlationTimeoutMs,
    }),
  );

  await saga.writeStep('resolve-conflicts', async (audit) => ({
    dm: await host.hostResolveConflicts({ name: a.name, devicePath: device.devicePath }),
    rows: await control.dbClearStaleDevicePath({
      devicePath: device.devicePath,
      exceptVolumeId: ctx.volumeId,
      audit,
    }),
  }));

  const exportName = exportNameOf(a.name);
  // What the next three steps need to know beforehand, read at once: the appliance's side in one
  // host call, ours by two local reads beside it. Runs started before this keep theirs: two host
  // calls beside the local reads (each host completion its own workflow task), or, before that,
  // every read one by one where it is used.
  const reads = acts.has('volume-reads-one-host-call')
    ? await Promise.all([
        host.hostVolumeState({ name: a.name, exportName }),
        control.dbGetMapping(ctx.volumeId),
        control.dbGetExport(ctx.volumeId),
      ]).then(([h, m, e]) => [h.dmTable, m, h.exportConfigured, e] as const)
    : acts.has('attach-reads-in-parallel')
      ? await Promise.all([
          host.hostDmTable(a.name),
          control.dbGetMapping(ctx.volumeId),
          host.hostExportConfigured(exportName),
          control.dbGetExport(ctx.volumeId),
        ])
      : undefined;
  await mapDevice(saga, acts, a.name, device.devicePath, reads ? reads[0] : await host.hostDmTable(a.name));

  const before = requireName(reads ? reads[1] : await control.dbGetMapping(ctx.volumeId), ctx.volumeId);
  await recordMapping(saga, acts, ctx, 'record-mapping', before, {
    location: 'appliance',
    targetVmId: null,
    // Histories of runs before the field carry none: the row keeps what it had.
    ...(attached.deviceId !== undefined ? { cloudstackDeviceId: attached.deviceId } : {}),
    devicePath: device.devicePath,
    dmState: 'linear',
  });

  const ensured = await ensureExport(saga, acts, ctx, a.name, {
    configured: reads ? reads[2] : await host.hostExportConfigured(exportName),
    row: reads ? reads[3] : await control.dbGetExport(ctx.volumeId),
  });

  return {
    volumeId: ctx.volumeId,
    persistentName: a.name,
    devicePath: device.devicePath,
    mapperPath: mapperPathOf(a.name),
    exportName,
    nbdUri: ensured.uri,
  };
}

/**
 * dm → error target (the export stays and answers I/O errors, never stale data) → CloudStack
 * detach from the appliance (and wait until the kernel has let the device go).
 */
export async function takeOffAppliance(
  saga: Saga,
  acts: Activities,
  ctx: WorkflowContext,
  m: MappingRecord & { persistentName: string },
): Promise<void> {
  const { cloudstack, host, correlation } = acts;
  const name = m.persistentName;
  const serial = diskSerialFor(ctx.volumeId);
  await errorDevice(saga, acts, name, m.sizeBytes, () => relinkToCurrentDevice(acts, name, serial));
  await saga.step(
    'cloudstack-detach',
    async () => {
      await cloudstack.csDetach({ volumeId: ctx.volumeId, fromVmId: ctx.applianceVmId });
      await host.hostWaitGone({ serial, timeoutMs: ctx.correlationTimeoutMs });
    },
    async () => {
      await cloudstack.csAttach({ volumeId: ctx.volumeId, vmId: ctx.applianceVmId });
      await correlation.hostCorrelate({
        serial,
        expectedSizeBytes: m.sizeBytes,
        timeoutMs: ctx.correlationTimeoutMs,
      });
    },
  );
}

/**
 * Record a new location with compare-and-swap; compensation restores the row as the saga's
 * validate step read it (`validated`: the steps between change only devices and CloudStack).
 * Not the row read here, beside the write: this is a saga's last step, and when a cancel arrives
 * while its workflow task runs, the server refuses the task that would close the workflow and its
 * local steps run again — that second read sees this saga's own write, and an undo restoring it
 * kept the new row (seen in the lab: detach and failover cancelled at record-location). The read
 * here gives the compare-and-swap its version (the same commands as before this rule: no patch).
 */
export async function recordLocation(
  saga: Saga,
  acts: Activities,
  ctx: WorkflowContext,
  validated: MappingRecord,
  patch: Required<Omit<MappingPatch, 'sizeBytes' | 'dmState' | 'cloudstackDeviceId'>> &
    Pick<MappingPatch, 'cloudstackDeviceId'> & { dmState: Exclude<DmState, 'absent'> },
): Promise<void> {
  const now = requireName(await acts.control.dbGetMapping(ctx.volumeId), ctx.volumeId);
  await recordMapping(saga, acts, ctx, 'record-location', validated, patch, now.version);
}

/** dm device `name` → linear over `devicePath`. Undo: the table it had before, or none. */
export async function mapDevice(
  saga: Saga,
  acts: Activities,
  name: string,
  devicePath: string,
  previousTable: Awaited<ReturnType<Activities['host']['hostDmTable']>>,
): Promise<void> {
  const { host } = acts;
  await saga.step(
    'dm-map',
    () => host.hostDmEnsureLinear({ name, devicePath }),
    () =>
      previousTable ? host.hostDmEnsureTable({ name, table: previousTable }) : host.hostDmRemove({ name }),
  );
}

/** dm device `name` → error target of the volume's size (its export answers EIO, never stale data). */
export async function errorDevice(
  saga: Saga,
  acts: Activities,
  name: string,
  sizeBytes: number,
  undo: () => Promise<unknown>,
): Promise<void> {
  await saga.step(
    'dm-error',
    () => acts.host.hostDmEnsureError({ name, sectors: Math.floor(sizeBytes / 512) }),
    undo,
  );
}

/**
 * The mapping row, compare-and-swap against `expectedVersion` (`before`'s by default);
 * compensation restores `before`.
 */
export async function recordMapping(
  saga: Saga,
  acts: Activities,
  ctx: WorkflowContext,
  step: 'record-mapping' | 'record-location',
  before: MappingRecord,
  patch: MappingPatch,
  expectedVersion = before.version,
): Promise<void> {
  await saga.writeStep(
    step,
    (audit) =>
      acts.control.dbUpdateMapping({
        volumeId: ctx.volumeId,
        expectedVersion,
        operationId: ctx.operationId,
        patch,
        audit,
      }),
    () => acts.control.dbRestoreMapping({ before, operationId: ctx.operationId }),
  );
}

/**
 * The volume's export on the appliance (pointing at its dm device, under its persistent name and
 * the engine's), and its row. `before`: what
 * existed beforehand, so the undo removes only what this run created; without it (repair: the
 * export is what the database says must exist) nothing is undone.
 */
export async function ensureExport(
  saga: Saga,
  acts: Activities,
  ctx: WorkflowContext,
  name: string,
  before?: { configured: boolean; row: unknown },
) {
  const { control, host } = acts;
  const exportName = exportNameOf(name);
  const targetPath = mapperPathOf(name);
  // Also under the name the migration engine parses (migration-vol-<volume id>), same device.
  const aliases = [engineExportNameOf(ctx.volumeId)];
  return saga.writeStep(
    'ensure-export',
    async (audit) => {
      const r = await host.hostExportEnsure({ exportName, targetPath, aliases });
      await control.dbUpsertExport({
        exportName,
        volumeId: ctx.volumeId,
        targetPath,
        configPath: r.configPath,
        backend: r.backend,
        status: 'active',
        audit,
      });
      return r;
    },
    before &&
      (async () => {
        if (!before.configured)
          await host.hostExportRemove({ exportName, onlyIfTarget: targetPath, aliases });
        if (!before.row) await control.dbDeleteExport({ volumeId: ctx.volumeId });
      }),
  );
}

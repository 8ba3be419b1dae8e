import { CancellationScope, isCancellation } from '@temporalio/workflow';
import type { ExportRecord } from '../src/db/exports.js';
import type { MappingPatch, MappingRecord } from '../src/db/mappings.js';
import type { VolumeAccess, WorkflowContext } from '../src/domain/operations.js';
import { diskSerialFor } from '../src/cloudstack/serial.js';
import type { Activities } from './proxies.js';
import { engineExportNameOf, exportNameOf, mapperPathOf } from '../src/domain/device-names.js';
import { permanentFailure, type Saga } from './saga.js';
import type { DmState } from '../src/domain/mapping.js';

/**
 * The step library every saga and reconciliation's repair use, and the only code that runs a
 * saga step (a lint rule keeps `saga.step` here): single steps (name, map, error, record,
 * export, CloudStack calls) and the sequences built of them, bringing a volume onto the
 * appliance (attach, failback) and taking it off (detach, failover). Each step: compensation
 * first, then action; its reversion strategy is in brackets. A saga is a list of these.
 * One path to make a volume right, whoever asks.
 */

type Volume = NonNullable<Awaited<ReturnType<Activities['control']['csGetVolume']>>>;
type Named = MappingRecord & { persistentName: string };

export function requireName(m: MappingRecord | null, volumeId: string): Named {
  if (!m)
    throw permanentFailure(`volume ${volumeId} has no device mapping: attach it first`, 'VolumeNotFound');
  if (!m.persistentName) {
    throw permanentFailure(
      `volume ${volumeId} has no persistent name yet (reconciliation adopts it)`,
      'VolumeNotFound',
    );
  }
  return m as Named;
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
  m: Named,
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

/**
 * dm device `name` → error target of the volume's size (its export answers EIO, never stale data).
 * [`undo`, when given: the device as it was]
 */
export async function errorDevice(
  saga: Saga,
  acts: Activities,
  name: string,
  sizeBytes: number,
  undo?: () => Promise<unknown>,
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

// --- validate: the reads an operation decides on; they change nothing -----------------------

/** `validate`: CloudStack's view of the volume, which must exist. */
export async function validateVolume(saga: Saga, acts: Activities, ctx: WorkflowContext): Promise<Volume> {
  const volume = await saga.step('validate', () => acts.control.csGetVolume(ctx.volumeId));
  if (!volume)
    throw permanentFailure(`volume ${ctx.volumeId} does not exist in CloudStack`, 'VolumeNotFound');
  return volume;
}

/** `validate` of a delete: everything we and CloudStack know of the volume, any of it absent. */
export function validateAny(saga: Saga, acts: Activities, ctx: WorkflowContext) {
  const { control } = acts;
  return saga.step('validate', async () => ({
    mapping: await control.dbGetMapping(ctx.volumeId),
    volume: await control.csGetVolume(ctx.volumeId),
    exportRow: await control.dbGetExport(ctx.volumeId),
  }));
}

/** `validate` of a repair: our row, which is what the repair converges to. */
export function validateRow(saga: Saga, acts: Activities, ctx: WorkflowContext) {
  return saga.step('validate', () => acts.control.dbGetMapping(ctx.volumeId));
}

/** `validate` of a create: the name the volume will have is free (else refuse, before anything). */
export async function validateNameFree(
  saga: Saga,
  acts: Activities,
  a: { sourceVmName?: string; diskIndex?: number; volumeName: string },
): Promise<string> {
  const name = await saga.step('validate', () => acts.control.dbCheckName(a));
  saga.describe({ persistentName: name, ...(a.sourceVmName ? { vmName: a.sourceVmName } : {}) });
  return name;
}

// --- naming ---------------------------------------------------------------------------------

/**
 * `assign-name`: the volume's persistent name, born from (VM, disk key) or its CloudStack name,
 * or the one it has. [release it: the row this run created goes, an older one stays]
 */
export async function assignName(
  saga: Saga,
  acts: Activities,
  ctx: WorkflowContext,
  a: { volumeId: string; sourceVmName?: string; diskIndex?: number; volumeName: string; sizeBytes: number },
): Promise<Named> {
  const { mapping } = await saga.writeStep(
    'assign-name',
    (audit) =>
      acts.control.dbAssignName({
        volumeId: a.volumeId,
        sourceVmName: a.sourceVmName,
        diskIndex: a.diskIndex,
        volumeName: a.volumeName,
        applianceVmId: ctx.applianceVmId,
        virtioSerial: diskSerialFor(a.volumeId),
        sizeBytes: a.sizeBytes,
        operationId: ctx.operationId,
        audit,
      }),
    () => acts.control.dbReleaseName({ volumeId: a.volumeId, operationId: ctx.operationId }),
  );
  return requireName(mapping, a.volumeId);
}

/** `adopt-name`: a row from before persistent names gets its name, as an attach would give it. */
export async function adoptName(saga: Saga, acts: Activities, ctx: WorkflowContext, row: MappingRecord) {
  const { mapping } = await saga.writeStep('adopt-name', (audit) =>
    acts.control.dbAssignName({
      volumeId: row.volumeId,
      sourceVmName: row.sourceVmName,
      diskIndex: row.diskIndex,
      applianceVmId: row.applianceVmId,
      virtioSerial: row.virtioSerial,
      sizeBytes: row.sizeBytes,
      operationId: ctx.operationId,
      audit,
    }),
  );
  return mapping;
}

// --- CloudStack -----------------------------------------------------------------------------

/**
 * `cloudstack-create`: a new volume. [delete it: the id if the step returned, else whatever a
 * lost reply created]
 */
export async function createInCloudStack(
  saga: Saga,
  acts: Activities,
  spec: { name: string; sizeGb: number; diskOfferingId: string; zoneId: string },
) {
  const created: { id?: string } = {};
  const volume = await saga.step(
    'cloudstack-create',
    () => acts.cloudstack.csCreate(spec),
    async () => {
      const id = created.id ?? (await acts.control.csFindCreated(spec))?.id;
      if (id) await acts.cloudstack.csDelete({ volumeId: id });
    },
  );
  created.id = volume.id;
  await saga.volumeKnown(volume.id);
  return volume;
}

/** `cloudstack-detach-target`: off the VM it was given to. [attach it to that VM again] */
export async function detachFromTarget(
  saga: Saga,
  acts: Activities,
  ctx: WorkflowContext,
  fromVmId: string,
): Promise<void> {
  await saga.step(
    'cloudstack-detach-target',
    () => acts.cloudstack.csDetach({ volumeId: ctx.volumeId, fromVmId }),
    () => acts.cloudstack.csAttach({ volumeId: ctx.volumeId, vmId: fromVmId }),
  );
}

/**
 * `cloudstack-attach-target`: onto the migrated VM; `asRoot` as its root disk (CloudStack
 * deviceid 0), the way the engine fails a VM over. [detach it from that VM]
 */
export function attachToTarget(
  saga: Saga,
  acts: Activities,
  ctx: WorkflowContext,
  a: { targetVmId: string; asRoot?: boolean },
) {
  const deviceId = a.asRoot ? { deviceId: 0 } : {};
  return saga.step(
    'cloudstack-attach-target',
    () => acts.cloudstack.csAttach({ volumeId: ctx.volumeId, vmId: a.targetVmId, ...deviceId }),
    () => acts.cloudstack.csDetach({ volumeId: ctx.volumeId, fromVmId: a.targetVmId }),
  );
}

/**
 * `cloudstack-detach` of a delete: off whatever VM holds it. [attach it there again; on the
 * appliance, wait for its device]
 */
export async function detachFromAny(
  saga: Saga,
  acts: Activities,
  ctx: WorkflowContext,
  from: string,
  sizeBytes: number,
): Promise<void> {
  const { cloudstack, correlation } = acts;
  await saga.step(
    'cloudstack-detach',
    () => cloudstack.csDetach({ volumeId: ctx.volumeId, fromVmId: from }),
    async () => {
      await cloudstack.csAttach({ volumeId: ctx.volumeId, vmId: from });
      if (from === ctx.applianceVmId) {
        await correlation.hostCorrelate({
          serial: diskSerialFor(ctx.volumeId),
          expectedSizeBytes: sizeBytes,
          timeoutMs: ctx.correlationTimeoutMs,
        });
      }
    },
  );
}

/**
 * `cloudstack-delete`, the pivot of a delete. The delete may be done although the step failed
 * (the job finished, its reply was lost): CloudStack says. Gone → the pivot is passed, finish
 * forward; undoing the steps before it would only fail against a volume that no longer exists.
 * (patched: a delete that failed there under the previous release compensated.)
 */
export async function deleteInCloudStack(saga: Saga, acts: Activities, ctx: WorkflowContext): Promise<void> {
  try {
    await saga.step('cloudstack-delete', () => acts.cloudstack.csDelete({ volumeId: ctx.volumeId }));
  } catch (err) {
    if (
      isCancellation(err) ||
      !acts.has('delete-asks-cloudstack-after-failed-delete') ||
      (await acts.control.csGetVolume(ctx.volumeId))
    )
      throw err;
  }
}

// --- taking a volume apart (delete) ---------------------------------------------------------

/**
 * `remove-export`: the export and its row. [the export again, if it was configured, and the
 * row as it was]
 */
export async function removeExport(
  saga: Saga,
  acts: Activities,
  ctx: WorkflowContext,
  name: string,
  row: ExportRecord | null,
): Promise<void> {
  const { control, host } = acts;
  const exportName = exportNameOf(name);
  const aliases = [engineExportNameOf(ctx.volumeId)];
  const configured = await host.hostExportConfigured(exportName);
  await saga.writeStep(
    'remove-export',
    async (audit) => {
      await host.hostExportRemove({ exportName, aliases });
      await control.dbDeleteExport({ volumeId: ctx.volumeId, audit });
    },
    async () => {
      if (configured) await host.hostExportEnsure({ exportName, targetPath: mapperPathOf(name), aliases });
      if (row) await control.dbUpsertExport(row);
    },
  );
}

/**
 * `remove-dm`: the dm device. [linear over whatever device carries the volume now (it may have
 * been re-attached as another /dev/vdX), else the table as it was]
 */
export async function removeDevice(saga: Saga, acts: Activities, ctx: WorkflowContext, name: string) {
  const { host } = acts;
  const previous = await host.hostDmTable(name);
  await saga.step(
    'remove-dm',
    () => host.hostDmRemove({ name }),
    async () => {
      if (!previous) return;
      const dev =
        previous.kind === 'linear' ? await host.hostFindBySerial(diskSerialFor(ctx.volumeId)) : null;
      if (dev) await host.hostDmEnsureLinear({ name, devicePath: dev.devicePath });
      else await host.hostDmEnsureTable({ name, table: previous });
    },
  );
}

/**
 * `remove-rows`: the mapping and export rows (the audit trail stays). Past the pivot: it runs
 * to its end whatever is cancelled. [none]
 */
export async function removeRows(saga: Saga, acts: Activities, ctx: WorkflowContext): Promise<void> {
  await CancellationScope.nonCancellable(() =>
    saga.writeStep('remove-rows', (audit) => acts.control.dbDeleteMapping({ volumeId: ctx.volumeId, audit })),
  );
}

import type { OperationResult, WorkflowContext } from '../src/domain/operations.js';
import { diskSerialFor } from '../src/cloudstack/serial.js';
import { activitiesFor } from './proxies.js';
import { permanentFailure, Saga } from './saga.js';
import { EXPORT_PREFIX } from './volume-steps.js';

export interface RepairInput extends WorkflowContext {
  /** What reconciliation saw; the repair re-reads everything and converges anyway. */
  findings: string[];
}

/**
 * Reconciliation's repair of one volume, run under the volume's own workflow id so it can never
 * run beside a saga. It converges the device layer to what the database says, reading real
 * state first at every step: adopt (name) an old row, dm linear over the device carrying the
 * serial when the volume is on the appliance, error target when it is away, export present.
 */
export async function repairVolume(input: RepairInput): Promise<OperationResult> {
  const acts = activitiesFor(input);
  const { control, host } = acts;
  const saga = new Saga(input, 'repair', acts, input);
  return saga.run(async () => {
    let m = await saga.step('validate', () => control.dbGetMapping(input.volumeId));
    const result: OperationResult = {
      operationId: input.operationId,
      type: 'repair',
      volumeId: input.volumeId,
      status: 'completed',
      location: m?.location ?? 'detached',
    };
    if (!m) return { ...result, noop: true };
    if (!m.persistentName) {
      const row = m;
      m = (
        await saga.step('adopt-name', () =>
          control.dbAssignName({
            volumeId: row.volumeId,
            sourceVmName: row.sourceVmName,
            diskIndex: row.diskIndex,
            applianceVmId: row.applianceVmId,
            virtioSerial: row.virtioSerial,
            sizeBytes: row.sizeBytes,
            operationId: input.operationId,
          }),
        )
      ).mapping;
    }
    const name = m.persistentName!;
    saga.describe({ persistentName: name, vmName: m.sourceVmName });
    const previous = await host.hostDmTable(name);
    const undoDm = () =>
      previous ? host.hostDmEnsureTable({ name, table: previous }) : host.hostDmRemove({ name });

    if (m.location === 'appliance') {
      const device = await host.hostFindBySerial(diskSerialFor(input.volumeId));
      if (!device) {
        throw permanentFailure(
          `no device carries serial ${diskSerialFor(input.volumeId)}: cannot map ${name} (reported, not guessed)`,
          'DeviceMissing',
        );
      }
      await saga.step(
        'dm-map',
        () => host.hostDmEnsureLinear({ name, devicePath: device.devicePath }),
        undoDm,
      );
      if (m.devicePath !== device.devicePath || m.dmState !== 'linear') {
        const before = m;
        await saga.step(
          'record-mapping',
          () =>
            control.dbUpdateMapping({
              volumeId: input.volumeId,
              expectedVersion: before.version,
              operationId: input.operationId,
              patch: { devicePath: device.devicePath, dmState: 'linear' },
            }),
          () => control.dbRestoreMapping({ before, operationId: input.operationId }),
        );
      }
    } else {
      await saga.step(
        'dm-error',
        () => host.hostDmEnsureError({ name, sectors: Math.floor(m.sizeBytes / 512) }),
        undoDm,
      );
    }

    const exportName = EXPORT_PREFIX + name;
    const mapperPath = `/dev/mapper/${name}`;
    await saga.step('ensure-export', async () => {
      const r = await host.hostExportEnsure({ exportName, targetPath: mapperPath });
      await control.dbUpsertExport({
        exportName,
        volumeId: input.volumeId,
        targetPath: mapperPath,
        configPath: r.configPath,
        backend: r.backend,
        status: 'active',
      });
    });
    return result;
  });
}

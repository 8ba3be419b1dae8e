import type { OperationResult, WorkflowContext } from '../src/domain/operations.js';
import { diskSerialFor } from '../src/cloudstack/serial.js';
import { activitiesFor } from './proxies.js';
import { permanentFailure, Saga } from './saga.js';
import {
  adoptName,
  ensureExport,
  errorDevice,
  mapDevice,
  recordMapping,
  validateRow,
} from './volume-steps.js';

export interface RepairInput extends WorkflowContext {
  /** What reconciliation saw; the repair re-reads everything and converges anyway. */
  findings: string[];
}

/**
 * Reconciliation's repair of one volume, run under the volume's own workflow id so it can never
 * run beside a saga. It converges the device layer to what the database says, reading real
 * state first at every step: adopt (name) an old row, dm linear over the device carrying the
 * serial when the volume is on the appliance, error target when it is away, export present —
 * with the sagas' own steps (volume-steps.ts), so there is one way to make a volume right.
 */
export async function repairVolume(input: RepairInput): Promise<OperationResult> {
  const acts = activitiesFor(input);
  const { host } = acts;
  const saga = new Saga(input, 'repair', acts, input);
  return saga.run(async () => {
    let m = await validateRow(saga, acts, input);
    const result: OperationResult = {
      operationId: input.operationId,
      type: 'repair',
      volumeId: input.volumeId,
      status: 'completed',
      location: m?.location ?? 'detached',
    };
    if (!m) return { ...result, noop: true };
    if (!m.persistentName) m = await adoptName(saga, acts, input, m);
    const name = m.persistentName!;
    saga.describe({ persistentName: name, vmName: m.sourceVmName });
    const previous = await host.hostDmTable(name);

    if (m.location === 'appliance') {
      const device = await host.hostFindBySerial(diskSerialFor(input.volumeId));
      if (!device) {
        throw permanentFailure(
          `no device carries serial ${diskSerialFor(input.volumeId)}: cannot map ${name} (reported, not guessed)`,
          'DeviceMissing',
        );
      }
      await mapDevice(saga, acts, name, device.devicePath, previous);
      if (m.devicePath !== device.devicePath || m.dmState !== 'linear') {
        await recordMapping(saga, acts, input, 'record-mapping', m, {
          devicePath: device.devicePath,
          dmState: 'linear',
        });
      }
    } else {
      await errorDevice(saga, acts, name, m.sizeBytes, () =>
        previous ? host.hostDmEnsureTable({ name, table: previous }) : host.hostDmRemove({ name }),
      );
    }

    await ensureExport(saga, acts, input, name);
    return result;
  });
}

import type { DeleteInput, OperationResult } from '../src/domain/operations.js';
import { activitiesFor } from './proxies.js';
import { Saga } from './saga.js';
import {
  deleteInCloudStack,
  detachFromAny,
  removeDevice,
  removeExport,
  removeRows,
  validateAny,
} from './volume-steps.js';

/**
 * delete: remove export [re-create] → remove dm device [re-create as it was] → detach if
 * attached [re-attach] → CloudStack delete — the PIVOT: nothing after it is undone →
 * remove the database rows (the audit trail stays).
 */
export async function deleteVolume(input: DeleteInput): Promise<OperationResult> {
  const acts = activitiesFor(input);
  const saga = new Saga(input, 'delete', acts, input);
  return saga.run(async () => {
    const { mapping, volume, exportRow } = await validateAny(saga, acts, input);
    const result: OperationResult = {
      operationId: input.operationId,
      type: 'delete',
      volumeId: input.volumeId,
      status: 'completed',
      location: 'deleted',
    };
    if (!mapping && !volume) return { ...result, noop: true };
    const name = mapping?.persistentName ?? null;
    if (name) {
      saga.describe({ persistentName: name, vmName: mapping!.sourceVmName });
      await removeExport(saga, acts, input, name, exportRow);
      await removeDevice(saga, acts, input, name);
    }
    if (volume?.attachedTo) await detachFromAny(saga, acts, input, volume.attachedTo, volume.sizeBytes);
    if (volume) await deleteInCloudStack(saga, acts, input);
    // The pivot: the CloudStack delete or, for a volume CloudStack no longer has, removing its
    // rows. A cancel is too late from here: the delete is finished forward, never half-left.
    saga.pivot();
    await removeRows(saga, acts, input);
    return result;
  });
}

import type { AttachInput, OperationResult } from '../src/domain/operations.js';
import { activitiesFor } from './proxies.js';
import { permanentFailure, Saga } from './saga.js';
import { assignName, bringToAppliance, validateVolume } from './volume-steps.js';

/**
 * attach: a volume comes onto the appliance for replication.
 * validate → assign/reuse name [release it] → CloudStack attach [detach] → correlate by serial →
 * resolve conflicts → dm create/reload [remove / restore table] → record [restore row] →
 * ensure export [remove if created].
 */
export async function attachVolume(input: AttachInput): Promise<OperationResult> {
  const acts = activitiesFor(input);
  const saga = new Saga(input, 'attach', acts, input);
  return saga.run(async () => {
    const volume = await validateVolume(saga, acts, input);
    if (volume.attachedTo && volume.attachedTo !== input.applianceVmId) {
      throw permanentFailure(
        `volume ${input.volumeId} is attached to VM ${volume.attachedTo}, not the appliance: fail it back instead`,
        'VolumeAttachedElsewhere',
      );
    }
    const m = await assignName(saga, acts, input, {
      volumeId: input.volumeId,
      sourceVmName: input.sourceVmName,
      diskIndex: input.diskIndex,
      volumeName: volume.name,
      sizeBytes: volume.sizeBytes,
    });
    saga.describe({ persistentName: m.persistentName, vmName: m.sourceVmName });

    const access = await bringToAppliance(saga, acts, input, {
      name: m.persistentName,
      sizeBytes: volume.sizeBytes,
      attachedBefore: volume.attachedTo === input.applianceVmId,
    });
    return {
      operationId: input.operationId,
      type: 'attach',
      volumeId: input.volumeId,
      status: 'completed',
      location: 'appliance',
      access,
    };
  });
}

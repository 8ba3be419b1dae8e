import type { FailbackInput, OperationResult } from '../src/domain/operations.js';
import { activitiesFor } from './proxies.js';
import { permanentFailure, Saga } from './saga.js';
import { bringToAppliance, detachFromTarget, validateMapped } from './volume-steps.js';

/**
 * failback: the volume comes back from the migrated VM, usually as a different /dev/vdY.
 * CloudStack detach from the target [re-attach to it] → attach to the appliance [detach] →
 * correlate → dm reload [back to the error target] → record → ensure export (a no-op when it
 * exists). Replication then uses the same export name as before failover.
 */
export async function failbackVolume(input: FailbackInput): Promise<OperationResult> {
  const acts = activitiesFor(input);
  const saga = new Saga(input, 'failback', acts, input);
  return saga.run(async () => {
    const { m, volume } = await validateMapped(saga, acts, input);

    const onTarget =
      volume.attachedTo && volume.attachedTo !== input.applianceVmId ? volume.attachedTo : null;
    if (onTarget) {
      if (m.targetVmId && onTarget !== m.targetVmId) {
        throw permanentFailure(
          `volume ${input.volumeId} is attached to VM ${onTarget}, but it was failed over to ${m.targetVmId}`,
          'VolumeAttachedElsewhere',
        );
      }
      await detachFromTarget(saga, acts, input, onTarget);
    }
    const access = await bringToAppliance(saga, acts, input, {
      name: m.persistentName,
      sizeBytes: volume.sizeBytes,
      attachedBefore: volume.attachedTo === input.applianceVmId,
    });
    return {
      operationId: input.operationId,
      type: 'failback',
      volumeId: input.volumeId,
      status: 'completed',
      location: 'appliance',
      access,
    };
  });
}

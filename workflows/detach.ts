import type { DetachInput, OperationResult } from '../src/domain/operations.js';
import { activitiesFor } from './proxies.js';
import { permanentFailure, Saga } from './saga.js';
import {
  detachFromTarget,
  errorDevice,
  recordLocation,
  takeOffAppliance,
  validateMapped,
} from './volume-steps.js';

/**
 * detach: the volume leaves the appliance. dm → error target [relink] → CloudStack detach
 * [re-attach, correlate] → record detached [restore row]. The export stays, answering errors.
 * A volume on the VM it was given to (failover) is taken off that VM instead
 * [re-attach to it] → record detached.
 */
export async function detachVolume(input: DetachInput): Promise<OperationResult> {
  const acts = activitiesFor(input);
  const saga = new Saga(input, 'detach', acts, input);
  return saga.run(async () => {
    const { m, volume } = await validateMapped(saga, acts, input);
    const result: OperationResult = {
      operationId: input.operationId,
      type: 'detach',
      volumeId: input.volumeId,
      status: 'completed',
      location: 'detached',
    };
    if (!volume.attachedTo && m.location === 'detached' && m.dmState === 'error')
      return { ...result, noop: true };

    if (volume.attachedTo && volume.attachedTo !== input.applianceVmId) {
      // On the VM we gave it to (failover, or an attach to that VM): take it off that VM. The dm
      // device stays an error target and the export stays, as while it was there.
      if (m.location !== 'target' || m.targetVmId !== volume.attachedTo) {
        throw permanentFailure(
          `volume ${input.volumeId} is attached to VM ${volume.attachedTo}, which is neither the appliance ` +
            `nor the VM it was given to (${m.targetVmId ?? 'none'}): detach it in CloudStack, then reconcile`,
          'VolumeAttachedElsewhere',
        );
      }
      await detachFromTarget(saga, acts, input, volume.attachedTo);
    } else if (volume.attachedTo) await takeOffAppliance(saga, acts, input, m);
    else await errorDevice(saga, acts, m.persistentName, m.sizeBytes);
    await recordLocation(saga, acts, input, m, {
      location: 'detached',
      targetVmId: null,
      cloudstackDeviceId: null,
      devicePath: null,
      dmState: 'error',
    });
    return result;
  });
}

import type { DetachInput, OperationResult } from '../src/domain/operations.js';
import { activitiesFor } from './proxies.js';
import { permanentFailure, Saga } from './saga.js';
import { recordLocation, takeOffAppliance, validateMapped } from './volume-steps.js';

/**
 * detach: the volume leaves the appliance. dm → error target [relink] → CloudStack detach
 * [re-attach, correlate] → record detached [restore row]. The export stays, answering errors.
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
    if (volume.attachedTo && volume.attachedTo !== input.applianceVmId) {
      throw permanentFailure(
        `volume ${input.volumeId} is attached to VM ${volume.attachedTo}, not the appliance`,
        'VolumeAttachedElsewhere',
      );
    }
    if (!volume.attachedTo && m.location === 'detached' && m.dmState === 'error')
      return { ...result, noop: true };

    if (volume.attachedTo) await takeOffAppliance(saga, acts, input, m);
    else
      await saga.step('dm-error', () =>
        acts.host.hostDmEnsureError({ name: m.persistentName, sectors: Math.floor(m.sizeBytes / 512) }),
      );
    await recordLocation(saga, acts, input, {
      location: 'detached',
      targetVmId: null,
      devicePath: null,
      dmState: 'error',
    });
    return result;
  });
}

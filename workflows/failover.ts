import type { FailoverInput, OperationResult } from '../src/domain/operations.js';
import { activitiesFor } from './proxies.js';
import { permanentFailure, Saga } from './saga.js';
import { attachToTarget, recordLocation, takeOffAppliance, validateMapped } from './volume-steps.js';

/**
 * failover: the volume moves to the migrated VM. As detach (dm → error, CloudStack detach),
 * then CloudStack attach to the target [detach from it] → record. The export name never changes.
 * `asRoot`: attached as the target's root disk (CloudStack deviceid 0).
 */
export async function failoverVolume(input: FailoverInput): Promise<OperationResult> {
  const acts = activitiesFor(input);
  const saga = new Saga(input, 'failover', acts, input, input.targetVmId);
  return saga.run(async () => {
    const { m, volume } = await validateMapped(saga, acts, input);
    const result: OperationResult = {
      operationId: input.operationId,
      type: 'failover',
      volumeId: input.volumeId,
      status: 'completed',
      location: 'target',
    };
    if (volume.attachedTo === input.targetVmId && m.location === 'target') return { ...result, noop: true };
    if (
      volume.attachedTo &&
      volume.attachedTo !== input.applianceVmId &&
      volume.attachedTo !== input.targetVmId
    ) {
      throw permanentFailure(
        `volume ${input.volumeId} is attached to VM ${volume.attachedTo}, neither the appliance nor the target`,
        'VolumeAttachedElsewhere',
      );
    }

    if (volume.attachedTo === input.applianceVmId) await takeOffAppliance(saga, acts, input, m);
    const attached = await attachToTarget(saga, acts, input, input);
    await recordLocation(saga, acts, input, m, {
      location: 'target',
      targetVmId: input.targetVmId,
      ...(attached.deviceId !== undefined ? { cloudstackDeviceId: attached.deviceId } : {}),
      devicePath: null,
      dmState: 'error',
    });
    return result;
  });
}

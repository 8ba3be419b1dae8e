import type { AttachInput, OperationResult } from '../src/domain/operations.js';
import { diskSerialFor } from '../src/cloudstack/serial.js';
import { activitiesFor } from './proxies.js';
import { permanentFailure, Saga } from './saga.js';
import { bringToAppliance } from './volume-steps.js';

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
    const volume = await saga.step('validate', () => acts.control.csGetVolume(input.volumeId));
    if (!volume)
      throw permanentFailure(`volume ${input.volumeId} does not exist in CloudStack`, 'VolumeNotFound');
    if (volume.attachedTo && volume.attachedTo !== input.applianceVmId) {
      throw permanentFailure(
        `volume ${input.volumeId} is attached to VM ${volume.attachedTo}, not the appliance: fail it back instead`,
        'VolumeAttachedElsewhere',
      );
    }

    const { mapping } = await saga.writeStep(
      'assign-name',
      (audit) =>
        acts.control.dbAssignName({
          volumeId: input.volumeId,
          sourceVmName: input.sourceVmName,
          diskIndex: input.diskIndex,
          volumeName: volume.name,
          applianceVmId: input.applianceVmId,
          virtioSerial: diskSerialFor(input.volumeId),
          sizeBytes: volume.sizeBytes,
          operationId: input.operationId,
          audit,
        }),
      () => acts.control.dbReleaseName({ volumeId: input.volumeId, operationId: input.operationId }),
    );
    const name = mapping.persistentName!;
    saga.describe({ persistentName: name, vmName: mapping.sourceVmName });

    const access = await bringToAppliance(saga, acts, input, {
      name,
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

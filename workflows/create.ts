import type { CreateInput, OperationResult } from '../src/domain/operations.js';
import { diskSerialFor } from '../src/cloudstack/serial.js';
import { activitiesFor } from './proxies.js';
import { Saga } from './saga.js';

/**
 * create: a new CloudStack volume, and its persistent name born with it, so a later attach that
 * sends only `vm_id` knows it.
 * validate (the name is free, or refuse before creating anything) → CloudStack create [delete it]
 * → assign the name [release it]. The volume is left detached: attach brings it to the appliance.
 */
export async function createVolume(input: CreateInput): Promise<OperationResult> {
  const acts = activitiesFor(input);
  const saga = new Saga(input, 'create', acts, input);
  return saga.run(async () => {
    const naming = { sourceVmName: input.sourceVmName, diskIndex: input.diskIndex };
    const name = await saga.step('validate', () =>
      acts.control.dbCheckName({ ...naming, volumeName: input.name }),
    );
    saga.describe({ persistentName: name, ...(input.sourceVmName ? { vmName: input.sourceVmName } : {}) });

    const spec = {
      name: input.name,
      sizeGb: input.sizeGb,
      diskOfferingId: input.diskOfferingId,
      zoneId: input.zoneId,
    };
    const created: { id?: string } = {};
    const volume = await saga.step(
      'cloudstack-create',
      () => acts.cloudstack.csCreate(spec),
      // Undo if present: the id if the step returned, else whatever a lost reply created.
      async () => {
        const id = created.id ?? (await acts.control.csFindCreated(spec))?.id;
        if (id) await acts.cloudstack.csDelete({ volumeId: id });
      },
    );
    created.id = volume.id;
    await saga.volumeKnown(volume.id);

    const { mapping } = await saga.writeStep(
      'assign-name',
      (audit) =>
        acts.control.dbAssignName({
          volumeId: volume.id,
          ...naming,
          volumeName: input.name,
          applianceVmId: input.applianceVmId,
          virtioSerial: diskSerialFor(volume.id),
          sizeBytes: volume.sizeBytes,
          operationId: input.operationId,
          audit,
        }),
      () => acts.control.dbReleaseName({ volumeId: volume.id, operationId: input.operationId }),
    );
    return {
      operationId: input.operationId,
      type: 'create',
      volumeId: volume.id,
      status: 'completed',
      location: 'detached',
      persistentName: mapping.persistentName ?? name,
    };
  });
}

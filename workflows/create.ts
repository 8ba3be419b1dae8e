import type { CreateInput, OperationResult } from '../src/domain/operations.js';
import { activitiesFor } from './proxies.js';
import { Saga } from './saga.js';
import { assignName, createInCloudStack, validateNameFree } from './volume-steps.js';

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
    await validateNameFree(saga, acts, { ...naming, volumeName: input.name });
    const volume = await createInCloudStack(saga, acts, {
      name: input.name,
      sizeGb: input.sizeGb,
      diskOfferingId: input.diskOfferingId,
      zoneId: input.zoneId,
    });
    const m = await assignName(saga, acts, input, {
      volumeId: volume.id,
      ...naming,
      volumeName: input.name,
      sizeBytes: volume.sizeBytes,
    });
    return {
      operationId: input.operationId,
      type: 'create',
      volumeId: volume.id,
      status: 'completed',
      location: 'detached',
      persistentName: m.persistentName,
    };
  });
}

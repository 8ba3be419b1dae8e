import { z } from 'zod';

// CloudStack identifies every object we touch by UUID. Anything else is refused at the boundary,
// before it can reach a file path, a dmsetup argument or a config file.
/** A UUID in any case (CloudStack's ids); `uuid` below lower-cases it. */
export const UUID_PATTERN = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

export const uuid = z
  .string()
  .regex(UUID_PATTERN, 'must be a UUID')
  .transform((s) => s.toLowerCase());

export const volumeId = uuid;
export const vmId = uuid;

/** Appliance ids name task queues (`…-host-<id>`); a CloudStack VM UUID. */
export const applianceVmId = uuid;

export type VolumeId = z.output<typeof volumeId>;

import { z } from 'zod';

/**
 * The old volume daemon's wire shapes, as the migration engine's client decodes them. Used as
 * response schemas on /api/v1, so a handler cannot send a field of the wrong type (the engine's
 * JSON decoder fails the whole call on one: a number where it wants a string, a non-string
 * metadata value, a time that is not RFC 3339). Extra fields are allowed by the engine and
 * listed here too, so nothing is dropped silently.
 */
const time = z.string(); // ISO 8601 from Date#toISOString: valid RFC 3339
const stringMap = z.record(z.string(), z.string());

export const OLD_STATUSES = ['pending', 'executing', 'completed', 'failed', 'cancelled'] as const;
export type OldStatus = (typeof OLD_STATUSES)[number];
export const OLD_TYPES = ['create', 'attach', 'detach', 'delete', 'cleanup'] as const;
export type OldType = (typeof OLD_TYPES)[number];

export const oldOperation = z.object({
  id: z.string(),
  type: z.enum(OLD_TYPES),
  status: z.enum(OLD_STATUSES),
  volume_id: z.string(),
  vm_id: z.string().nullable(),
  request: z.record(z.string(), z.unknown()),
  response: z.record(z.string(), z.unknown()),
  error: z.string(),
  created_at: time,
  updated_at: time,
  completed_at: time.nullable(),
  /** Ours: the saga that ran (attach, failover, failback, detach, delete, repair). */
  saga: z.string(),
  /** Ours: the audit row's status (running, completed, compensated, needs_attention, …). */
  outcome: z.string(),
});
export type OldOperation = z.output<typeof oldOperation>;

export const oldDeviceMapping = z.object({
  id: z.string(),
  volume_id: z.string(),
  /** The old daemon's own name of `volume_id`. */
  volume_uuid: z.string(),
  vm_id: z.string(),
  device_path: z.string(),
  cloudstack_state: z.string(),
  linux_state: z.string(),
  operation_mode: z.enum(['oma', 'failover']),
  size: z.number().int(),
  last_sync: time,
  persistent_device_name: z.string().nullable(),
  created_at: time,
  updated_at: time,
});

export const oldVolumeOnVm = z.object({
  volume_id: z.string(),
  vm_id: z.string(),
  device_path: z.string(),
  attached_at: time,
  persistent_device_name: z.string().nullable(),
});

export const oldExport = z.object({
  id: z.string(),
  volume_id: z.string(),
  export_name: z.string(),
  device_path: z.string(),
  port: z.number().int(),
  status: z.enum(['pending', 'active', 'failed']),
  created_at: time,
  updated_at: time,
  metadata: stringMap,
});

export const oldError = z.looseObject({ error: z.string(), code: z.string() });

export const rootHealth = z.object({
  status: z.enum(['healthy', 'unhealthy']),
  version: z.string(),
  timestamp: time,
  error: z.string().optional(),
});

export const oldHealthStatus = z.object({
  status: z.enum(['healthy', 'unhealthy']),
  timestamp: time,
  cloudstack_health: z.string(),
  database_health: z.string(),
  device_monitor: z.string(),
  details: stringMap,
});

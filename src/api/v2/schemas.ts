import { z } from 'zod';
import { uuid } from '../../domain/ids.js';
import { DM_STATES, EXPORT_BACKENDS, VOLUME_LOCATIONS } from '../../domain/mapping.js';

/**
 * Request and response schemas of /api/v2, in zod: they validate requests, serialize responses
 * (a handler cannot send a field the document does not name) and generate /api/v2/openapi.json.
 */
export const volumeParams = z.object({ id: uuid });
export const operationIdBody = {
  /** Idempotency key (also accepted as the Idempotency-Key header). */
  operation_id: uuid.optional(),
};

/** OpenAPI security requirement of every mutation: the bearer token. */
export const bearer = [{ bearer: [] }];

const fieldIssue = z.object({ field: z.string(), message: z.string() });
/** `extra` members (e.g. `running_operation` on 409) pass through. */
export const errorBody = z.looseObject({
  error: z.looseObject({ code: z.string(), message: z.string(), fields: z.array(fieldIssue) }),
});

/** The given success responses plus the error shape for the listed statuses. */
export function responses<S extends Record<number, z.ZodType>, const E extends readonly number[]>(
  ok: S,
  errors: E,
): S & { [K in E[number]]: typeof errorBody } {
  return { ...ok, ...Object.fromEntries(errors.map((s) => [s, errorBody])) } as S & {
    [K in E[number]]: typeof errorBody;
  };
}

export const operation = z.object({
  id: z.string(),
  type: z.string(),
  /** pending | running | completed | failed */
  status: z.string(),
  /** The audit row's own status: running, completed, failed, compensated, needs_attention, cancelled. */
  outcome: z.string(),
  needs_attention: z.boolean(),
  /** null only for a create that CloudStack has not given an id yet. */
  volume_id: z.string().nullable(),
  vm_id: z.string().nullable(),
  request: z.unknown(),
  response: z.unknown(),
  error: z.string().nullable(),
  workflow_id: z.string(),
  run_id: z.string().nullable(),
  created_at: z.string(),
  updated_at: z.string(),
  completed_at: z.string().nullable(),
});

export const step = z.object({
  seq: z.number(),
  step: z.string(),
  phase: z.enum(['forward', 'compensation', 'operator']),
  status: z.enum(['started', 'completed', 'failed', 'skipped']),
  error: z.string().nullable(),
  details: z.unknown(),
  startedAt: z.date(),
  finishedAt: z.date().nullable(),
});

export const mapping = z.object({
  volume_id: z.string(),
  persistent_device_name: z.string().nullable(),
  mapper_path: z.string().nullable(),
  device_path: z.string().nullable(),
  virtio_serial: z.string(),
  location: z.enum(VOLUME_LOCATIONS),
  target_vm_id: z.string().nullable(),
  dm_state: z.enum(DM_STATES),
  source_vm_name: z.string(),
  disk_index: z.number(),
  size_bytes: z.number(),
  appliance_vm_id: z.string(),
  version: z.number(),
});

export const exportRecord = z.object({
  exportName: z.string(),
  volumeId: z.string(),
  targetPath: z.string(),
  configPath: z.string(),
  backend: z.enum(EXPORT_BACKENDS),
  status: z.enum(['active', 'error']),
});

export const reconcileStarted = z.object({
  reconcile: z.object({ workflowId: z.string(), runId: z.string() }),
});

import { z } from 'zod';
import { applianceVmId, uuid, vmId, volumeId } from './ids.js';
import { DISK_INDEX_MAX, DISK_KEY_FIRST, DISK_KEY_LAST, diskKeyNumber } from './naming.js';

/**
 * Inputs of the five volume operations, validated with zod wherever they cross a boundary
 * (client library, HTTP API, CLI). Workflow code imports the *types* only.
 */
export const OPERATION_TYPES = ['attach', 'detach', 'failover', 'failback', 'delete', 'repair'] as const;
export type OperationType = (typeof OPERATION_TYPES)[number];

// VM names become part of persistent names only after cleaning, but we still refuse input that no
// VMware/CloudStack VM name can have: control characters, path separators, brackets.
export const sourceVmName = z
  .string()
  .min(1, 'must not be empty')
  .max(80, 'must be at most 80 characters')
  .refine(
    (s) => ![...s].some((c) => c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f) && !/[/\\[\]=]/.test(s),
    'must not contain control characters, "/", "\\", "[", "]" or "="',
  )
  .refine((s) => s !== '.' && s !== '..' && !s.includes('..'), 'must not contain ".."');

/** What every disk-key refusal says: the accepted forms and the range. */
const DISK_KEY_RULE = `must be a VMware disk key from ${DISK_KEY_FIRST} to ${DISK_KEY_LAST}, like ${DISK_KEY_FIRST} or "disk-${DISK_KEY_FIRST}"`;

/**
 * A VMware disk key as a number (`2000`) or text (`"2000"`, `"disk-2000"`); either way the
 * number must be an integer from 2000 to 3024, the keys VMware gives virtual disks.
 */
export const diskKey = z.union([z.number(), z.string()], { error: DISK_KEY_RULE }).refine((k) => {
  const n = diskKeyNumber(k);
  return n !== undefined && Number.isSafeInteger(n) && n >= DISK_KEY_FIRST && n <= DISK_KEY_LAST;
}, DISK_KEY_RULE);

/** Disk index as the workflows and the database carry it: `diskKey - 2000`, 0 to 1024. */
export const diskIndex = z
  .number()
  .int('must be an integer')
  .min(0, 'must be at least 0')
  .max(DISK_INDEX_MAX, `must be at most ${DISK_INDEX_MAX}`);

const common = {
  /** Idempotency key: a retried request with the same key never starts a second operation. */
  operationId: uuid.optional(),
  volumeId,
  applianceVmId,
};

export const attachRequest = z.object({
  ...common,
  sourceVmName,
  diskKey,
});
export const detachRequest = z.object(common);
export const failoverRequest = z.object({ ...common, targetVmId: vmId });
export const failbackRequest = z.object(common);
export const deleteRequest = z.object(common);

export type AttachRequest = z.input<typeof attachRequest>;
export type DetachRequest = z.input<typeof detachRequest>;
export type FailoverRequest = z.input<typeof failoverRequest>;
export type FailbackRequest = z.input<typeof failbackRequest>;
export type DeleteRequest = z.input<typeof deleteRequest>;

/** What every workflow receives: the validated request plus where to run host steps. */
export interface WorkflowContext {
  operationId: string;
  volumeId: string;
  applianceVmId: string;
  taskQueuePrefix: string;
  /** How long correlation may wait for the device to appear. */
  correlationTimeoutMs: number;
}

export interface AttachInput extends WorkflowContext {
  sourceVmName: string;
  diskIndex: number;
}
export type DetachInput = WorkflowContext;
export interface FailoverInput extends WorkflowContext {
  targetVmId: string;
}
export type FailbackInput = WorkflowContext;
export type DeleteInput = WorkflowContext;

/** What a completed attach/failback returns: everything replication needs. */
export interface VolumeAccess {
  volumeId: string;
  persistentName: string;
  devicePath: string;
  mapperPath: string;
  exportName: string;
  nbdUri: string;
}

export interface OperationResult {
  operationId: string;
  type: OperationType;
  volumeId: string;
  status: 'completed';
  location: 'appliance' | 'target' | 'detached' | 'deleted';
  access?: VolumeAccess;
  /** True when the operation found everything already as wanted. */
  noop?: boolean;
}

/** Progress, as the `progress` query returns it. */
export interface SagaProgress {
  operationId: string;
  type: OperationType;
  currentStep: string | null;
  stepsDone: string[];
  compensationsRun: { step: string; status: 'completed' | 'failed' | 'skipped' }[];
  needsAttention: null | { step: string; error: string };
  state: 'running' | 'compensating' | 'waiting-for-operator' | 'completed' | 'failed';
}

/** An operator's answer to a compensation that could not complete, or a request to abort. */
export const operatorActionSchema = z.object({
  action: z.enum(['retry', 'skip', 'abort']),
  reason: z.string().min(1, 'a reason is required').max(500),
  operator: z.string().min(1).max(100).default('operator'),
});
export type OperatorAction = z.input<typeof operatorActionSchema>;

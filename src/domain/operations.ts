import { z } from 'zod';
import { applianceVmId, uuid, vmId, volumeId } from './ids.js';

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

export const diskKey = z.union([
  z
    .number()
    .int()
    .min(2000)
    .max(2000 + 4 * 16 * 16),
  z.string().regex(/^(disk-)?\d{4,5}$/, 'must be a VMware disk key like 2000 or "disk-2000"'),
]);

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

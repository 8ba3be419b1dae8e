import { z } from 'zod';
import { applianceVmId, uuid, vmId, volumeId } from './ids.js';
import { DISK_INDEX_MAX, DISK_KEY_FIRST, DISK_KEY_LAST, diskKeyNumber, normalizeVmName } from './naming.js';
import type { VolumeLocation } from './mapping.js';
import { OPERATOR_ACTIONS, type AuditStepName, type StepName } from './steps.js';

/**
 * Inputs of the five volume operations, validated with zod wherever they cross a boundary
 * (client library, HTTP API, CLI). Workflow code imports the *types* only.
 */
export const OPERATION_TYPES = [
  'create',
  'attach',
  'detach',
  'failover',
  'failback',
  'delete',
  'repair',
] as const;
export type OperationType = (typeof OPERATION_TYPES)[number];

/**
 * How an operation ended (or stands), as the audit trail records it. `refused`: a check said no
 * before anything was changed (a caller mistake or a naming collision), so nothing was undone;
 * `compensated`: it failed after acting and its steps were undone.
 */
export const OPERATION_STATUSES = [
  'running',
  'completed',
  'failed',
  'compensated',
  'refused',
  'needs_attention',
  'cancelled',
] as const;
export type OperationStatus = (typeof OPERATION_STATUSES)[number];

/** A VM name as given by a caller, normalized (see `normalizeVmName`): the form stored and compared. */
export const sourceVmName = z.string().transform((raw, ctx) => {
  try {
    return normalizeVmName(raw);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message });
    return z.NEVER;
  }
});

/**
 * A VM name inside the system (activity inputs, rows): already in its stored form. Refuses what
 * `normalizeVmName` refuses and anything not yet normalized, so nothing reaches the database in
 * another form than the one it is compared in.
 */
export const normalizedVmName = z.string().superRefine((s, ctx) => {
  try {
    if (normalizeVmName(s) !== s)
      ctx.addIssue({
        code: 'custom',
        message: 'must be in normal form (NFC, trimmed): normalize it where it enters',
      });
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message });
  }
});

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

/**
 * The VM name and disk key name the volume. Both may be left out when the volume already has a
 * name (its row, from create or an earlier attach) or CloudStack's volume name carries them; the
 * saga refuses, saying so, when neither does. When given, they must match what the row records.
 */
export const attachRequest = z
  .object({
    ...common,
    sourceVmName: sourceVmName.optional(),
    diskKey: diskKey.optional(),
  })
  .superRefine((r, ctx) => {
    if ((r.sourceVmName === undefined) !== (r.diskKey === undefined)) {
      const missing = r.sourceVmName === undefined ? 'sourceVmName' : 'diskKey';
      ctx.addIssue({
        code: 'custom',
        path: [missing],
        message:
          'sourceVmName and diskKey come together: send both, or neither to keep the name the volume has',
      });
    }
  });
export const detachRequest = z.object(common);
/** `asRoot`: attach as the VM's root disk (CloudStack deviceid 0; the VM must be stopped). */
export const failoverRequest = z.object({ ...common, targetVmId: vmId, asRoot: z.boolean().optional() });
export const failbackRequest = z.object(common);
export const deleteRequest = z.object(common);

/**
 * A whole VM at once: its volumes failed over to the migrated VM (the OS disk as root) or back,
 * in parallel, each its own saga.
 */
export const vmOperationRequest = z.object({
  operationId: uuid.optional(),
  applianceVmId,
  type: z.enum(['failover', 'failback']),
  /** The migrated VM: where a failover sends the volumes, where a failback takes them from. */
  targetVmId: vmId,
  volumes: z
    .array(z.object({ volumeId, asRoot: z.boolean().optional() }))
    .min(1, 'at least one volume')
    .max(64, 'at most 64 volumes')
    .refine((vs) => new Set(vs.map((v) => v.volumeId)).size === vs.length, 'each volume once')
    .refine((vs) => vs.filter((v) => v.asRoot).length <= 1, 'at most one root disk'),
});

export interface VmOperationInput {
  operationId: string;
  type: 'failover' | 'failback';
  applianceVmId: string;
  targetVmId: string;
  volumes: { volumeId: string; asRoot?: boolean }[];
  taskQueuePrefix: string;
  correlationTimeoutMs: number;
}

export interface VmOperationProgress {
  type: 'failover' | 'failback';
  volumes: Record<
    string,
    {
      state: 'pending' | 'running' | 'completed' | 'failed' | 'cancelled' | 'undone' | 'undo-failed';
      operationId?: string;
      error?: string;
    }
  >;
}

/** CloudStack takes sizes in whole GiB; the engine sends bytes. */
export const GIB = 1024 ** 3;

/**
 * create: a new CloudStack volume whose persistent name is born with it, from the VM name and
 * disk key (the engine's metadata source_vm_name / disk_unit_number) or, failing those, from the
 * engine's volume name pattern; refused before anything is created when neither names it.
 */
/**
 * A whole number of `unit`. zod's own integer check gives one message for a fraction and for a
 * number past 2^53 − 1 (`1e20` is whole, but not exactly representable): each gets its own here.
 */
export const wholeNumber = (unit: string) =>
  z.number(`must be a number of ${unit}`).int({
    error: (iss) =>
      iss.code === 'too_big'
        ? `must be at most ${Number.MAX_SAFE_INTEGER} ${unit} (2^53 - 1)`
        : `must be a whole number of ${unit}`,
  });

export const createRequest = z
  .object({
    operationId: uuid.optional(),
    applianceVmId,
    name: z
      .string()
      .min(1, 'must not be empty')
      .max(255, 'must be at most 255 characters')
      .refine((n) => !/[\p{Cc}\p{Cf}]/u.test(n), 'must not contain control or invisible characters'),
    sizeBytes: wholeNumber('bytes').positive('must be positive'),
    diskOfferingId: uuid,
    zoneId: uuid,
    sourceVmName: sourceVmName.optional(),
    diskKey: diskKey.optional(),
  })
  .superRefine((r, ctx) => {
    if ((r.sourceVmName === undefined) !== (r.diskKey === undefined)) {
      ctx.addIssue({
        code: 'custom',
        path: [r.sourceVmName === undefined ? 'sourceVmName' : 'diskKey'],
        message:
          'sourceVmName and diskKey come together: send both, or neither (the volume name then names it)',
      });
    }
  });

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
  /** Absent: the name comes from the volume's row or its CloudStack name (see attach). */
  sourceVmName?: string;
  diskIndex?: number;
}
export type DetachInput = WorkflowContext;
export interface FailoverInput extends WorkflowContext {
  targetVmId: string;
  /** Attach as the target's root disk (deviceid 0): the engine's OS-disk failover. */
  asRoot?: boolean;
}

/** create runs before the volume exists: `volumeId` is empty until CloudStack gives it one. */
export interface CreateInput extends WorkflowContext {
  name: string;
  sizeGb: number;
  diskOfferingId: string;
  zoneId: string;
  sourceVmName?: string;
  diskIndex?: number;
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
  location: VolumeLocation | 'deleted';
  /** create: the new volume's persistent name (also `access` once it is on the appliance). */
  persistentName?: string;
  access?: VolumeAccess;
  /** True when the operation found everything already as wanted. */
  noop?: boolean;
}

/** Progress, as the `progress` query returns it. */
export interface SagaProgress {
  operationId: string;
  type: OperationType;
  currentStep: AuditStepName | null;
  stepsDone: StepName[];
  compensationsRun: { step: StepName; status: 'completed' | 'failed' | 'skipped' }[];
  needsAttention: null | { step: StepName; error: string };
  state: 'running' | 'compensating' | 'waiting-for-operator' | 'completed' | 'failed';
}

/** An operator's answer to a compensation that could not complete, or a request to abort. */
export const operatorActionSchema = z.object({
  action: z.enum(OPERATOR_ACTIONS),
  reason: z.string().min(1, 'a reason is required').max(500),
  operator: z.string().min(1).max(100).default('operator'),
});
export type OperatorAction = z.input<typeof operatorActionSchema>;

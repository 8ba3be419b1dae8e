import { Context } from '@temporalio/activity';
import type { Pool, RowDataPacket } from 'mysql2/promise';
import { z } from 'zod';
import type { CloudStackApi, CsVolume } from '../../src/cloudstack/types.js';
import { CloudStackError } from '../../src/cloudstack/errors.js';
import * as mappings from '../../src/db/mappings.js';
import * as exportsDb from '../../src/db/exports.js';
import * as ops from '../../src/db/operations.js';
import type { EngineRows } from '../../src/engine-contract/engine-rows.js';
import { engineDrift } from '../../src/engine-contract/engine-drift.js';
import * as reconcileDb from '../../src/db/reconcile.js';
import { devicePathSchema } from '../../src/device/types.js';
import { uuid } from '../../src/domain/ids.js';
import { exportNameSchema, namingFromEngineVolumeName } from '../../src/domain/naming.js';
import {
  diskIndex,
  normalizedVmName,
  OPERATION_STATUSES,
  OPERATION_TYPES,
} from '../../src/domain/operations.js';
import { targetPathSchema } from '../../src/domain/paths.js';
import { computeDrift, type DesiredVolume, type Finding } from '../../src/reconcile/drift.js';
import { unpackInventory, type PackedInventory } from '../../src/reconcile/inventory-codec.js';
import { heartbeatWith } from '../heartbeat.js';
import { permanent, withClassification } from '../failures.js';
import { DM_STATES, VOLUME_LOCATIONS } from '../../src/domain/mapping.js';

export interface ControlDeps {
  cloudstack: CloudStackApi;
  db: Pool;
  /**
   * Rows that follow ours in every write's transaction: the migration engine's view in its own
   * database (src/engine-contract/engine-rows.ts), when ENGINE_DB_NAME names one.
   */
  engine?: EngineRows;
}

/** Heartbeat details of CloudStack job activities: the job to poll again after a retry. */
interface JobHeartbeat {
  jobId?: string;
}

/**
 * Options for a CloudStack job call. A cancellation stops the activity only until its job has
 * started: a CloudStack job cannot be called back, so the activity then sees it to its end and
 * the workflow (which waits for the step in flight) compensates knowing the outcome. Abandoning
 * it would let the undo run first, find nothing to undo, and be overtaken by the job.
 */
function jobOptions() {
  const ctx = Context.current();
  const previous = (ctx.info.heartbeatDetails as JobHeartbeat | undefined)?.jobId;
  const beforeJob = new AbortController();
  let jobStarted = previous !== undefined;
  const onCancel = () => {
    if (!jobStarted) beforeJob.abort(ctx.cancellationSignal.reason);
  };
  if (ctx.cancellationSignal.aborted) onCancel();
  else ctx.cancellationSignal.addEventListener('abort', onCancel, { once: true });
  return {
    resumeJobId: previous,
    onJobStarted: (jobId: string) => {
      jobStarted = true;
      heartbeatWith(ctx, { jobId } satisfies JobHeartbeat);
    },
    onPoll: (jobId: string) => heartbeatWith(ctx, { jobId } satisfies JobHeartbeat),
    signal: beforeJob.signal,
  };
}

/** Trimmed view of a CloudStack volume: what the workflows decide on. */
export interface VolumeFacts {
  id: string;
  name: string;
  type: string;
  state: string;
  sizeBytes: number;
  attachedTo: string | null;
  /** CloudStack's device id on the VM it is attached to (0: root disk); null when detached. */
  deviceId: number | null;
}

function facts(v: CsVolume): VolumeFacts {
  return {
    id: v.id,
    name: v.name,
    type: v.type,
    state: v.state,
    sizeBytes: v.size,
    attachedTo: v.virtualmachineid ?? null,
    deviceId: v.virtualmachineid ? (v.deviceid ?? null) : null,
  };
}

/**
 * Inputs are checked on entry, as argument objects, so a refusal (a ZodError, which
 * activities/failures.ts turns into a non-retryable InvalidInput) names the field and nothing
 * has been called or written yet. Checks only: each activity goes on with exactly the values it
 * was given (the UUID schema would lower-case them), so its behaviour is unchanged.
 */
const volumeId = uuid;
const operationId = uuid;
const sizeBytes = z.number('must be a number').int('must be an integer').positive('must be positive');
/** The disk serial the workflows derive from the volume id (`diskSerialFor`): no blanks, no `/`. */
const virtioSerial = z
  .string()
  .regex(/^[A-Za-z0-9._:+-]{1,64}$/, 'must be 1 to 64 letters, digits or . _ : + -');
const location = z.enum(VOLUME_LOCATIONS);
const dmState = z.enum(DM_STATES);
const backend = z.enum(['nbdkit-dir', 'nbd-server']);

const volumeArg = z.object({ volumeId });
/** The step's audit row a database write records in its own transaction (workflows/saga.ts). */
const stepAudit = z.object({
  operationId,
  seq: z.number().int('must be an integer').min(0, 'must be at least 0'),
  step: z
    .string()
    .regex(/^[a-z][a-z0-9:-]{0,63}$/, 'must be a step name: lower-case letters, digits, - and :'),
  startedAt: z.iso.datetime('must be an ISO date-time'),
});
const audit = stepAudit.optional();
const schemas = {
  volume: volumeArg,
  csAttach: z.object({ volumeId, vmId: uuid, deviceId: z.number().int().min(0).max(1000).optional() }),
  csCreate: z.object({
    name: z.string().min(1).max(255),
    sizeGb: z.number().int('must be whole GiB').positive('must be positive'),
    diskOfferingId: uuid,
    zoneId: uuid,
  }),
  checkName: z.object({
    sourceVmName: normalizedVmName.optional(),
    diskIndex: diskIndex.optional(),
    volumeName: z.string().max(255),
  }),
  csDetach: z.object({ volumeId, fromVmId: uuid.optional() }),
  assignName: z.object({
    volumeId,
    sourceVmName: normalizedVmName.optional(),
    diskIndex: diskIndex.optional(),
    volumeName: z.string().max(255).optional(),
    applianceVmId: uuid,
    virtioSerial,
    sizeBytes,
    operationId,
    audit,
  }),
  releaseName: z.object({ volumeId, operationId }),
  updateMapping: z.object({
    volumeId,
    expectedVersion: z.number().int('must be an integer').min(0, 'must be at least 0'),
    patch: z.object({
      location: location.optional(),
      targetVmId: uuid.nullable().optional(),
      cloudstackDeviceId: z
        .number()
        .int('must be an integer')
        .min(0, 'must be at least 0')
        .nullable()
        .optional(),
      devicePath: devicePathSchema.nullable().optional(),
      dmState: dmState.optional(),
      sizeBytes: sizeBytes.optional(),
    }),
    operationId,
    audit,
  }),
  restoreMapping: z.object({ before: z.object({ volumeId }), operationId }),
  clearStaleDevicePath: z.object({ devicePath: devicePathSchema, exceptVolumeId: volumeId, audit }),
  volumeWrite: z.object({ volumeId, audit }),
  upsertExport: z.object({
    exportName: exportNameSchema,
    volumeId,
    targetPath: targetPathSchema,
    configPath: targetPathSchema,
    backend,
    status: z.enum(['active', 'error']),
    audit,
  }),
  operationStart: z.object({
    operationId,
    type: z.enum(OPERATION_TYPES),
    volumeId: volumeId.nullable(),
    vmId: uuid.nullable(),
  }),
  operationStatus: z.object({
    operationId,
    status: z.enum(OPERATION_STATUSES),
    volumeId: volumeId.optional(),
  }),
  step: z.object({ operationId, seq: z.number().int('must be an integer').min(0, 'must be at least 0') }),
  reconStart: z.object({ applianceVmId: uuid, dryRun: z.boolean() }),
  reconCompare: z.object({ applianceVmId: uuid, backend }),
  nameInUse: z.object({ name: z.string().min(1, 'must not be empty').max(255) }),
  reconFinish: z.object({
    id: z.number().int('must be an integer').positive('must be positive'),
    status: z.enum(['completed', 'failed']),
  }),
};
/**
 * A volume created under this name in this zone and never attached: what a lost create reply
 * left. Anything else under the name (attached, another size) is not ours to adopt.
 */
async function findCreated(
  cloudstack: CloudStackApi,
  a: { name: string; sizeGb: number; zoneId: string },
): Promise<CsVolume | undefined> {
  let listed: CsVolume[];
  try {
    listed = await cloudstack.listVolumes({ name: a.name, zoneid: a.zoneId });
  } catch (err) {
    // CloudStack has no such zone: no volume can have been created in it (the create was refused).
    if (err instanceof CloudStackError && err.parameter === 'zoneid') return undefined;
    throw err;
  }
  const same = listed.filter(
    (v) =>
      v.name === a.name && v.type === 'DATADISK' && !v.virtualmachineid && v.size === a.sizeGb * 1024 ** 3,
  );
  return same.length === 1 ? same[0] : undefined;
}

/**
 * A database write that ends a saga step may carry the step's audit row: it is then recorded
 * completed in the write's own transaction (src/db/operations.ts, writeRecordingStep).
 */
interface Recorded {
  audit?: ops.StepAudit;
}

/** Parse, throwing the ZodError (named fields) on bad input; returns nothing on purpose. */
function check(schema: z.ZodType, value: unknown): void {
  schema.parse(value);
}

export function createControlActivities({ cloudstack, db, engine }: ControlDeps) {
  /** A write of one volume's rows, with the engine's following in its transaction. */
  const follow = (volumeId: string) => (engine ? { follower: engine, volumeIds: [volumeId] } : undefined);
  return withClassification({
    // --- CloudStack -----------------------------------------------------------------------
    async csGetVolume(volumeId: string): Promise<VolumeFacts | null> {
      check(schemas.volume, { volumeId });
      const v = await cloudstack.getVolume(volumeId);
      return v ? facts(v) : null;
    },
    /**
     * Idempotent attach; after a timeout the retry polls the job it already started. `deviceId`
     * 0 attaches as the VM's root disk (the VM must be stopped and have none).
     */
    async csAttach(a: { volumeId: string; vmId: string; deviceId?: number }): Promise<VolumeFacts> {
      check(schemas.csAttach, a);
      const opts = a.deviceId === undefined ? jobOptions() : { ...jobOptions(), deviceId: a.deviceId };
      return facts(await cloudstack.attachVolume(a.volumeId, a.vmId, opts));
    },
    /**
     * Create a volume, once: a retry after a lost reply polls the job its first attempt started
     * (heartbeat), and a retry that never saw the job id finds the volume by its name in the
     * zone instead of creating a second one (names are unique per engine disk).
     */
    async csCreate(a: {
      name: string;
      sizeGb: number;
      diskOfferingId: string;
      zoneId: string;
    }): Promise<VolumeFacts> {
      check(schemas.csCreate, a);
      const opts = jobOptions();
      if (!opts.resumeJobId) {
        const found = await findCreated(cloudstack, a);
        if (found) return facts(found);
      }
      return facts(await cloudstack.createVolume(a, opts));
    },
    /** The volume a create may have made although its reply was lost (the undo's target). */
    async csFindCreated(a: {
      name: string;
      sizeGb: number;
      diskOfferingId: string;
      zoneId: string;
    }): Promise<VolumeFacts | null> {
      check(schemas.csCreate, a);
      const v = await findCreated(cloudstack, a);
      return v ? facts(v) : null;
    },
    /** Idempotent detach; `fromVmId` guards against detaching from an unexpected VM. */
    async csDetach(a: { volumeId: string; fromVmId?: string }): Promise<VolumeFacts> {
      check(schemas.csDetach, a);
      return facts(await cloudstack.detachVolume(a.volumeId, { ...jobOptions(), fromVmId: a.fromVmId }));
    },
    async csDelete(a: { volumeId: string }): Promise<void> {
      check(schemas.volume, a);
      await cloudstack.deleteVolume(a.volumeId);
    },

    // --- database: mappings ----------------------------------------------------------------
    async dbGetMapping(volumeId: string): Promise<mappings.MappingRecord | null> {
      check(schemas.volume, { volumeId });
      return (await mappings.getMapping(db, volumeId)) ?? null;
    },
    async dbAssignName(input: mappings.AssignNameInput & Recorded) {
      check(schemas.assignName, input);
      try {
        return await mappings.assignName(db, input, input.audit, engine);
      } catch (err) {
        // Refusals: the caller's mistake or a collision; retrying cannot change the answer.
        if (
          err instanceof mappings.DiskAlreadyMappedError ||
          err instanceof mappings.NameCollisionError ||
          err instanceof mappings.MappingMismatchError ||
          err instanceof mappings.NameUnknownError
        )
          throw permanent(err.message, err.name);
        throw err;
      }
    },
    /** create's validate: the name the new volume will have, or the refusal it would meet. */
    async dbCheckName(a: { sourceVmName?: string; diskIndex?: number; volumeName: string }): Promise<string> {
      check(schemas.checkName, a);
      const naming =
        a.sourceVmName !== undefined && a.diskIndex !== undefined
          ? { sourceVmName: a.sourceVmName, diskIndex: a.diskIndex }
          : namingFromEngineVolumeName(a.volumeName);
      try {
        if (!naming) throw new mappings.NameUnknownError('(new)', a.volumeName);
        return await mappings.refuseTaken(db, naming);
      } catch (err) {
        if (
          err instanceof mappings.DiskAlreadyMappedError ||
          err instanceof mappings.NameCollisionError ||
          err instanceof mappings.NameUnknownError
        )
          throw permanent(err.message, err.name);
        throw err;
      }
    },
    async dbReleaseName(a: { volumeId: string; operationId: string }): Promise<boolean> {
      check(schemas.releaseName, a);
      return ops.writeRecordingStep(
        db,
        undefined,
        (tx) => mappings.releaseName(tx, a.volumeId, a.operationId),
        follow(a.volumeId),
      );
    },
    /**
     * CAS update. Safe to run twice: if the row is exactly one version past `expectedVersion`,
     * written by this operation and holding the patch, it is our own earlier attempt (committed
     * before its reply was lost, or before the worker running it as a local activity died): return
     * it instead of failing the CAS. Any other writer in between is a conflict.
     */
    async dbUpdateMapping(
      a: {
        volumeId: string;
        expectedVersion: number;
        patch: mappings.MappingPatch;
        operationId: string;
      } & Recorded,
    ): Promise<mappings.MappingRecord> {
      check(schemas.updateMapping, a);
      try {
        return await ops.writeRecordingStep(
          db,
          a.audit,
          (tx) => mappings.updateMapping(tx, a.volumeId, a.expectedVersion, a.patch, a.operationId),
          follow(a.volumeId),
        );
      } catch (err) {
        if (!(err instanceof mappings.StaleMappingError)) throw err;
        const now = await mappings.getMapping(db, a.volumeId);
        if (
          now &&
          now.version === a.expectedVersion + 1 &&
          now.lastOperationId === a.operationId &&
          matches(now, a.patch)
        )
          return now; // its audit row, if it carried one, was committed with that attempt

        throw permanent(err.message, 'StaleMapping');
      }
    },
    /** Compensation: put the recorded fields back as they were before this operation. */
    async dbRestoreMapping(a: { before: mappings.MappingRecord; operationId: string }): Promise<void> {
      check(schemas.restoreMapping, a);
      const now = await mappings.getMapping(db, a.before.volumeId);
      if (!now) return;
      const patch: mappings.MappingPatch = {
        location: a.before.location,
        targetVmId: a.before.targetVmId,
        // Rows of a release before the column have none: nothing to put back.
        ...(a.before.cloudstackDeviceId !== undefined
          ? { cloudstackDeviceId: a.before.cloudstackDeviceId }
          : {}),
        devicePath: a.before.devicePath,
        dmState: a.before.dmState,
      };
      if (matches(now, patch)) return;
      await ops.writeRecordingStep(
        db,
        undefined,
        (tx) => mappings.updateMapping(tx, now.volumeId, now.version, patch, a.operationId),
        follow(now.volumeId),
      );
    },
    async dbClearStaleDevicePath(
      a: { devicePath: string; exceptVolumeId: string } & Recorded,
    ): Promise<string[]> {
      check(schemas.clearStaleDevicePath, a);
      return ops.writeRecordingStep(db, a.audit, (tx) =>
        mappings.clearStaleDevicePath(tx, a.devicePath, a.exceptVolumeId),
      );
    },
    async dbDeleteMapping(a: { volumeId: string } & Recorded): Promise<boolean> {
      check(schemas.volumeWrite, a);
      return ops.writeRecordingStep(
        db,
        a.audit,
        async (tx) => {
          await exportsDb.deleteExport(tx, a.volumeId);
          return mappings.deleteMapping(tx, a.volumeId);
        },
        follow(a.volumeId),
      );
    },

    // --- database: exports -----------------------------------------------------------------
    async dbGetExport(volumeId: string): Promise<exportsDb.ExportRecord | null> {
      check(schemas.volume, { volumeId });
      return (await exportsDb.getExport(db, volumeId)) ?? null;
    },
    async dbUpsertExport(e: exportsDb.ExportRecord & Recorded): Promise<void> {
      check(schemas.upsertExport, e);
      await ops.writeRecordingStep(db, e.audit, (tx) => exportsDb.upsertExport(tx, e), follow(e.volumeId));
    },
    async dbDeleteExport(a: { volumeId: string } & Recorded): Promise<boolean> {
      check(schemas.volumeWrite, a);
      return ops.writeRecordingStep(
        db,
        a.audit,
        (tx) => exportsDb.deleteExport(tx, a.volumeId),
        follow(a.volumeId),
      );
    },

    // --- audit trail -----------------------------------------------------------------------
    async auditOperationStart(o: ops.OperationStart): Promise<void> {
      check(schemas.operationStart, o);
      await ops.recordOperationStart(db, o);
    },
    async auditOperationStatus(a: {
      operationId: string;
      status: ops.OperationStatus;
      response?: unknown;
      error?: string | null;
      finished?: boolean;
      volumeId?: string;
    }): Promise<void> {
      check(schemas.operationStatus, a);
      await ops.recordOperationStatus(db, a.operationId, a.status, a);
    },
    async auditStep(s: ops.StepRecord): Promise<void> {
      check(schemas.step, s);
      await ops.recordStep(db, s);
    },

    // --- reconciliation --------------------------------------------------------------------
    async reconStart(r: {
      workflowId: string;
      runId: string;
      applianceVmId: string;
      dryRun: boolean;
    }): Promise<number> {
      check(schemas.reconStart, r);
      return reconcileDb.startReconcileRun(db, r);
    },
    /** Desired state (database) + CloudStack's view against the appliance's inventory. */
    async reconCompare(a: {
      applianceVmId: string;
      inventory: PackedInventory;
      backend: 'nbdkit-dir' | 'nbd-server';
    }): Promise<Finding[]> {
      check(schemas.reconCompare, a);
      const inventory = unpackInventory(a.inventory);
      const rows = await mappings.listMappings(db, { applianceVmId: a.applianceVmId });
      const exportRows = new Map(
        (await exportsDb.listExports(db, { applianceVmId: a.applianceVmId })).map((e) => [e.volumeId, e]),
      );
      const desired: DesiredVolume[] = rows.map((r) => ({
        volumeId: r.volumeId,
        persistentName: r.persistentName,
        location: r.location,
        targetVmId: r.targetVmId,
        devicePath: r.devicePath,
        dmState: r.dmState,
        sizeBytes: r.sizeBytes,
        serial: r.virtioSerial,
        exportName: exportRows.get(r.volumeId)?.exportName ?? null,
      }));
      const attachments: Record<string, string | null> = {};
      const wanted = new Set(rows.map((r) => r.volumeId));
      for (const v of await cloudstack.listVolumes()) {
        if (wanted.has(v.id)) attachments[v.id] = v.virtualmachineid ?? null;
      }
      const findings = computeDrift(
        desired,
        inventory,
        { attachments },
        {
          applianceVmId: a.applianceVmId,
          backend: a.backend,
        },
      );
      if (!engine) return findings;
      // The engine's rows of the same volumes, and any of volumes we do not hold at all.
      const read = await engine.read(db);
      const strangers = [
        ...new Set([...read.mappings.map((r) => r.volume_uuid), ...read.exports.map((r) => r.volume_id)]),
      ].map(String);
      const [known] = strangers.length
        ? await db.query<RowDataPacket[]>('SELECT volume_id FROM device_mappings WHERE volume_id IN (?)', [
            strangers,
          ])
        : [[] as RowDataPacket[]];
      const ours = rows.map((m) => ({ mapping: m, exported: exportRows.get(m.volumeId) }));
      return [
        ...findings,
        ...engineDrift(ours, read, {
          nbdPort: engine.nbdPort,
          database: engine.database,
          known: new Set(known.map((r) => String(r.volume_id))),
          hold: new Set(
            findings.filter((f) => f.kind.startsWith('cloudstack-')).flatMap((f) => f.volumeId ?? []),
          ),
        }),
      ];
    },
    /**
     * Orphan check right before removal: does any row claim this persistent name now, or, for an
     * export under the engine's name (`migration-vol-<volume id>`), this volume id?
     */
    async dbNameInUse(name: string): Promise<boolean> {
      check(schemas.nameInUse, { name });
      const [rows] = await db.query<RowDataPacket[]>(
        'SELECT 1 FROM device_mappings WHERE persistent_device_name = ? OR volume_id = ? LIMIT 1',
        [name, name],
      );
      return rows.length > 0;
    },
    async reconFinish(a: {
      id: number;
      status: 'completed' | 'failed';
      findings: reconcileDb.FindingOutcome[];
    }) {
      check(schemas.reconFinish, a);
      await reconcileDb.finishReconcileRun(db, a.id, a.status, a.findings);
    },
  });
}

function matches(row: mappings.MappingRecord, patch: mappings.MappingPatch): boolean {
  return (Object.entries(patch) as [keyof mappings.MappingPatch, unknown][]).every(
    ([k, v]) => v === undefined || (row as unknown as Record<string, unknown>)[k] === v,
  );
}

export type ControlActivities = ReturnType<typeof createControlActivities>;

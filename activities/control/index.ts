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
import { isAuditStepName } from '../../src/domain/steps.js';
import { exportNameSchema, namingFromEngineVolumeName } from '../../src/domain/naming.js';
import {
  diskIndex,
  GIB,
  normalizedVmName,
  OPERATION_STATUSES,
  OPERATION_TYPES,
} from '../../src/domain/operations.js';
import { targetPathSchema } from '../../src/domain/paths.js';
import { attachmentsOf, desiredVolumesOf } from '../../src/reconcile/desired.js';
import { computeDrift, type Finding } from '../../src/reconcile/drift.js';
import { unpackInventory, type PackedInventory } from '../../src/reconcile/inventory-codec.js';
import { activity, positional, typed, unchecked } from '../define.js';
import { heartbeatWith } from '../heartbeat.js';
import { permanent, withClassification } from '../failures.js';
import { DM_STATES, EXPORT_BACKENDS, VOLUME_LOCATIONS } from '../../src/domain/mapping.js';

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
 * The fields the activities' schemas are made of. Each activity's own schema comes with it, in
 * createControlActivities below (activities/define.ts: checks only, the values go on as given).
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
const backend = z.enum(EXPORT_BACKENDS);
const seq = z.number().int('must be an integer').min(0, 'must be at least 0');

/** A step the audit trail may hold: one of src/domain/steps.ts, or its undo, or an operator's answer. */
const stepName = z.string().refine(isAuditStepName, 'must be a saga step named in src/domain/steps.ts');
/**
 * A database write that ends a saga step may carry the step's audit row (workflows/saga.ts): it
 * is then recorded completed in the write's own transaction (src/db/operations.ts,
 * writeRecordingStep).
 */
const audit = z
  .object({
    operationId,
    seq,
    step: stepName,
    startedAt: z.iso.datetime('must be an ISO date-time'),
  })
  .optional();
/** A volume created in CloudStack: csCreate's argument, and csFindCreated's. */
const createArgs = z.object({
  name: z.string().min(1).max(255),
  sizeGb: z.number().int('must be whole GiB').positive('must be positive'),
  diskOfferingId: uuid,
  zoneId: uuid,
});

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
    (v) => v.name === a.name && v.type === 'DATADISK' && !v.virtualmachineid && v.size === a.sizeGb * GIB,
  );
  return same.length === 1 ? same[0] : undefined;
}

/**
 * The control worker's activities. Each is declared once: its schema, the type of its argument
 * (derived from the schema), its function; its kind is in ./kinds.ts (the workflow bundle reads
 * it there).
 */
export function createControlActivities({ cloudstack, db, engine }: ControlDeps) {
  /** A write of one volume's rows, with the engine's following in its transaction. */
  const follow = (volumeId: string) => (engine ? { follower: engine, volumeIds: [volumeId] } : undefined);
  return withClassification({
    // --- CloudStack -----------------------------------------------------------------------
    csGetVolume: positional('volumeId', volumeId, async (volumeId): Promise<VolumeFacts | null> => {
      const v = await cloudstack.getVolume(volumeId);
      return v ? facts(v) : null;
    }),
    /**
     * Idempotent attach; after a timeout the retry polls the job it already started. `deviceId`
     * 0 attaches as the VM's root disk (the VM must be stopped and have none).
     */
    csAttach: activity(
      z.object({ volumeId, vmId: uuid, deviceId: z.number().int().min(0).max(1000).optional() }),
      async (a): Promise<VolumeFacts> => {
        const opts = a.deviceId === undefined ? jobOptions() : { ...jobOptions(), deviceId: a.deviceId };
        return facts(await cloudstack.attachVolume(a.volumeId, a.vmId, opts));
      },
    ),
    /**
     * Create a volume, once: a retry after a lost reply polls the job its first attempt started
     * (heartbeat), and a retry that never saw the job id finds the volume by its name in the
     * zone instead of creating a second one (names are unique per engine disk).
     */
    csCreate: activity(createArgs, async (a): Promise<VolumeFacts> => {
      const opts = jobOptions();
      if (!opts.resumeJobId) {
        const found = await findCreated(cloudstack, a);
        if (found) return facts(found);
      }
      return facts(await cloudstack.createVolume(a, opts));
    }),
    /** The volume a create may have made although its reply was lost (the undo's target). */
    csFindCreated: activity(createArgs, async (a): Promise<VolumeFacts | null> => {
      const v = await findCreated(cloudstack, a);
      return v ? facts(v) : null;
    }),
    /** Idempotent detach; `fromVmId` guards against detaching from an unexpected VM. */
    csDetach: activity(z.object({ volumeId, fromVmId: uuid.optional() }), async (a): Promise<VolumeFacts> =>
      facts(await cloudstack.detachVolume(a.volumeId, { ...jobOptions(), fromVmId: a.fromVmId })),
    ),
    csDelete: activity(z.object({ volumeId }), async (a): Promise<void> => {
      await cloudstack.deleteVolume(a.volumeId);
    }),

    // --- database: mappings ----------------------------------------------------------------
    dbGetMapping: positional(
      'volumeId',
      volumeId,
      async (volumeId): Promise<mappings.MappingRecord | null> =>
        (await mappings.getMapping(db, volumeId)) ?? null,
    ),
    /** mappings.AssignNameInput, and the step's audit row. */
    dbAssignName: activity(
      z.object({
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
      async (input) => {
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
    ),
    /** create's validate: the name the new volume will have, or the refusal it would meet. */
    dbCheckName: activity(
      z.object({
        sourceVmName: normalizedVmName.optional(),
        diskIndex: diskIndex.optional(),
        volumeName: z.string().max(255),
      }),
      async (a): Promise<string> => {
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
    ),
    dbReleaseName: activity(z.object({ volumeId, operationId }), async (a): Promise<boolean> =>
      ops.writeRecordingStep(
        db,
        undefined,
        (tx) => mappings.releaseName(tx, a.volumeId, a.operationId),
        follow(a.volumeId),
      ),
    ),
    /**
     * CAS update. Safe to run twice: if the row is exactly one version past `expectedVersion`,
     * written by this operation and holding the patch, it is our own earlier attempt (committed
     * before its reply was lost, or before the worker running it as a local activity died): return
     * it instead of failing the CAS. Any other writer in between is a conflict.
     */
    dbUpdateMapping: activity(
      z.object({
        volumeId,
        expectedVersion: z.number().int('must be an integer').min(0, 'must be at least 0'),
        /** mappings.MappingPatch. */
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
      async (a): Promise<mappings.MappingRecord> => {
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
    ),
    /** Compensation: put the recorded fields back as they were before this operation. */
    dbRestoreMapping: activity(
      // The row as dbGetMapping returned it; its volume id is what is checked.
      z.object({ before: typed<mappings.MappingRecord>()(z.object({ volumeId })), operationId }),
      async (a): Promise<void> => {
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
    ),
    dbClearStaleDevicePath: activity(
      z.object({ devicePath: devicePathSchema, exceptVolumeId: volumeId, audit }),
      async (a): Promise<string[]> =>
        ops.writeRecordingStep(db, a.audit, (tx) =>
          mappings.clearStaleDevicePath(tx, a.devicePath, a.exceptVolumeId),
        ),
    ),
    dbDeleteMapping: activity(z.object({ volumeId, audit }), async (a): Promise<boolean> =>
      ops.writeRecordingStep(
        db,
        a.audit,
        async (tx) => {
          await exportsDb.deleteExport(tx, a.volumeId);
          return mappings.deleteMapping(tx, a.volumeId);
        },
        follow(a.volumeId),
      ),
    ),

    // --- database: exports -----------------------------------------------------------------
    dbGetExport: positional(
      'volumeId',
      volumeId,
      async (volumeId): Promise<exportsDb.ExportRecord | null> =>
        (await exportsDb.getExport(db, volumeId)) ?? null,
    ),
    /** exportsDb.ExportRecord, and the step's audit row. */
    dbUpsertExport: activity(
      z.object({
        exportName: exportNameSchema,
        volumeId,
        targetPath: targetPathSchema,
        configPath: targetPathSchema,
        backend,
        status: z.enum(['active', 'error']),
        audit,
      }),
      async (e): Promise<void> => {
        await ops.writeRecordingStep(db, e.audit, (tx) => exportsDb.upsertExport(tx, e), follow(e.volumeId));
      },
    ),
    dbDeleteExport: activity(z.object({ volumeId, audit }), async (a): Promise<boolean> =>
      ops.writeRecordingStep(db, a.audit, (tx) => exportsDb.deleteExport(tx, a.volumeId), follow(a.volumeId)),
    ),

    // --- audit trail -----------------------------------------------------------------------
    auditOperationStart: activity(
      typed<ops.OperationStart>()(
        z.object({
          operationId,
          type: z.enum(OPERATION_TYPES),
          volumeId: volumeId.nullable(),
          vmId: uuid.nullable(),
        }),
      ),
      async (o): Promise<void> => {
        await ops.recordOperationStart(db, o);
      },
    ),
    auditOperationStatus: activity(
      z.object({
        operationId,
        status: z.enum(OPERATION_STATUSES),
        response: unchecked<unknown>().optional(),
        error: unchecked<string | null>().optional(),
        finished: unchecked<boolean>().optional(),
        volumeId: volumeId.optional(),
      }),
      async (a): Promise<void> => {
        await ops.recordOperationStatus(db, a.operationId, a.status, a);
      },
    ),
    auditStep: activity(
      typed<ops.StepRecord>()(z.object({ operationId, seq, step: stepName })),
      async (s): Promise<void> => {
        await ops.recordStep(db, s);
      },
    ),

    // --- reconciliation --------------------------------------------------------------------
    reconStart: activity(
      z.object({
        workflowId: unchecked<string>(),
        runId: unchecked<string>(),
        applianceVmId: uuid,
        dryRun: z.boolean(),
      }),
      async (r): Promise<number> => reconcileDb.startReconcileRun(db, r),
    ),
    /** Desired state (database) + CloudStack's view against the appliance's inventory. */
    reconCompare: activity(
      z.object({ applianceVmId: uuid, inventory: unchecked<PackedInventory>(), backend }),
      async (a): Promise<Finding[]> => {
        const inventory = unpackInventory(a.inventory);
        const rows = await mappings.listMappings(db, { applianceVmId: a.applianceVmId });
        const exportRows = new Map(
          (await exportsDb.listExports(db, { applianceVmId: a.applianceVmId })).map((e) => [e.volumeId, e]),
        );
        const findings = computeDrift(
          desiredVolumesOf(rows, exportRows),
          inventory,
          { attachments: attachmentsOf(rows, await cloudstack.listVolumes()) },
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
    ),
    /**
     * Orphan check right before removal: does any row claim this persistent name now, or, for an
     * export under the engine's name (`migration-vol-<volume id>`), this volume id?
     */
    dbNameInUse: positional(
      'name',
      z.string().min(1, 'must not be empty').max(255),
      async (name): Promise<boolean> => {
        const [rows] = await db.query<RowDataPacket[]>(
          'SELECT 1 FROM device_mappings WHERE persistent_device_name = ? OR volume_id = ? LIMIT 1',
          [name, name],
        );
        return rows.length > 0;
      },
    ),
    reconFinish: activity(
      z.object({
        id: z.number().int('must be an integer').positive('must be positive'),
        status: z.enum(['completed', 'failed']),
        findings: unchecked<reconcileDb.FindingOutcome[]>(),
      }),
      async (a): Promise<void> => {
        await reconcileDb.finishReconcileRun(db, a.id, a.status, a.findings);
      },
    ),
  });
}

function matches(row: mappings.MappingRecord, patch: mappings.MappingPatch): boolean {
  return (Object.entries(patch) as [keyof mappings.MappingPatch, unknown][]).every(
    ([k, v]) => v === undefined || (row as unknown as Record<string, unknown>)[k] === v,
  );
}

export type ControlActivities = ReturnType<typeof createControlActivities>;

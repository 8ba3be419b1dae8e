import { Context } from '@temporalio/activity';
import type { Pool, RowDataPacket } from 'mysql2/promise';
import type { CloudStackApi, CsVolume } from '../../src/cloudstack/types.js';
import * as mappings from '../../src/db/mappings.js';
import * as exportsDb from '../../src/db/exports.js';
import * as ops from '../../src/db/operations.js';
import * as reconcileDb from '../../src/db/reconcile.js';
import { computeDrift, type DesiredVolume, type Finding } from '../../src/reconcile/drift.js';
import { unpackInventory, type PackedInventory } from '../../src/reconcile/inventory-codec.js';
import { permanent, withClassification } from '../failures.js';

export interface ControlDeps {
  cloudstack: CloudStackApi;
  db: Pool;
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
      ctx.heartbeat({ jobId } satisfies JobHeartbeat);
    },
    onPoll: (jobId: string) => ctx.heartbeat({ jobId } satisfies JobHeartbeat),
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
}

function facts(v: CsVolume): VolumeFacts {
  return {
    id: v.id,
    name: v.name,
    type: v.type,
    state: v.state,
    sizeBytes: v.size,
    attachedTo: v.virtualmachineid ?? null,
  };
}

export function createControlActivities({ cloudstack, db }: ControlDeps) {
  return withClassification({
    // --- CloudStack -----------------------------------------------------------------------
    async csGetVolume(volumeId: string): Promise<VolumeFacts | null> {
      const v = await cloudstack.getVolume(volumeId);
      return v ? facts(v) : null;
    },
    /** Idempotent attach; after a timeout the retry polls the job it already started. */
    async csAttach(a: { volumeId: string; vmId: string }): Promise<VolumeFacts> {
      return facts(await cloudstack.attachVolume(a.volumeId, a.vmId, jobOptions()));
    },
    /** Idempotent detach; `fromVmId` guards against detaching from an unexpected VM. */
    async csDetach(a: { volumeId: string; fromVmId?: string }): Promise<VolumeFacts> {
      return facts(await cloudstack.detachVolume(a.volumeId, { ...jobOptions(), fromVmId: a.fromVmId }));
    },
    async csDelete(a: { volumeId: string }): Promise<void> {
      await cloudstack.deleteVolume(a.volumeId);
    },

    // --- database: mappings ----------------------------------------------------------------
    async dbGetMapping(volumeId: string): Promise<mappings.MappingRecord | null> {
      return (await mappings.getMapping(db, volumeId)) ?? null;
    },
    async dbAssignName(input: mappings.AssignNameInput) {
      try {
        return await mappings.assignName(db, input);
      } catch (err) {
        if (err instanceof mappings.DiskAlreadyMappedError) throw permanent(err.message, 'DiskAlreadyMapped');
        throw err;
      }
    },
    async dbReleaseName(a: { volumeId: string; operationId: string }): Promise<boolean> {
      return mappings.releaseName(db, a.volumeId, a.operationId);
    },
    /**
     * CAS update. Idempotent under retry: if the row already holds the patch (our own earlier
     * attempt committed before its reply was lost), return it instead of failing the CAS.
     */
    async dbUpdateMapping(a: {
      volumeId: string;
      expectedVersion: number;
      patch: mappings.MappingPatch;
      operationId: string;
    }): Promise<mappings.MappingRecord> {
      try {
        return await mappings.updateMapping(db, a.volumeId, a.expectedVersion, a.patch, a.operationId);
      } catch (err) {
        if (!(err instanceof mappings.StaleMappingError)) throw err;
        const now = await mappings.getMapping(db, a.volumeId);
        if (now && now.lastOperationId === a.operationId && matches(now, a.patch)) return now;
        throw permanent(err.message, 'StaleMapping');
      }
    },
    /** Compensation: put the recorded fields back as they were before this operation. */
    async dbRestoreMapping(a: { before: mappings.MappingRecord; operationId: string }): Promise<void> {
      const now = await mappings.getMapping(db, a.before.volumeId);
      if (!now) return;
      const patch: mappings.MappingPatch = {
        location: a.before.location,
        targetVmId: a.before.targetVmId,
        devicePath: a.before.devicePath,
        dmState: a.before.dmState,
      };
      if (matches(now, patch)) return;
      await mappings.updateMapping(db, now.volumeId, now.version, patch, a.operationId);
    },
    async dbClearStaleDevicePath(a: { devicePath: string; exceptVolumeId: string }): Promise<string[]> {
      return mappings.clearStaleDevicePath(db, a.devicePath, a.exceptVolumeId);
    },
    async dbDeleteMapping(a: { volumeId: string }): Promise<boolean> {
      await exportsDb.deleteExport(db, a.volumeId);
      return mappings.deleteMapping(db, a.volumeId);
    },

    // --- database: exports -----------------------------------------------------------------
    async dbGetExport(volumeId: string): Promise<exportsDb.ExportRecord | null> {
      return (await exportsDb.getExport(db, volumeId)) ?? null;
    },
    async dbUpsertExport(e: exportsDb.ExportRecord): Promise<void> {
      await exportsDb.upsertExport(db, e);
    },
    async dbDeleteExport(a: { volumeId: string }): Promise<boolean> {
      return exportsDb.deleteExport(db, a.volumeId);
    },

    // --- audit trail -----------------------------------------------------------------------
    async auditOperationStart(o: ops.OperationStart): Promise<void> {
      await ops.recordOperationStart(db, o);
    },
    async auditOperationStatus(a: {
      operationId: string;
      status: ops.OperationStatus;
      response?: unknown;
      error?: string | null;
      finished?: boolean;
    }): Promise<void> {
      await ops.recordOperationStatus(db, a.operationId, a.status, a);
    },
    async auditStep(s: ops.StepRecord): Promise<void> {
      await ops.recordStep(db, s);
    },

    // --- reconciliation --------------------------------------------------------------------
    async reconStart(r: {
      workflowId: string;
      runId: string;
      applianceVmId: string;
      dryRun: boolean;
    }): Promise<number> {
      return reconcileDb.startReconcileRun(db, r);
    },
    /** Desired state (database) + CloudStack's view against the appliance's inventory. */
    async reconCompare(a: {
      applianceVmId: string;
      inventory: PackedInventory;
      backend: 'nbdkit-dir' | 'nbd-server';
    }): Promise<Finding[]> {
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
      return computeDrift(
        desired,
        inventory,
        { attachments },
        {
          applianceVmId: a.applianceVmId,
          backend: a.backend,
        },
      );
    },
    /** Orphan check right before removal: does any row claim this persistent name now? */
    async dbNameInUse(name: string): Promise<boolean> {
      const [rows] = await db.query<RowDataPacket[]>(
        'SELECT 1 FROM device_mappings WHERE persistent_device_name = ? LIMIT 1',
        [name],
      );
      return rows.length > 0;
    },
    async reconFinish(a: {
      id: number;
      status: 'completed' | 'failed';
      findings: reconcileDb.FindingOutcome[];
    }) {
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

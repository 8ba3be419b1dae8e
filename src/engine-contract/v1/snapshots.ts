import { z } from 'zod';
import { getMapping } from '../../db/mappings.js';
import {
  getSnapshot,
  listSnapshotsForContext,
  removeSnapshotsForContext,
  trackSnapshot,
  updateSnapshot,
  type SnapshotRecord,
} from '../../db/snapshots.js';
import type { PoolConnection } from 'mysql2/promise';
import { inTransaction } from '../../db/follow.js';
import { uuid } from '../../domain/ids.js';
import { EngineRowConflictError } from '../engine-rows.js';
import { ApiError } from '../../api/errors.js';
import { oldError } from './contract.js';
import { engineDevicePath, isNamed, operationModeOf } from '../engine-view.js';
import type { V1Scope } from './index.js';

const errors = { 400: oldError, 401: oldError, 404: oldError, 415: oldError, 500: oldError };
const text = (max: number) =>
  z.string().min(1, 'must not be empty').max(max, `must be at most ${max} characters`);

/** The engine's VolumeSnapshot shape (multi-volume test failover). */
const oldSnapshot = z.object({
  volume_uuid: z.string(),
  vm_context_id: z.string(),
  volume_name: z.string(),
  device_path: z.string(),
  operation_mode: z.string(),
  snapshot_id: z.string().optional(),
  snapshot_created_at: z.string().optional(),
  snapshot_status: z.string(),
});

/**
 * Snapshot bookkeeping for the engine's test failover: it snapshots each volume in CloudStack,
 * tracks the ids here, reads them back per VM context to revert, and clears them. Each write
 * keeps the engine's device_mappings row in its transaction, as the old daemon kept the snapshot
 * there. A volume this service does not hold is refused (the old daemon refused one it had no
 * mapping for). A volume tracked again under another VM context moves to it, as on the old
 * daemon; the answer says from where (`moved_from_vm_context_id`), and the others stay.
 */
export function registerSnapshotRoutes({ api, deps, guard }: V1Scope): void {
  const view = async (s: SnapshotRecord) => {
    const m = await getMapping(deps.db, s.volumeId);
    return {
      volume_uuid: s.volumeId,
      vm_context_id: s.vmContextId,
      volume_name: s.snapshotName ?? '',
      device_path: m && isNamed(m) ? engineDevicePath(m) : '',
      operation_mode: m ? operationModeOf(m) : 'oma',
      snapshot_id: s.snapshotId,
      snapshot_created_at: s.createdAt.toISOString(),
      snapshot_status: s.snapshotStatus,
    };
  };
  /** One write of ours and the engine's row of it, in one transaction; a context it lacks is named. */
  const write = <T>(fn: (tx: PoolConnection) => Promise<T>) =>
    inTransaction(deps.db, fn).catch((err: unknown) => {
      if (
        err instanceof EngineRowConflictError &&
        /vm_context_id|fk_device_mappings_context/.test(err.message)
      )
        throw new ApiError(
          400,
          'invalid_request',
          `vm_context_id: the engine's database has no such VM context`,
          [{ field: 'vm_context_id', message: 'unknown VM context' }],
        );
      throw err;
    });

  api.post(
    '/snapshots/track',
    {
      onRequest: guard,
      schema: {
        body: z.object({
          volume_uuid: uuid,
          vm_context_id: text(191),
          snapshot_id: text(191),
          snapshot_name: z.string().max(255).optional(),
          disk_id: z.string().max(64).optional(),
          snapshot_status: z.string().max(50).optional(),
        }),
        response: { 201: oldSnapshot.extend({ moved_from_vm_context_id: z.string().optional() }), ...errors },
      },
    },
    async (req, reply) => {
      const b = req.body;
      if (!(await getMapping(deps.db, b.volume_uuid)))
        throw new ApiError(
          404,
          'not_found',
          `volume_uuid: volume ${b.volume_uuid} is not a volume of this service`,
          [{ field: 'volume_uuid', message: 'unknown volume' }],
        );
      const { s, previous } = await write(async (tx) => {
        const previous = await getSnapshot(tx, b.volume_uuid);
        const s = await trackSnapshot(tx, {
          volumeId: b.volume_uuid,
          vmContextId: b.vm_context_id,
          snapshotId: b.snapshot_id,
          ...(b.snapshot_name ? { snapshotName: b.snapshot_name } : {}),
          ...(b.disk_id ? { diskId: b.disk_id } : {}),
          ...(b.snapshot_status ? { snapshotStatus: b.snapshot_status } : {}),
        });
        await deps.engine?.snapshotWritten(tx, s.volumeId, {
          kind: 'track',
          vmContextId: s.vmContextId,
          snapshotId: s.snapshotId,
          status: s.snapshotStatus,
        });
        return { s, previous };
      });
      const moved =
        previous && previous.vmContextId !== s.vmContextId
          ? { moved_from_vm_context_id: previous.vmContextId }
          : {};
      return reply.status(201).send({ ...(await view(s)), ...moved });
    },
  );
  api.get(
    '/snapshots/vm/:vm_context_id',
    {
      schema: {
        params: z.object({ vm_context_id: text(191) }),
        response: {
          200: z.object({ vm_context_id: z.string(), snapshots: z.array(oldSnapshot), count: z.number() }),
          ...errors,
        },
      },
    },
    async (req) => {
      const all = await listSnapshotsForContext(deps.db, req.params.vm_context_id);
      const snapshots = await Promise.all(all.map(view));
      return { vm_context_id: req.params.vm_context_id, snapshots, count: snapshots.length };
    },
  );
  api.delete(
    '/snapshots/vm/:vm_context_id',
    {
      onRequest: guard,
      schema: {
        params: z.object({ vm_context_id: text(191) }),
        response: { 200: z.object({ vm_context_id: z.string(), cleared: z.number() }), ...errors },
      },
    },
    async (req) => ({
      vm_context_id: req.params.vm_context_id,
      cleared: await write(async (tx) => {
        const tracked = await listSnapshotsForContext(tx, req.params.vm_context_id);
        for (const t of tracked) await deps.engine?.snapshotWritten(tx, t.volumeId, { kind: 'clear' });
        return removeSnapshotsForContext(tx, req.params.vm_context_id);
      }),
    }),
  );
  api.put(
    '/snapshots/:volume_uuid',
    {
      onRequest: guard,
      schema: {
        params: z.object({ volume_uuid: uuid }),
        body: z.object({ snapshot_id: text(191).optional(), snapshot_status: z.string().max(50).optional() }),
        response: { 200: oldSnapshot, ...errors },
      },
    },
    async (req) => {
      const patch = {
        ...(req.body.snapshot_id ? { snapshotId: req.body.snapshot_id } : {}),
        ...(req.body.snapshot_status ? { snapshotStatus: req.body.snapshot_status } : {}),
      };
      const s = await write(async (tx) => {
        if (!(await getSnapshot(tx, req.params.volume_uuid))) return undefined;
        await deps.engine?.snapshotWritten(tx, req.params.volume_uuid, {
          kind: 'update',
          ...(patch.snapshotId ? { snapshotId: patch.snapshotId } : {}),
          ...(patch.snapshotStatus ? { status: patch.snapshotStatus } : {}),
        });
        return updateSnapshot(tx, req.params.volume_uuid, patch);
      });
      if (!s)
        throw new ApiError(404, 'not_found', `volume ${req.params.volume_uuid} has no tracked snapshot`, [
          { field: 'volume_uuid', message: 'no tracked snapshot' },
        ]);
      return view(s);
    },
  );
}

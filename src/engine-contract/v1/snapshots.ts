import { z } from 'zod';
import { getMapping } from '../../db/mappings.js';
import {
  listSnapshotsForContext,
  removeSnapshotsForContext,
  trackSnapshot,
  updateSnapshot,
  type SnapshotRecord,
} from '../../db/snapshots.js';
import { uuid } from '../../domain/ids.js';
import { ApiError } from '../../api/errors.js';
import { oldError } from './contract.js';
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
 * tracks the ids here, reads them back per VM context to revert, and clears them.
 */
export function registerSnapshotRoutes({ api, deps, guard }: V1Scope): void {
  const view = async (s: SnapshotRecord) => {
    const m = await getMapping(deps.db, s.volumeId);
    return {
      volume_uuid: s.volumeId,
      vm_context_id: s.vmContextId,
      volume_name: s.snapshotName ?? '',
      device_path:
        m?.location === 'appliance' ? (m.mapperPath ?? '') : m?.targetVmId ? `remote-vm-${m.targetVmId}` : '',
      operation_mode: m?.location === 'target' ? 'failover' : 'oma',
      snapshot_id: s.snapshotId,
      snapshot_created_at: s.createdAt.toISOString(),
      snapshot_status: s.snapshotStatus,
    };
  };

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
        response: { 201: oldSnapshot, ...errors },
      },
    },
    async (req, reply) => {
      const b = req.body;
      const s = await trackSnapshot(deps.db, {
        volumeId: b.volume_uuid,
        vmContextId: b.vm_context_id,
        snapshotId: b.snapshot_id,
        ...(b.snapshot_name ? { snapshotName: b.snapshot_name } : {}),
        ...(b.disk_id ? { diskId: b.disk_id } : {}),
        ...(b.snapshot_status ? { snapshotStatus: b.snapshot_status } : {}),
      });
      return reply.status(201).send(await view(s));
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
      cleared: await removeSnapshotsForContext(deps.db, req.params.vm_context_id),
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
      const s = await updateSnapshot(deps.db, req.params.volume_uuid, {
        ...(req.body.snapshot_id ? { snapshotId: req.body.snapshot_id } : {}),
        ...(req.body.snapshot_status ? { snapshotStatus: req.body.snapshot_status } : {}),
      });
      if (!s)
        throw new ApiError(404, 'not_found', `volume ${req.params.volume_uuid} has no tracked snapshot`, [
          { field: 'volume_uuid', message: 'no tracked snapshot' },
        ]);
      return view(s);
    },
  );
}

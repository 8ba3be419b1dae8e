import type { FastifyReply } from 'fastify';
import { z } from 'zod';
import type { OperationHandle } from '../../client/index.js';
import { getMapping, listMappings, type MappingRecord } from '../../db/mappings.js';
import { listOperations } from '../../db/operations.js';
import { UUID_PATTERN, uuid } from '../../domain/ids.js';
import type { OperationType } from '../../domain/operations.js';
import { ApiError } from '../../api/errors.js';
import { oldDeviceMapping, oldError, oldOperation, oldVolumeOnVm } from './contract.js';
import { attentionOf, toOldOperation } from './operation.js';
import { createdOperation } from './respond.js';
import { rowMeta } from './read-model.js';
import { engineDevicePath, isNamed, linuxStateOf, operationModeOf } from '../engine-view.js';
import type { V1Scope } from './index.js';

const volumeParams = z.object({ id: uuid });
const errors = { 400: oldError, 401: oldError, 404: oldError, 409: oldError, 415: oldError, 500: oldError };

/**
 * The old client's attach body: `AttachVolumeRequest {vm_id}`, or the persistent-naming form
 * `AttachVolumeWithContextRequest {vm_id, vm_name, disk_id: "disk-2000", request_persistent_name}`.
 * `vm_id` empty or absent means the appliance.
 */
const attachBody = z
  .object({
    vm_id: z
      .string()
      .refine((v) => v === '' || UUID_PATTERN.test(v), 'must be a VM UUID (or empty for the appliance)')
      .transform((v) => (v === '' ? undefined : v.toLowerCase()))
      .optional(),
    vm_name: z.string().optional(),
    disk_id: z.string().optional(),
    request_persistent_name: z.boolean().optional(), // every volume gets one: accepted, implied
  })
  .superRefine((b, ctx) => {
    // One without the other would name the volume by half a request: refused, not guessed.
    if (b.vm_name !== undefined && b.disk_id === undefined)
      ctx.addIssue({
        code: 'custom',
        path: ['disk_id'],
        message: 'required with vm_name (like "disk-2000")',
      });
    if (b.disk_id !== undefined && b.vm_name === undefined)
      ctx.addIssue({ code: 'custom', path: ['vm_name'], message: 'required with disk_id' });
  })
  .optional();

/** attach / detach / delete, and the device reads the engine makes. */
export function registerVolumeRoutes({ api, deps, guard, isAppliance }: V1Scope): void {
  const created = (
    reply: FastifyReply,
    type: OperationType,
    vmId: string | null,
    request: Record<string, unknown>,
    h: Promise<OperationHandle>,
  ) => createdOperation(deps, reply, type, vmId, request, h);
  /** The appliance a volume lives on (its row's), else this API's own. */
  const homeOf = (m: MappingRecord | undefined) => m?.applianceVmId ?? deps.applianceVmId;

  // POST /volumes/:id/attach {vm_id}: onto an appliance (attach, or failback when our row says
  // the volume is on a migrated VM), or — any other VM id — "give the volume to that VM"
  // (failover), as the engine's failover and rollback flows use it.
  api.post(
    '/volumes/:id/attach',
    {
      onRequest: guard,
      schema: { params: volumeParams, body: attachBody, response: { 201: oldOperation, ...errors } },
    },
    async (req, reply) => {
      const volumeId = req.params.id;
      const body = req.body ?? {};
      const request = { ...body } as Record<string, unknown>;
      const m = await getMapping(deps.db, volumeId);
      if (body.vm_id === undefined || isAppliance(body.vm_id)) {
        const applianceVmId = body.vm_id ?? homeOf(m);
        if (m?.location === 'target')
          return created(
            reply,
            'failback',
            applianceVmId,
            request,
            deps.volumes.failback({ volumeId, applianceVmId }),
          );
        const naming =
          body.vm_name !== undefined ? { sourceVmName: body.vm_name, diskKey: body.disk_id } : {};
        return created(
          reply,
          'attach',
          applianceVmId,
          request,
          deps.volumes.attach({ volumeId, applianceVmId, ...naming }),
        );
      }
      return created(
        reply,
        'failover',
        body.vm_id,
        request,
        deps.volumes.failover({ volumeId, applianceVmId: homeOf(m), targetVmId: body.vm_id }),
      );
    },
  );

  // Detach and delete arrive with no body and no Content-Type: nothing to validate but the id.
  api.post(
    '/volumes/:id/detach',
    { onRequest: guard, schema: { params: volumeParams, response: { 201: oldOperation, ...errors } } },
    async (req, reply) => {
      const volumeId = req.params.id;
      const m = await getMapping(deps.db, volumeId);
      return created(
        reply,
        'detach',
        m?.location === 'target' ? m.targetVmId : homeOf(m),
        {},
        deps.volumes.detach({ volumeId, applianceVmId: homeOf(m) }),
      );
    },
  );
  api.delete(
    '/volumes/:id',
    { onRequest: guard, schema: { params: volumeParams, response: { 201: oldOperation, ...errors } } },
    async (req, reply) => {
      const volumeId = req.params.id;
      const m = await getMapping(deps.db, volumeId);
      return created(reply, 'delete', null, {}, deps.volumes.delete({ volumeId, applianceVmId: homeOf(m) }));
    },
  );

  api.get(
    '/operations/:id',
    { schema: { params: z.object({ id: uuid }), response: { 200: oldOperation, ...errors } } },
    async (req) => {
      const [row] = await listOperations(deps.db, { operationId: req.params.id });
      if (!row)
        throw new ApiError(404, 'not_found', `operation ${req.params.id} not found`, [
          { field: 'id', message: 'unknown operation' },
        ]);
      return toOldOperation(row, await attentionOf(deps.db, row));
    },
  );

  /**
   * Where the engine finds the volume: the same values its device_mappings row holds
   * (engine-view.ts). On an appliance `/dev/mapper/<name>`, the path that never changes (the
   * /dev/vdX under it does); on a migrated VM the old daemon's `remote-vm-` marker, with the
   * volume id added so two disks of one VM differ. A detached volume answers 404 (the old daemon
   * deleted the row on detach; the engine reads 404 as "detached" and re-attaches).
   */
  const attachedAs = (m: MappingRecord) => ({
    vm_id: m.location === 'target' ? (m.targetVmId ?? '') : m.applianceVmId,
    device_path: isNamed(m) ? engineDevicePath(m) : (m.mapperPath ?? ''),
    linux_state: linuxStateOf(m),
    operation_mode: operationModeOf(m),
  });

  api.get(
    '/volumes/:id/device',
    { schema: { params: volumeParams, response: { 200: oldDeviceMapping, ...errors } } },
    async (req) => {
      const m = await getMapping(deps.db, req.params.id);
      const meta = m && (await rowMeta(deps.db, 'mappings', [m.volumeId])).get(m.volumeId);
      if (!m || m.location === 'detached' || !meta)
        throw new ApiError(
          404,
          'not_found',
          `volume ${req.params.id} is not attached to any VM (no device mapping)`,
          [{ field: 'id', message: 'no device mapping' }],
        );
      return {
        id: meta.id,
        volume_id: m.volumeId,
        volume_uuid: m.volumeId,
        ...attachedAs(m),
        cloudstack_state: 'attached',
        size: m.sizeBytes,
        last_sync: meta.updatedAt.toISOString(),
        persistent_device_name: m.persistentName,
        created_at: meta.createdAt.toISOString(),
        updated_at: meta.updatedAt.toISOString(),
      };
    },
  );

  // A bare array; 404 when the VM has none (the engine's client reads 404 as "no volumes").
  api.get(
    '/vms/:id/volumes',
    { schema: { params: volumeParams, response: { 200: z.array(oldVolumeOnVm), ...errors } } },
    async (req) => {
      const vm = req.params.id;
      const rows = isAppliance(vm)
        ? (await listMappings(deps.db, { applianceVmId: vm })).filter((m) => m.location === 'appliance')
        : (await listMappings(deps.db, { targetVmId: vm })).filter((m) => m.location === 'target');
      if (rows.length === 0)
        throw new ApiError(404, 'not_found', `no volumes are attached to VM ${vm}`, [
          { field: 'id', message: 'no volumes' },
        ]);
      const meta = await rowMeta(
        deps.db,
        'mappings',
        rows.map((m) => m.volumeId),
      );
      return rows.map((m) => ({
        volume_id: m.volumeId,
        vm_id: vm,
        device_path: attachedAs(m).device_path,
        // The row's last change: for a volume attached now, when it got here (or its device moved).
        attached_at: (meta.get(m.volumeId)?.updatedAt ?? new Date()).toISOString(),
        persistent_device_name: m.persistentName,
      }));
    },
  );
}

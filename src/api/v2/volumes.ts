import type { FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { OperationHandle } from '../../client/index.js';
import { getExport } from '../../db/exports.js';
import { getMapping, listMappings, type MappingRecord } from '../../db/mappings.js';
import { uuid } from '../../domain/ids.js';
import { OPERATIONS } from '../../domain/operation-table.js';
import { ApiError } from '../errors.js';
import { auditRowOf, pendingOperation, toApiOperation } from './operation.js';
import {
  exportRecord,
  mapping,
  operation,
  operationIdBody,
  responses,
  volumeParams,
  bearer,
} from './schemas.js';
import type { V2Scope } from './index.js';

/** Volume operations (sagas) and the mapping reads. */
export function registerVolumeRoutes({ api, deps, requireToken }: V2Scope): void {
  const mutating = { onRequest: requireToken };
  const accepted202 = responses({ 202: operation }, [400, 401, 409, 413, 415]);

  const accepted = async (
    reply: FastifyReply,
    type: string,
    vmId: string | null,
    body: unknown,
    h: Promise<OperationHandle>,
  ) => {
    const handle = await h;
    const row = await auditRowOf(deps.db, handle);
    return reply.status(202).send(
      row
        ? toApiOperation(row)
        : pendingOperation({
            id: handle.operationId,
            type,
            volumeId: handle.volumeId,
            vmId,
            request: body,
            workflowId: handle.workflowId,
            runId: handle.runId,
          }),
    );
  };
  const idem = (req: FastifyRequest, body: { operation_id?: string }) =>
    body.operation_id ??
    (typeof req.headers['idempotency-key'] === 'string' ? req.headers['idempotency-key'] : undefined);

  api.post(
    OPERATIONS.attach.v2.path,
    {
      ...mutating,
      schema: {
        security: bearer,
        summary: OPERATIONS.attach.summary,
        params: volumeParams,
        body: z.object({
          vm_id: uuid.optional(),
          source_vm_name: z.string(),
          disk_key: z.union([z.number(), z.string()]),
          ...operationIdBody,
        }),
        response: accepted202,
      },
    },
    (req, reply) =>
      accepted(
        reply,
        'attach',
        req.body.vm_id ?? deps.applianceVmId,
        req.body,
        deps.volumes.attach({
          operationId: idem(req, req.body),
          volumeId: req.params.id,
          applianceVmId: req.body.vm_id ?? deps.applianceVmId,
          sourceVmName: req.body.source_vm_name,
          diskKey: req.body.disk_key,
        }),
      ),
  );
  api.post(
    OPERATIONS.detach.v2.path,
    {
      ...mutating,
      schema: {
        security: bearer,
        summary: OPERATIONS.detach.summary,
        params: volumeParams,
        body: z.object(operationIdBody).default({}),
        response: accepted202,
      },
    },
    (req, reply) =>
      accepted(
        reply,
        'detach',
        deps.applianceVmId,
        req.body,
        deps.volumes.detach({
          operationId: idem(req, req.body),
          volumeId: req.params.id,
          applianceVmId: deps.applianceVmId,
        }),
      ),
  );
  api.post(
    OPERATIONS.failover.v2.path,
    {
      ...mutating,
      schema: {
        security: bearer,
        summary: OPERATIONS.failover.summary,
        params: volumeParams,
        body: z.object({
          vm_id: uuid,
          /** As the VM's root disk (CloudStack deviceid 0; the VM must be stopped): its OS disk. */
          as_root: z.boolean().optional(),
          ...operationIdBody,
        }),
        response: accepted202,
      },
    },
    (req, reply) =>
      accepted(
        reply,
        'failover',
        req.body.vm_id,
        req.body,
        deps.volumes.failover({
          operationId: idem(req, req.body),
          volumeId: req.params.id,
          applianceVmId: deps.applianceVmId,
          targetVmId: req.body.vm_id,
          ...(req.body.as_root ? { asRoot: true } : {}),
        }),
      ),
  );
  api.post(
    OPERATIONS.failback.v2.path,
    {
      ...mutating,
      schema: {
        security: bearer,
        summary: OPERATIONS.failback.summary,
        params: volumeParams,
        body: z.object(operationIdBody).default({}),
        response: accepted202,
      },
    },
    (req, reply) =>
      accepted(
        reply,
        'failback',
        deps.applianceVmId,
        req.body,
        deps.volumes.failback({
          operationId: idem(req, req.body),
          volumeId: req.params.id,
          applianceVmId: deps.applianceVmId,
        }),
      ),
  );
  api.delete(
    OPERATIONS.delete.v2.path,
    {
      ...mutating,
      schema: {
        security: bearer,
        summary: OPERATIONS.delete.summary,
        params: volumeParams,
        response: accepted202,
      },
    },
    (req, reply) =>
      accepted(
        reply,
        'delete',
        null,
        {},
        deps.volumes.delete({
          operationId: idem(req, {}),
          volumeId: req.params.id,
          applianceVmId: deps.applianceVmId,
        }),
      ),
  );

  api.post(
    OPERATIONS.create.v2.path,
    {
      ...mutating,
      schema: {
        security: bearer,
        summary: OPERATIONS.create.summary,
        body: z.object({
          name: z.string(),
          size_bytes: z.number(),
          disk_offering_id: uuid,
          zone_id: uuid,
          /** With disk_key: the VM and disk the persistent name is made of (else the volume name). */
          source_vm_name: z.string().optional(),
          disk_key: z.union([z.number(), z.string()]).optional(),
          ...operationIdBody,
        }),
        response: accepted202,
      },
    },
    (req, reply) =>
      accepted(
        reply,
        'create',
        // As its audit row: a create goes to no VM (it is left detached).
        null,
        req.body,
        deps.volumes.create({
          operationId: idem(req, req.body),
          applianceVmId: deps.applianceVmId,
          name: req.body.name,
          sizeBytes: req.body.size_bytes,
          diskOfferingId: req.body.disk_offering_id,
          zoneId: req.body.zone_id,
          sourceVmName: req.body.source_vm_name,
          diskKey: req.body.disk_key,
        }),
      ),
  );
  api.post(
    OPERATIONS.vm.v2.path,
    {
      ...mutating,
      schema: {
        security: bearer,
        summary: OPERATIONS.vm.summary,
        params: volumeParams,
        body: z.object({
          type: z.enum(['failover', 'failback']),
          volumes: z.array(z.object({ volume_id: uuid, as_root: z.boolean().optional() })),
          ...operationIdBody,
        }),
        response: responses(
          {
            202: z.object({
              id: z.string(),
              type: z.enum(['failover', 'failback']),
              vm_id: z.string(),
              workflow_id: z.string(),
              volumes: z.array(z.string()),
            }),
          },
          [400, 401, 413, 415],
        ),
      },
    },
    async (req, reply) => {
      const h = await deps.volumes.vm({
        operationId: idem(req, req.body),
        applianceVmId: deps.applianceVmId,
        type: req.body.type,
        targetVmId: req.params.id,
        volumes: req.body.volumes.map((v) => ({
          volumeId: v.volume_id,
          ...(v.as_root !== undefined ? { asRoot: v.as_root } : {}),
        })),
      });
      return reply.status(202).send({
        id: h.operationId,
        type: req.body.type,
        vm_id: req.params.id,
        workflow_id: h.workflowId,
        volumes: req.body.volumes.map((v) => v.volume_id),
      });
    },
  );

  const mappingJson = (m: MappingRecord) => ({
    volume_id: m.volumeId,
    persistent_device_name: m.persistentName,
    mapper_path: m.mapperPath,
    device_path: m.devicePath,
    virtio_serial: m.virtioSerial,
    location: m.location,
    target_vm_id: m.targetVmId,
    dm_state: m.dmState,
    source_vm_name: m.sourceVmName,
    disk_index: m.diskIndex,
    size_bytes: m.sizeBytes,
    appliance_vm_id: m.applianceVmId,
    version: m.version,
  });
  const mappingOr404 = async (id: string) => {
    const m = await getMapping(deps.db, id);
    if (!m)
      throw new ApiError(404, 'not_found', `volume ${id} has no device mapping`, [
        { field: 'id', message: 'unknown volume' },
      ]);
    return m;
  };
  api.get(
    '/volumes/:id',
    {
      schema: {
        summary: 'A volume: its mapping, export and latest operation',
        params: volumeParams,
        response: responses(
          {
            200: mapping.extend({
              export: exportRecord.nullable(),
              latest_operation_id: z.string().nullable(),
            }),
          },
          [400, 404],
        ),
      },
    },
    async (req) => {
      const m = await mappingOr404(req.params.id);
      const last = await deps.volumes.latest(req.params.id);
      return {
        ...mappingJson(m),
        export: (await getExport(deps.db, m.volumeId)) ?? null,
        latest_operation_id: last?.operationId ?? null,
      };
    },
  );
  api.get(
    '/volumes/:id/device',
    {
      schema: {
        summary: "A volume's device mapping",
        params: volumeParams,
        response: responses({ 200: mapping }, [400, 404]),
      },
    },
    async (req) => mappingJson(await mappingOr404(req.params.id)),
  );
  api.get(
    '/devices/:path/volume',
    {
      schema: {
        summary: 'The volume on a device path (/dev/vdX)',
        params: z.object({
          path: z.string().regex(/^\/dev\/[a-z0-9]+$/, 'must be a device path like /dev/vdb'),
        }),
        response: responses({ 200: mapping }, [400, 404]),
      },
    },
    async (req) => {
      const [m] = await listMappings(deps.db, { devicePath: req.params.path });
      if (!m)
        throw new ApiError(404, 'not_found', `no volume on ${req.params.path}`, [
          { field: 'path', message: 'no mapping' },
        ]);
      return mappingJson(m);
    },
  );
  api.get(
    '/vms/:id/volumes',
    {
      schema: {
        summary: "An appliance's volumes (any location), or those failed over to a VM",
        params: volumeParams,
        response: responses({ 200: z.object({ volumes: z.array(mapping) }) }, [400]),
      },
    },
    async (req) => {
      const rows =
        req.params.id === deps.applianceVmId
          ? await listMappings(deps.db, { applianceVmId: req.params.id })
          : await listMappings(deps.db, { targetVmId: req.params.id });
      return { volumes: rows.map(mappingJson) };
    },
  );
}

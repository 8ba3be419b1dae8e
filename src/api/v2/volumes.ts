import type { FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { OperationHandle } from '../../client/index.js';
import { getExport } from '../../db/exports.js';
import { getMapping, listMappings, type MappingRecord } from '../../db/mappings.js';
import { uuid } from '../../domain/ids.js';
import { ApiError } from '../errors.js';
import { auditRowOf, pendingOperation, toApiOperation } from './operation.js';
import {
  errorBody,
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
    '/volumes/:id/attach',
    {
      ...mutating,
      schema: {
        security: bearer,
        summary: 'Attach a volume to the appliance (name it, map it, export it)',
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
    '/volumes/:id/detach',
    {
      ...mutating,
      schema: {
        security: bearer,
        summary: 'Detach a volume from the appliance (its export stays, answering errors)',
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
    '/volumes/:id/failover',
    {
      ...mutating,
      schema: {
        security: bearer,
        summary: 'Give a volume to the migrated VM',
        params: volumeParams,
        body: z.object({ vm_id: uuid, ...operationIdBody }),
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
        }),
      ),
  );
  api.post(
    '/volumes/:id/failback',
    {
      ...mutating,
      schema: {
        security: bearer,
        summary: 'Bring a volume back from the migrated VM (same export name)',
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
    '/volumes/:id',
    {
      ...mutating,
      schema: {
        security: bearer,
        summary: 'Delete a volume (CloudStack delete is the point of no return)',
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

  // Routes the old daemon kept for its own workarounds: gone, with the reason.
  for (const [path, why] of [
    [
      '/volumes/:id/attach-root',
      'root volumes are never attached to the appliance; the sagas handle data volumes only',
    ],
    [
      '/exports/cleanup-by-age',
      'exports are reconciled against the database by the reconcile Schedule; nothing is removed by age',
    ],
    ['/test-failover/cleanup', 'failover is a saga with compensation; there is no test residue to clean'],
  ] as const) {
    api.post(path, { schema: { summary: `Gone: ${why}`, response: { 410: errorBody } } }, async () => {
      throw new ApiError(410, 'gone', why);
    });
  }

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

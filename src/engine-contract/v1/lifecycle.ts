import { z } from 'zod';
import { getMapping } from '../../db/mappings.js';
import { listOperations } from '../../db/operations.js';
import { InvalidRequestError } from '../../client/index.js';
import { uuid } from '../../domain/ids.js';
import { wholeNumber } from '../../domain/operations.js';
import { ApiError } from '../../api/errors.js';
import { oldError, oldOperation } from './contract.js';
import { createdOperation } from './respond.js';
import type { V1Scope } from './index.js';

const errors = { 400: oldError, 401: oldError, 404: oldError, 409: oldError, 415: oldError, 500: oldError };

/**
 * The engine's create body: `{name, size (bytes), disk_offering_id, zone_id, metadata{…}}`, its
 * metadata strings as the Go client sends them (`disk_unit_number: "0"`). The persistent name is
 * born from `source_vm_name` + `disk_unit_number` (unit n = disk key 2000 + n); without them, from
 * the engine's volume name `migration-<vm>-<vm>-disk-<unit>`; else the create is refused.
 */
const createBody = z.object({
  name: z.string().min(1, 'must not be empty'),
  size: wholeNumber('bytes').min(1, 'must be at least 1 byte'),
  disk_offering_id: uuid,
  zone_id: uuid,
  metadata: z.record(z.string(), z.union([z.string(), z.number()])).optional(),
});

/** The engine's names of the create's fields, for errors the client raises. */
const CREATE_FIELDS: Record<string, string> = {
  sourceVmName: 'metadata.source_vm_name',
  diskKey: 'metadata.disk_unit_number',
  sizeBytes: 'size',
  diskOfferingId: 'disk_offering_id',
  zoneId: 'zone_id',
};

const unitOf = (v: string | number | undefined): number | undefined => {
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0)
    throw new ApiError(
      400,
      'invalid_request',
      'metadata.disk_unit_number: must be a disk unit number like 0',
      [{ field: 'metadata.disk_unit_number', message: 'must be a whole number from 0' }],
    );
  return n;
};

/** create, root-disk failover, test-failover rollback: what the engine's flows call. */
export function registerLifecycleRoutes({ api, deps, guard, isAppliance }: V1Scope): void {
  api.post(
    '/volumes',
    { onRequest: guard, schema: { body: createBody, response: { 201: oldOperation, ...errors } } },
    async (req, reply) => {
      const b = req.body;
      const vm = b.metadata?.source_vm_name;
      const unit = unitOf(b.metadata?.disk_unit_number);
      const naming =
        vm !== undefined && unit !== undefined ? { sourceVmName: String(vm), diskKey: 2000 + unit } : {};
      return createdOperation(
        deps,
        reply,
        'create',
        null,
        { ...b },
        deps.volumes
          .create({
            applianceVmId: deps.applianceVmId,
            name: b.name,
            sizeBytes: b.size,
            diskOfferingId: b.disk_offering_id,
            zoneId: b.zone_id,
            ...naming,
          })
          .catch((err: unknown) => {
            // The client names fields as the request it was given; the engine sent these.
            if (!(err instanceof InvalidRequestError)) throw err;
            throw new InvalidRequestError(
              err.issues.map((i) => ({ ...i, field: CREATE_FIELDS[i.field] ?? i.field })),
            );
          }),
      );
    },
  );

  // The OS disk to the destination VM as its root disk (CloudStack deviceid 0): the same saga as
  // giving a data disk to a VM, so the export stays and failback brings it home.
  api.post(
    '/volumes/:id/attach-root',
    {
      onRequest: guard,
      schema: {
        params: z.object({ id: uuid }),
        body: z.object({ vm_id: uuid }),
        response: { 201: oldOperation, ...errors },
      },
    },
    async (req, reply) => {
      const volumeId = req.params.id;
      if (isAppliance(req.body.vm_id))
        throw new ApiError(
          400,
          'invalid_request',
          'vm_id: an appliance never takes a volume as its root disk',
          [{ field: 'vm_id', message: 'is an appliance' }],
        );
      const m = await getMapping(deps.db, volumeId);
      return createdOperation(
        deps,
        reply,
        'failover',
        req.body.vm_id,
        { ...req.body },
        deps.volumes.failover({
          volumeId,
          applianceVmId: m?.applianceVmId ?? deps.applianceVmId,
          targetVmId: req.body.vm_id,
          asRoot: true,
        }),
      );
    },
  );

  // Test-failover rollback of one volume: off the test VM, back onto the appliance, same export
  // (the failback saga). The test VM itself is the engine's: delete_vm is not acted on here.
  api.post(
    '/cleanup/test-failover',
    {
      onRequest: guard,
      schema: {
        body: z.object({
          test_vm_id: uuid,
          volume_id: uuid,
          oma_vm_id: uuid,
          delete_vm: z.boolean().optional(),
          force_clean: z.boolean().optional(),
        }),
        response: { 201: oldOperation, ...errors },
      },
    },
    async (req, reply) => {
      const b = req.body;
      if (!isAppliance(b.oma_vm_id))
        throw new ApiError(
          400,
          'invalid_request',
          `oma_vm_id: ${b.oma_vm_id} is not a configured appliance`,
          [{ field: 'oma_vm_id', message: 'not an appliance' }],
        );
      const m = await getMapping(deps.db, b.volume_id);
      if (m && m.location === 'target' && m.targetVmId !== b.test_vm_id)
        throw new ApiError(
          409,
          'conflict',
          `test_vm_id: volume ${b.volume_id} is on VM ${m.targetVmId}, not ${b.test_vm_id}`,
          [{ field: 'test_vm_id', message: 'the volume is not on this VM' }],
        );
      // Off the test VM already (the engine detached it first): only if it was ever given to it.
      // A rollback of a volume that never was on the test VM would attach a stranger.
      if (m?.location !== 'target') {
        const given = await listOperations(deps.db, {
          volumeId: b.volume_id,
          type: 'failover',
          vmId: b.test_vm_id,
          status: 'completed',
          limit: 1,
        });
        if (given.length === 0)
          throw new ApiError(
            409,
            'conflict',
            `test_vm_id: volume ${b.volume_id} was never given to VM ${b.test_vm_id}: nothing to roll back`,
            [{ field: 'test_vm_id', message: 'the volume was never on this VM' }],
          );
      }
      return createdOperation(
        deps,
        reply,
        'failback',
        b.oma_vm_id,
        { ...b },
        m?.location === 'target'
          ? deps.volumes.failback({ volumeId: b.volume_id, applianceVmId: b.oma_vm_id })
          : deps.volumes.attach({ volumeId: b.volume_id, applianceVmId: b.oma_vm_id }),
      );
    },
  );
}

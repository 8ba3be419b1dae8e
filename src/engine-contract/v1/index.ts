import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import type { ApiDeps } from '../../api/deps.js';
import { useProblemWriter, writeV1 } from '../../api/errors.js';
import { useJsonBody } from '../../api/json-body.js';
import type { ZodApp } from '../../api/v2/index.js';
import { registerExportRoutes } from './exports.js';
import { registerHealthRoutes } from './health.js';
import { registerLifecycleRoutes } from './lifecycle.js';
import { registerSnapshotRoutes } from './snapshots.js';
import { registerNotYetRoutes } from './not-yet.js';
import { registerVolumeRoutes } from './volumes.js';

/**
 * /api/v1: the old volume daemon's HTTP contract, served exactly as the migration engine's client
 * uses it, so the engine switches by changing nothing but its URL. Every operation starts through
 * the same VolumeLifecycleClient methods as /api/v2: no saga is implemented twice.
 *
 * Route table (see not-yet.ts for the 501s):
 *   POST   /volumes/:id/attach   {vm_id, vm_name?, disk_id?}  201 op  attach | failback | failover
 *   POST   /volumes/:id/detach   (no body)                    201 op  detach
 *   DELETE /volumes/:id          (no body)                    201 op  delete
 *   GET    /operations/:id                                    200 op | 404
 *   GET    /volumes/:id/device                                200 mapping | 404 (not attached)
 *   GET    /vms/:id/volumes                                   200 bare array | 404 (none)
 *   GET    /exports/:volume_id                                200 export | 404
 *   GET    /exports                                           200 bare array
 *   GET    /health                                            200 HealthStatus | 503
 *   POST   /volumes  {name, size, disk_offering_id, zone_id, metadata}  201 op  create (lifecycle.ts)
 *   POST   /volumes/:id/attach-root  {vm_id}                  201 op  failover as root disk
 *   POST   /cleanup/test-failover  {test_vm_id, volume_id, oma_vm_id, …}  201 op  failback
 *   POST   /snapshots/track, GET|DELETE /snapshots/vm/:ctx, PUT /snapshots/:volume (snapshots.ts)
 *   The old daemon's other routes: 501 {"error": "<what is missing; what to do instead>"}.
 * Errors: {"error": "<text>", "code", "details"}. Statuses: see operation.ts. Trust: trust.ts.
 */
export interface V1Scope {
  api: ZodApp;
  deps: ApiDeps;
  /** onRequest hook of every mutation: the token, or a tokenless local call (trust.ts). */
  guard: (req: FastifyRequest) => Promise<void>;
  /** Whether a VM id is one of this site's appliances (configuration, checked on every call). */
  isAppliance: (vmId: string) => boolean;
}

/** The old daemon's names for our fields, in error texts. */
const V1_FIELD_NAMES: Record<string, string> = {
  sourceVmName: 'vm_name',
  diskKey: 'disk_id',
  targetVmId: 'vm_id',
  applianceVmId: 'vm_id',
  volumeId: 'id',
};

export function v1Plugin(o: Omit<V1Scope, 'api'>) {
  return async (scope: FastifyInstance) => {
    useProblemWriter(scope, writeV1(V1_FIELD_NAMES));
    // Detach and delete may come with `Content-Type: application/json` and an empty body from
    // some clients: that is "no body", not a JSON syntax error.
    useJsonBody(scope, { emptyIsNoBody: true });
    const s: V1Scope = { ...o, api: scope.withTypeProvider<ZodTypeProvider>() };
    registerVolumeRoutes(s);
    registerLifecycleRoutes(s);
    registerSnapshotRoutes(s);
    registerExportRoutes(s);
    registerHealthRoutes(s);
    registerNotYetRoutes(s);
  };
}

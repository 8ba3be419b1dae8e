import { z } from 'zod';
import { getExport, listExports, type ExportRecord } from '../../db/exports.js';
import { getMapping, listMappings } from '../../db/mappings.js';
import { uuid } from '../../domain/ids.js';
import { engineExportNameOf } from '../../domain/device-names.js';
import { sourceVmName } from '../../domain/operations.js';
import { ApiError } from '../../api/errors.js';
import { oldError, oldExport } from './contract.js';
import { rowMeta, type RowMeta } from './read-model.js';
import type { V1Scope } from './index.js';

/**
 * NBD exports in the old shape. `export_name` is `migration-vol-<volume id>`, the form the engine
 * strips to find the volume and its VMware disk (docs/engine-contract.md); the NBD server serves
 * it beside the persistent name, which `metadata.persistent_export_name` carries. `port` is the
 * NBD server's port (NBD_PORT), a number as the
 * engine's client decodes it; `device_path` is `/dev/mapper/<name>`, the export's fixed target.
 * `metadata` values are strings only (the client decodes a string map).
 */
export function registerExportRoutes({ api, deps }: V1Scope): void {
  const port = deps.nbdPort ?? 10809;
  const shape = (
    e: ExportRecord,
    meta: RowMeta | undefined,
    m: { persistentName: string | null; location: string } | undefined,
  ) => ({
    id: meta?.id ?? '',
    volume_id: e.volumeId,
    // The name the engine parses the volume id from; the same device as the persistent name.
    export_name: engineExportNameOf(e.volumeId),
    device_path: e.targetPath,
    port,
    status: e.status === 'active' ? ('active' as const) : ('failed' as const),
    created_at: (meta?.createdAt ?? new Date()).toISOString(),
    updated_at: (meta?.updatedAt ?? new Date()).toISOString(),
    metadata: {
      backend: e.backend,
      persistent_export_name: e.exportName,
      ...(m?.persistentName ? { persistent_device_name: m.persistentName } : {}),
      // Where the volume is now: on "target" or "detached" the export answers I/O errors.
      ...(m ? { volume_location: m.location } : {}),
    },
  });

  api.get(
    '/exports/:volume_id',
    {
      schema: {
        params: z.object({ volume_id: uuid }),
        response: { 200: oldExport, 400: oldError, 404: oldError, 500: oldError },
      },
    },
    async (req) => {
      const e = await getExport(deps.db, req.params.volume_id);
      if (!e)
        throw new ApiError(404, 'not_found', `volume ${req.params.volume_id} has no NBD export`, [
          { field: 'volume_id', message: 'no export' },
        ]);
      const [meta, m] = await Promise.all([
        rowMeta(deps.db, 'exports', [e.volumeId]),
        getMapping(deps.db, e.volumeId),
      ]);
      return shape(e, meta.get(e.volumeId), m);
    },
  );
  // A bare array, as the engine's client decodes it (the old daemon's {exports, count} never decoded).
  // Filters: `vm_name` (the VM the volume is a disk of, as its persistent name was given) and
  // `status` (the old statuses); anything else in the query is refused, naming it.
  const query = z
    .strictObject({
      vm_name: sourceVmName.optional(),
      status: z.enum(['pending', 'active', 'failed']).optional(),
    })
    .optional();
  api.get(
    '/exports',
    { schema: { querystring: query, response: { 200: z.array(oldExport), 400: oldError, 500: oldError } } },
    async (req) => {
      const q = req.query ?? {};
      const status = (e: ExportRecord) => (e.status === 'active' ? 'active' : 'failed');
      const vmOf =
        q.vm_name !== undefined
          ? new Map((await listMappings(deps.db)).map((m) => [m.volumeId, m.sourceVmName]))
          : undefined;
      const exports = (await listExports(deps.db)).filter(
        (e) =>
          (q.status === undefined || status(e) === q.status) && (!vmOf || vmOf.get(e.volumeId) === q.vm_name),
      );
      const [meta, mappings] = await Promise.all([
        rowMeta(
          deps.db,
          'exports',
          exports.map((e) => e.volumeId),
        ),
        listMappings(deps.db),
      ]);
      const byVolume = new Map(mappings.map((m) => [m.volumeId, m]));
      return exports.map((e) => shape(e, meta.get(e.volumeId), byVolume.get(e.volumeId)));
    },
  );
}

import { z } from 'zod';
import { getExport, listExports } from '../../db/exports.js';
import { uuid } from '../../domain/ids.js';
import { ApiError } from '../errors.js';
import { exportRecord, reconcileStarted, responses, bearer } from './schemas.js';
import type { V2Scope } from './index.js';

/** NBD exports as recorded, checked against what the NBD server serves. */
export function registerExportRoutes({ api, deps, requireToken, reconcile }: V2Scope): void {
  api.get(
    '/exports',
    {
      schema: {
        summary: 'Every recorded export',
        response: { 200: z.object({ exports: z.array(exportRecord) }) },
      },
    },
    async () => ({ exports: await listExports(deps.db) }),
  );
  api.get(
    '/exports/:volume_id',
    {
      schema: {
        summary: "A volume's export",
        params: z.object({ volume_id: uuid }),
        response: responses({ 200: exportRecord }, [400, 404]),
      },
    },
    async (req) => {
      const e = await getExport(deps.db, req.params.volume_id);
      if (!e)
        throw new ApiError(404, 'not_found', `volume ${req.params.volume_id} has no export`, [
          { field: 'volume_id', message: 'no export' },
        ]);
      return e;
    },
  );
  api.post(
    '/exports/validate',
    {
      onRequest: requireToken,
      schema: {
        security: bearer,
        summary: "Compare the recorded exports with the NBD server's export list",
        response: responses(
          {
            200: z.object({
              in_sync: z.boolean(),
              missing_from_server: z.array(z.string()),
              unknown_to_database: z.array(z.string()),
            }),
          },
          [401, 503],
        ),
      },
    },
    async () => {
      if (!deps.servedExports)
        throw new ApiError(503, 'not_configured', 'the NBD server is not reachable from this API');
      const served = new Set((await deps.servedExports()).map((e) => e.exportName));
      const recorded = new Set((await listExports(deps.db)).map((e) => e.exportName));
      return {
        in_sync: [...recorded].every((n) => served.has(n)) && [...served].every((n) => recorded.has(n)),
        missing_from_server: [...recorded].filter((n) => !served.has(n)).sort(),
        unknown_to_database: [...served].filter((n) => !recorded.has(n)).sort(),
      };
    },
  );
  api.post(
    '/exports/cleanup',
    {
      onRequest: requireToken,
      schema: {
        security: bearer,
        summary: 'Reconcile now (removes exports no row accounts for)',
        response: responses({ 202: reconcileStarted }, [401, 503]),
      },
    },
    async (_req, reply) => reply.status(202).send(await reconcile(false)),
  );
}

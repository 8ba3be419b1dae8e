import { z } from 'zod';
import { OPERATION_STATUSES, OPERATION_TYPES } from '../../domain/operations.js';
import { listOperations, listSteps } from '../../db/operations.js';
import { uuid } from '../../domain/ids.js';
import { ApiError } from '../errors.js';
import { toApiOperation } from './operation.js';
import { operation, responses, step } from './schemas.js';
import type { V2Scope } from './index.js';

/** The audit trail: one operation with its steps, or a filtered list. */
export function registerOperationRoutes({ api, deps }: V2Scope): void {
  api.get(
    '/operations/:id',
    {
      schema: {
        summary: 'An operation and every step and compensation it ran',
        params: z.object({ id: uuid }),
        response: responses({ 200: operation.extend({ steps: z.array(step) }) }, [400, 404]),
      },
    },
    async (req) => {
      const [o] = await listOperations(deps.db, { operationId: req.params.id });
      if (!o)
        throw new ApiError(404, 'not_found', `operation ${req.params.id} not found`, [
          { field: 'id', message: 'unknown operation' },
        ]);
      return { ...toApiOperation(o), steps: await listSteps(deps.db, o.operationId) };
    },
  );
  api.get(
    '/operations',
    {
      schema: {
        summary: 'Operations, newest first',
        querystring: z.object({
          // The lists the audit table holds, from their one definition (src/domain/operations.ts).
          type: z.enum(OPERATION_TYPES).optional(),
          status: z.enum(OPERATION_STATUSES).optional(),
          volume_id: uuid.optional(),
          vm_id: uuid.optional(),
          since: z.coerce.date().optional(),
          until: z.coerce.date().optional(),
          limit: z.coerce.number().int().min(1).max(1000).default(100),
        }),
        response: responses({ 200: z.object({ operations: z.array(operation) }) }, [400]),
      },
    },
    async (req) => {
      const q = req.query;
      const rows = await listOperations(deps.db, {
        type: q.type,
        status: q.status,
        volumeId: q.volume_id,
        vmId: q.vm_id,
        since: q.since,
        until: q.until,
        limit: q.limit,
      });
      return { operations: rows.map(toApiOperation) };
    },
  );
}

import type {
  FastifyBaseLogger,
  FastifyInstance,
  FastifyRequest,
  RawReplyDefaultExpression,
  RawRequestDefaultExpression,
  RawServerDefault,
} from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import type { ApiDeps } from '../deps.js';
import { ApiError, useProblemWriter, writeV2 } from '../errors.js';
import { registerAdminRoutes } from './admin.js';
import { registerExportRoutes } from './exports.js';
import { registerOperationRoutes } from './operations.js';
import { registerVolumeRoutes } from './volumes.js';

export type ZodApp = FastifyInstance<
  RawServerDefault,
  RawRequestDefaultExpression,
  RawReplyDefaultExpression,
  FastifyBaseLogger,
  ZodTypeProvider
>;

/** What the v2 route modules share. */
export interface V2Scope {
  api: ZodApp;
  deps: ApiDeps;
  requireToken: (req: FastifyRequest) => Promise<void>;
  /** Start a reconcile pass (the 202 body), or 503 when none is configured. */
  reconcile: (dryRun: boolean) => Promise<{ reconcile: { workflowId: string; runId: string } }>;
  /** The OpenAPI document of /api/v2. */
  document: () => Record<string, unknown>;
}

/**
 * /api/v2: the project's own API. 202 + operation object, bearer token on every mutation,
 * Idempotency-Key (or `operation_id`), errors `{"error": {code, message, fields}}`, 409 naming
 * the running operation; every route described by zod schemas in /api/v2/openapi.json.
 */
export function v2Plugin(o: Omit<V2Scope, 'api' | 'reconcile'>) {
  return async (scope: FastifyInstance) => {
    useProblemWriter(scope, writeV2);
    const reconcile = async (dryRun: boolean) => {
      if (!o.deps.startReconcile)
        throw new ApiError(503, 'not_configured', 'reconciliation is not configured');
      return { reconcile: await o.deps.startReconcile(dryRun) };
    };
    const s: V2Scope = { ...o, api: scope.withTypeProvider<ZodTypeProvider>(), reconcile };
    registerVolumeRoutes(s);
    registerOperationRoutes(s);
    registerExportRoutes(s);
    registerAdminRoutes(s);
  };
}

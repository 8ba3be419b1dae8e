import { z } from 'zod';
import { runHealthChecks } from '../deps.js';
import { ApiError } from '../errors.js';
import { reconcileStarted, responses, bearer } from './schemas.js';
import type { V2Scope } from './index.js';

/** Reconcile now, health, metrics and this API's own OpenAPI document. */
export function registerAdminRoutes({ api, deps, requireToken, reconcile, document }: V2Scope): void {
  api.post(
    '/admin/force-sync',
    {
      onRequest: requireToken,
      schema: {
        security: bearer,
        summary: 'Run a reconcile pass now',
        response: responses({ 202: reconcileStarted }, [401, 503]),
      },
    },
    async (_req, reply) => reply.status(202).send(await reconcile(false)),
  );
  const healthBody = z.object({
    status: z.enum(['ok', 'degraded']),
    checks: z.record(z.string(), z.object({ ok: z.boolean(), error: z.string().optional() })),
  });
  api.get(
    '/health',
    {
      schema: {
        summary: 'Database, Temporal and CloudStack reachability',
        response: { 200: healthBody, 503: healthBody },
      },
    },
    async (_req, reply) => {
      const { ok, checks } = await runHealthChecks(deps);
      return reply.status(ok ? 200 : 503).send({ status: ok ? 'ok' : 'degraded', checks });
    },
  );
  api.get(
    '/metrics',
    {
      schema: {
        summary: 'Prometheus metrics from the audit tables (text exposition format)',
        produces: ['text/plain'],
      },
    },
    async (_req, reply) => {
      if (!deps.metrics) throw new ApiError(503, 'not_configured', 'metrics are not configured');
      const m = await deps.metrics();
      return reply.type(m.contentType).send(m.body);
    },
  );
  api.get(
    '/openapi.json',
    {
      schema: { summary: 'This document (OpenAPI 3)', response: { 200: z.record(z.string(), z.unknown()) } },
    },
    async () => document(),
  );
}

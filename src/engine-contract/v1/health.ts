import { runHealthChecks } from '../../api/deps.js';
import { oldHealthStatus } from './contract.js';
import type { V1Scope } from './index.js';

/** GET /api/v1/health: the old daemon's HealthStatus, from the same checks as /api/v2/health. */
export function registerHealthRoutes({ api, deps }: V1Scope): void {
  api.get(
    '/health',
    { schema: { response: { 200: oldHealthStatus, 503: oldHealthStatus } } },
    async (_req, reply) => {
      const { ok, checks } = await runHealthChecks(deps);
      const word = (name: string) => {
        const c = checks[name];
        return c === undefined ? 'not checked' : c.ok ? 'healthy' : `unhealthy: ${c.error ?? ''}`;
      };
      return reply.status(ok ? 200 : 503).send({
        status: ok ? 'healthy' : 'unhealthy',
        timestamp: new Date().toISOString(),
        cloudstack_health: word('cloudstack'),
        database_health: word('database'),
        // Correlation is event-driven on the appliance's host worker: there is no monitor to report.
        device_monitor: 'n/a',
        details: Object.fromEntries(Object.entries(checks).map(([k]) => [k, word(k)])),
      });
    },
  );
}

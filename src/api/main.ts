// The HTTP API process: /api/v1 on API_HOST:API_PORT (loopback unless configured).
import { loadConfig } from '../config/index.js';
import { VolumeLifecycleClient } from '../client/index.js';
import { createPool } from '../db/pool.js';
import { logger } from '../observability/logger.js';
import { createApiMetrics } from '../observability/metrics.js';
import { reconcileNow } from '../reconcile/schedule.js';
import { connectClient } from '../temporal/connection.js';
import { createCloudStack, createExports } from '../worker/wiring.js';
import { buildApi } from './server.js';

const cfg = loadConfig();
if (!cfg.APPLIANCE_VM_ID) throw new Error('APPLIANCE_VM_ID: required by the API (the appliance VM UUID)');
if (!cfg.API_TOKEN) throw new Error('API_TOKEN: required (the bearer token for mutating routes)');
const applianceVmId = cfg.APPLIANCE_VM_ID;
const db = createPool(cfg);
const { client, connection } = await connectClient(cfg);
const exports = createExports(cfg);
const cloudstack = createCloudStack(cfg);
const metrics = createApiMetrics(db);
const app = await buildApi({
  volumes: new VolumeLifecycleClient({
    client,
    taskQueuePrefix: cfg.TASK_QUEUE_PREFIX,
    correlationTimeoutMs: cfg.CORRELATION_TIMEOUT_MS,
  }),
  db,
  applianceVmId,
  token: cfg.API_TOKEN,
  servedExports: () => exports.listServed(),
  startReconcile: async (dryRun) => {
    const r = await reconcileNow(client, {
      applianceVmId,
      taskQueuePrefix: cfg.TASK_QUEUE_PREFIX,
      backend: cfg.EXPORT_BACKEND,
      dryRun,
      correlationTimeoutMs: cfg.CORRELATION_TIMEOUT_MS,
    });
    return { workflowId: r.workflowId, runId: r.runId };
  },
  health: {
    temporal: () => connection.healthService.check({}),
    cloudstack: () => cloudstack.listVirtualMachines({ id: applianceVmId }),
  },
  metrics: () => metrics.collect(),
});
await app.listen({ host: cfg.API_HOST, port: cfg.API_PORT });
logger.info({ host: cfg.API_HOST, port: cfg.API_PORT }, 'API listening');

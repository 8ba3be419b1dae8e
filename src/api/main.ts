// The HTTP API process on API_HOST:API_PORT (default 127.0.0.1:8090, the migration engine's URL):
// /api/v2 (ours), /api/v1 (the old daemon's contract) and GET /health. Trust rule: trust.ts.
import { dbPoolTlsOptions } from '../config/production.js';
import { loadConfig } from '../config/index.js';
import { VolumeLifecycleClient } from '../client/index.js';
import { createPool } from '../db/pool.js';
import { logger } from '../observability/logger.js';
import { createApiMetrics } from '../observability/metrics.js';
import { reconcileNow } from '../reconcile/schedule.js';
import { connectClient } from '../temporal/connection.js';
import { createCloudStack, createExports } from '../worker/wiring.js';
import { buildApi } from './server.js';
import { engineRowsFor } from '../engine-contract/engine-rows.js';

const cfg = loadConfig();
if (!cfg.APPLIANCE_VM_ID) throw new Error('APPLIANCE_VM_ID: required by the API (the appliance VM UUID)');
if (!cfg.API_TOKEN)
  throw new Error('API_TOKEN: required (the bearer token for /api/v2 mutations and remote /api/v1 callers)');
const applianceVmId = cfg.APPLIANCE_VM_ID;
const db = createPool(cfg, dbPoolTlsOptions(cfg));
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
  engine: engineRowsFor(cfg),
  applianceVmId,
  applianceVmIds: cfg.APPLIANCE_VM_IDS,
  token: cfg.API_TOKEN,
  listenHost: cfg.API_HOST,
  v1TrustLoopback: cfg.API_V1_TRUST_LOOPBACK,
  nbdPort: cfg.NBD_PORT,
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

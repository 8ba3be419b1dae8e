// The control worker: every workflow, plus CloudStack and database activities. Any number of
// them may run. At start it applies migrations and makes sure each configured appliance has its
// reconcile Schedule.
import { NativeConnection } from '@temporalio/worker';
import { loadConfig } from '../config/index.js';
import { createPool, ensureDatabase } from '../db/pool.js';
import { migrateUp } from '../db/migrator.js';
import { logger } from '../observability/logger.js';
import { installWorkerRuntime } from '../observability/worker-runtime.js';
import { ensureReconcileSchedule } from '../reconcile/schedule.js';
import { connectClient } from '../temporal/connection.js';
import { controlQueue } from '../temporal/task-queues.js';
import { createCloudStack } from './wiring.js';
import { createControlWorker } from './workers.js';

const cfg = loadConfig();
// Before any NativeConnection: the Runtime (and its metrics endpoint) is per process, set once.
installWorkerRuntime(cfg);
await ensureDatabase(cfg);
const pool = createPool(cfg);
const applied = await migrateUp(pool);
if (applied.length) logger.info({ applied }, 'database migrated');

const connection = await NativeConnection.connect({ address: cfg.TEMPORAL_ADDRESS });
const worker = await createControlWorker({
  connection,
  namespace: cfg.TEMPORAL_NAMESPACE,
  taskQueuePrefix: cfg.TASK_QUEUE_PREFIX,
  failpointsDir: cfg.FAILPOINTS_DIR,
  cloudstack: createCloudStack(cfg),
  db: pool,
});
if (cfg.APPLIANCE_VM_ID) {
  const { client } = await connectClient(cfg);
  const s = await ensureReconcileSchedule(
    client,
    {
      applianceVmId: cfg.APPLIANCE_VM_ID,
      taskQueuePrefix: cfg.TASK_QUEUE_PREFIX,
      backend: cfg.EXPORT_BACKEND,
      dryRun: cfg.DRY_RUN,
      correlationTimeoutMs: cfg.CORRELATION_TIMEOUT_MS,
    },
    cfg.RECONCILE_INTERVAL,
  );
  logger.info(s, 'reconcile schedule in place');
}
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => worker.shutdown());
logger.info({ taskQueue: controlQueue(cfg.TASK_QUEUE_PREFIX) }, 'control worker ready');
await worker.run();
await pool.end();
await connection.close();

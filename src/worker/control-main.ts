// The control worker: every workflow, plus CloudStack and database activities. Any number of
// them may run. At start it applies migrations and makes sure each configured appliance has its
// reconcile Schedule.
import { buildInfo, versionLine } from '../config/build-info.js';
import { loadConfig } from '../config/index.js';
import { migrateUp } from '../db/migrator.js';
import { logger } from '../observability/logger.js';
import { ensureReconcileSchedule } from '../reconcile/schedule.js';
import { connectClient } from '../temporal/connection.js';
import { controlQueue } from '../temporal/task-queues.js';
import { openDatabase } from './database.js';
import { logFatalErrors } from './fatal.js';
import { installRuntime } from './runtime.js';
import { connectNative } from './temporal.js';
import { createCloudStack } from './wiring.js';
import { engineRowsFor } from '../engine-contract/engine-rows.js';
import { createControlWorker } from './workers.js';

if (process.argv.includes('--version')) {
  console.log(versionLine('volume-lifecycle-control-worker'));
  process.exit(0);
}
logFatalErrors('control worker');
const cfg = loadConfig();
const build = buildInfo();
// Before any NativeConnection: the Runtime (SDK logs through pino, metrics) is per process, set once.
installRuntime(cfg);
const pool = await openDatabase(cfg, { create: true });
const applied = await migrateUp(pool);
if (applied.length) logger.info({ applied }, 'database migrated');

const connection = await connectNative(cfg);
const worker = await createControlWorker({
  connection,
  namespace: cfg.TEMPORAL_NAMESPACE,
  taskQueuePrefix: cfg.TASK_QUEUE_PREFIX,
  failpointsDir: cfg.FAILPOINTS_DIR,
  shutdownGraceMs: cfg.WORKER_SHUTDOWN_GRACE,
  ...(cfg.WORKER_BUILD_ID ? { buildId: cfg.WORKER_BUILD_ID } : {}),
  cloudstack: createCloudStack(cfg),
  db: pool,
  engine: engineRowsFor(cfg),
});
if (cfg.APPLIANCE_VM_ID) {
  const { client, connection: clientConnection } = await connectClient(cfg);
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
  await clientConnection.close();
  logger.info(s, 'reconcile schedule in place');
}
for (const sig of ['SIGINT', 'SIGTERM'] as const)
  process.once(sig, () => {
    // Stop polling; running activities get WORKER_SHUTDOWN_GRACE to finish (workers.ts).
    logger.info({ signal: sig, graceMs: cfg.WORKER_SHUTDOWN_GRACE }, 'control worker draining');
    worker.shutdown();
  });
logger.info(
  {
    taskQueue: controlQueue(cfg.TASK_QUEUE_PREFIX),
    version: build.version,
    buildId: cfg.WORKER_BUILD_ID ?? build.buildId,
  },
  'control worker ready',
);
await worker.run();
await pool.end();
await connection.close();
logger.info('control worker stopped');

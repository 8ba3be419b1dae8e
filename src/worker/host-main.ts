// The host worker of one appliance: runs on the appliance (next to dmsetup and the NBD server)
// and polls `<prefix>-host-<APPLIANCE_VM_ID>` for device activities. It never registers
// workflows and never touches the database.
import { buildInfo, versionLine } from '../config/build-info.js';
import { loadConfig } from '../config/index.js';
import { logger } from '../observability/logger.js';
import { hostQueue } from '../temporal/task-queues.js';
import { logFatalErrors } from './fatal.js';
import { installRuntime } from './runtime.js';
import { connectNative } from './temporal.js';
import { createHostWorker } from './workers.js';
import { createDeviceLayer, createExports } from './wiring.js';

if (process.argv.includes('--version')) {
  console.log(versionLine('volume-lifecycle-host-worker'));
  process.exit(0);
}
logFatalErrors('host worker');

const cfg = loadConfig();
const build = buildInfo();
if (!cfg.APPLIANCE_VM_ID)
  throw new Error('APPLIANCE_VM_ID: required for the host worker (the appliance VM UUID)');
// Before any NativeConnection: the Runtime (SDK logs through pino, metrics) is per process, set once.
installRuntime(cfg);

const { correlator, dm } = createDeviceLayer(cfg);
const exports = createExports(cfg);
if (exports.supervisor && cfg.NBD_MANAGE_SERVER)
  await exports.supervisor.start().catch((err: Error) => {
    // nbd-server will not start with no exports at all; it starts with the first ensure.
    if (err.name === 'NbdServerNoExportsError') return;
    // The device activities must still run (detach, failover, delete need no NBD server):
    // serve them, and let reconciliation report the server (nbd-server-down) with its remedy.
    logger.error({ err: err.message }, 'NBD server not ready at start; serving device activities anyway');
  });

const connection = await connectNative(cfg);
const worker = await createHostWorker({
  connection,
  namespace: cfg.TEMPORAL_NAMESPACE,
  taskQueuePrefix: cfg.TASK_QUEUE_PREFIX,
  applianceVmId: cfg.APPLIANCE_VM_ID,
  failpointsDir: cfg.FAILPOINTS_DIR,
  shutdownGraceMs: cfg.WORKER_SHUTDOWN_GRACE,
  ...(cfg.WORKER_BUILD_ID ? { buildId: cfg.WORKER_BUILD_ID } : {}),
  correlator,
  dm,
  exports,
  ...(exports.supervisor && cfg.NBD_MANAGE_SERVER && 'ensureRunning' in exports.supervisor
    ? { nbdServer: exports.supervisor }
    : {}),
});
for (const sig of ['SIGINT', 'SIGTERM'] as const)
  process.once(sig, () => {
    // Stop polling; a device step in flight gets WORKER_SHUTDOWN_GRACE to finish (workers.ts).
    logger.info({ signal: sig, graceMs: cfg.WORKER_SHUTDOWN_GRACE }, 'host worker draining');
    worker.shutdown();
  });
logger.info(
  {
    taskQueue: hostQueue(cfg.TASK_QUEUE_PREFIX, cfg.APPLIANCE_VM_ID),
    version: build.version,
    buildId: cfg.WORKER_BUILD_ID ?? build.buildId,
    // A release starts the one-file build of this module (scripts/lib/bundle-host-worker.mjs).
    oneFile: import.meta.url.endsWith('.bundle.js'),
  },
  'host worker ready',
);
await worker.run();
await connection.close();
logger.info('host worker stopped');

import type { NativeConnection } from '@temporalio/worker';
import { Worker } from '@temporalio/worker';
import type { ControlDeps } from '../../activities/control/index.js';
import { createControlActivities } from '../../activities/control/index.js';
import type { HostDeps } from '../../activities/host/index.js';
import { createHostActivities } from '../../activities/host/index.js';
import { controlQueue, hostQueue } from '../temporal/task-queues.js';
import { workflowBundle } from './bundle.js';
import { failpointInterceptor } from './failpoints.js';
import { heartbeatWhileRunning } from './heartbeat.js';

export interface WorkerOptions {
  connection: NativeConnection;
  namespace: string;
  taskQueuePrefix: string;
  /** Reliability suite only: consult failpoints in this directory before every activity. */
  failpointsDir?: string;
}

const failpoints = (opts: WorkerOptions) =>
  opts.failpointsDir ? [failpointInterceptor(opts.failpointsDir)] : [];

/** The control worker: every workflow, plus CloudStack and database activities. Scales freely. */
export async function createControlWorker(opts: WorkerOptions & ControlDeps & { maxConcurrent?: number }) {
  return Worker.create({
    connection: opts.connection,
    namespace: opts.namespace,
    taskQueue: controlQueue(opts.taskQueuePrefix),
    workflowBundle: await workflowBundle(),
    activities: createControlActivities(opts),
    maxConcurrentActivityTaskExecutions: opts.maxConcurrent ?? 200,
    maxConcurrentWorkflowTaskExecutions: 100,
    maxConcurrentLocalActivityExecutions: 200,
    // Control activities' heartbeatTimeout (workflows/proxies.ts) is 10 s.
    interceptors: { activity: [heartbeatWhileRunning(3000), ...failpoints(opts)] },
  });
}

/** The host worker of one appliance: device activities only, never workflows (it runs there). */
export async function createHostWorker(opts: WorkerOptions & HostDeps & { applianceVmId: string }) {
  return Worker.create({
    connection: opts.connection,
    namespace: opts.namespace,
    taskQueue: hostQueue(opts.taskQueuePrefix, opts.applianceVmId),
    activities: createHostActivities(opts),
    maxConcurrentActivityTaskExecutions: 50,
    // Host activities' heartbeatTimeout (workflows/proxies.ts) is 15 s.
    interceptors: { activity: [heartbeatWhileRunning(3000), ...failpoints(opts)] },
  });
}

import type { ActivityInterceptorsFactory, NativeConnection } from '@temporalio/worker';
import { Worker } from '@temporalio/worker';
import { hostname } from 'node:os';
import type { ControlDeps } from '../../activities/control/index.js';
import { createControlActivities } from '../../activities/control/index.js';
import type { HostDeps } from '../../activities/host/index.js';
import { createHostActivities } from '../../activities/host/index.js';
import { buildInfo } from '../config/build-info.js';
import { controlQueue, hostQueue } from '../temporal/task-queues.js';
import { workflowBundle } from './bundle.js';
import { failpointInterceptor } from './failpoints.js';
import { heartbeatWhileRunning } from '../../activities/heartbeat.js';

export interface WorkerOptions {
  connection: NativeConnection;
  namespace: string;
  taskQueuePrefix: string;
  /** Reliability suite only: consult failpoints in this directory before every activity. */
  failpointsDir?: string;
  /** How long in-flight activities may finish after shutdown() (WORKER_SHUTDOWN_GRACE); default 0. */
  shutdownGraceMs?: number;
  /** Reported to Temporal (WORKER_BUILD_ID); default: this release's build id. */
  buildId?: string;
  /** Benchmarks only: more activity interceptors (e.g. one timing each activity), run innermost. */
  activityInterceptors?: ActivityInterceptorsFactory[];
}

const failpoints = (opts: WorkerOptions) =>
  opts.failpointsDir ? [failpointInterceptor(opts.failpointsDir)] : [];
const extra = (opts: WorkerOptions) => opts.activityInterceptors ?? [];

/**
 * What every worker tells Temporal about itself: the release's build id as an unversioned
 * deployment version (shown per poller by DescribeTaskQueue and in the UI; no routing change),
 * an identity naming the version, and the drain time on shutdown. After the grace time the
 * activities still running are cancelled and their attempt fails, so the server hands them to
 * the next worker; the force time is a backstop so a stuck activity cannot hold the process
 * past systemd's TimeoutStopSec.
 */
function releaseOptions(opts: WorkerOptions) {
  const b = buildInfo();
  const grace = opts.shutdownGraceMs ?? 0;
  return {
    identity: `${process.pid}@${hostname()} volume-lifecycle/${b.version}`,
    workerDeploymentOptions: {
      version: { deploymentName: 'volume-lifecycle', buildId: opts.buildId ?? b.buildId },
      useWorkerVersioning: false as const,
    },
    shutdownGraceTime: grace,
    ...(grace > 0 ? { shutdownForceTime: grace + 15_000 } : {}),
  };
}

/** The control worker: every workflow, plus CloudStack and database activities. Scales freely. */
export async function createControlWorker(opts: WorkerOptions & ControlDeps & { maxConcurrent?: number }) {
  return Worker.create({
    ...releaseOptions(opts),
    connection: opts.connection,
    namespace: opts.namespace,
    taskQueue: controlQueue(opts.taskQueuePrefix),
    workflowBundle: await workflowBundle(),
    activities: createControlActivities(opts),
    maxConcurrentActivityTaskExecutions: opts.maxConcurrent ?? 200,
    maxConcurrentWorkflowTaskExecutions: 100,
    maxConcurrentLocalActivityExecutions: 200,
    // Control activities' heartbeatTimeout (workflows/proxies.ts) is 10 s.
    interceptors: { activity: [heartbeatWhileRunning(3000), ...failpoints(opts), ...extra(opts)] },
  });
}

/** The host worker of one appliance: device activities only, never workflows (it runs there). */
export async function createHostWorker(opts: WorkerOptions & HostDeps & { applianceVmId: string }) {
  return Worker.create({
    ...releaseOptions(opts),
    connection: opts.connection,
    namespace: opts.namespace,
    taskQueue: hostQueue(opts.taskQueuePrefix, opts.applianceVmId),
    activities: createHostActivities(opts),
    maxConcurrentActivityTaskExecutions: 50,
    // Host activities' heartbeatTimeout (workflows/proxies.ts) is 15 s.
    interceptors: { activity: [heartbeatWhileRunning(3000), ...failpoints(opts), ...extra(opts)] },
  });
}

import { Runtime } from '@temporalio/worker';
import type { AppConfig } from '../config/index.js';
import { logger } from './logger.js';

/**
 * The worker process's Temporal Runtime (the Rust core behind every NativeConnection and Worker).
 * With WORKER_METRICS_ADDRESS set, the core serves its own Prometheus metrics (pollers, task
 * slots, schedule-to-start latencies, sticky cache, workflow and activity task outcomes, all
 * `temporal_*`) at `http://<address>/metrics`. Must run before the first NativeConnection, which
 * otherwise creates a default Runtime without metrics; a no-op when the setting is absent.
 */
export function installWorkerRuntime(cfg: Pick<AppConfig, 'WORKER_METRICS_ADDRESS'>): {
  metricsUrl?: string;
} {
  const bindAddress = cfg.WORKER_METRICS_ADDRESS;
  if (!bindAddress) return {};
  try {
    // The core binds the listener here, synchronously: a port in use fails start-up now.
    Runtime.install({ telemetryOptions: { metrics: { prometheus: { bindAddress } } } });
  } catch (err) {
    const why = (err as Error).message;
    throw new Error(`WORKER_METRICS_ADDRESS: cannot serve metrics on ${bindAddress}: ${why}`, { cause: err });
  }
  const metricsUrl = `http://${bindAddress}/metrics`;
  logger.info({ metricsUrl }, 'Temporal worker metrics served');
  return { metricsUrl };
}

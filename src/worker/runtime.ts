import { Runtime, type LogLevel, type LogMetadata, type Logger as SdkLogger } from '@temporalio/worker';
import type { AppConfig } from '../config/index.js';
import { logger, type Logger } from '../observability/logger.js';

/**
 * The worker process's Temporal Runtime, installed once before any NativeConnection: the SDK's
 * own log lines (and the core's, forwarded) go through pino like ours, so the journal gets one
 * JSON object per line; and with WORKER_METRICS_ADDRESS the core serves its Prometheus metrics
 * there.
 */
class PinoSdkLogger implements SdkLogger {
  constructor(private readonly pino: Logger) {}
  log(level: LogLevel, message: string, meta?: LogMetadata): void {
    const l = this.pino;
    const m = meta ?? {};
    switch (level) {
      case 'TRACE':
        return l.trace(m, message);
      case 'DEBUG':
        return l.debug(m, message);
      case 'INFO':
        return l.info(m, message);
      case 'WARN':
        return l.warn(m, message);
      default:
        return l.error(m, message);
    }
  }
  trace(message: string, meta?: LogMetadata) {
    this.pino.trace(meta ?? {}, message);
  }
  debug(message: string, meta?: LogMetadata) {
    this.pino.debug(meta ?? {}, message);
  }
  info(message: string, meta?: LogMetadata) {
    this.pino.info(meta ?? {}, message);
  }
  warn(message: string, meta?: LogMetadata) {
    this.pino.warn(meta ?? {}, message);
  }
  error(message: string, meta?: LogMetadata) {
    this.pino.error(meta ?? {}, message);
  }
}

export function installRuntime(cfg: Pick<AppConfig, 'WORKER_METRICS_ADDRESS'>): { metricsUrl?: string } {
  const bindAddress = cfg.WORKER_METRICS_ADDRESS;
  try {
    // The core binds the metrics listener here, synchronously: a port in use fails start-up now.
    Runtime.install({
      logger: new PinoSdkLogger(logger.child({ component: 'temporal-sdk' })),
      telemetryOptions: {
        logging: { filter: { core: 'WARN', other: 'WARN' }, forward: {} },
        ...(bindAddress ? { metrics: { prometheus: { bindAddress } } } : {}),
      },
    });
  } catch (err) {
    if (!bindAddress) throw err;
    const why = (err as Error).message;
    throw new Error(`WORKER_METRICS_ADDRESS: cannot serve metrics on ${bindAddress}: ${why}`, { cause: err });
  }
  if (!bindAddress) return {};
  const metricsUrl = `http://${bindAddress}/metrics`;
  logger.info({ metricsUrl }, 'Temporal worker metrics served');
  return { metricsUrl };
}

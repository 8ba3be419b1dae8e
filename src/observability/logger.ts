import { pino, type Logger } from 'pino';

/** Structured JSON logs; callers add workflowId / volumeId / step with `logger.child({...})`. */
export const logger: Logger = pino({
  level: process.env.LOG_LEVEL ?? 'info',
  base: { service: 'volume-lifecycle' },
  timestamp: pino.stdTimeFunctions.isoTime,
});
export type { Logger };

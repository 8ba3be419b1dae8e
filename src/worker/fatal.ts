import { logger } from '../observability/logger.js';

/**
 * A service that cannot start (bad setting, refused certificate) or dies on an error logs one
 * JSON line saying why, with the plain message as `msg` (what `journalctl -u …` shows), then
 * exits 1 so systemd's restart policy applies. Light on purpose: the API installs it too.
 */
export function logFatalErrors(service: string): void {
  process.on('uncaughtException', (err: Error) => {
    logger.fatal(
      { err: { name: err.name, message: err.message, stack: err.stack } },
      `${service} failed: ${err.message}`,
    );
    process.exit(1);
  });
}

import * as path from 'node:path';
import { z } from 'zod';
import type { CommandRunner } from '../command/runner.js';
import type { Logger } from '../observability/logger.js';
import type { ExportFs } from './fs.js';
import { NbdServerBackend, NbdServerSupervisor } from './nbd-server.js';
import { NbdkitDirBackend, NbdkitSupervisor } from './nbdkit-dir.js';
import { targetPathSchema } from '../domain/paths.js';
import { NbdValidationError } from './validation.js';
import type { ExportBackendKind } from '../domain/mapping.js';

export * from './types.js';
export { compareExports, type ExportComparison } from './compare.js';
export { classifyProbeError, listExports, nbdUri, probeExport, waitUntilListing } from './nbdinfo.js';
export { NbdkitDirBackend, NbdkitSupervisor } from './nbdkit-dir.js';
export {
  NbdServerBackend,
  NbdServerSupervisor,
  NbdServerNoExportsError,
  parseNbdServerVersion,
  renderExportConfig,
  renderMainConfig,
  sighupIsSafe,
} from './nbd-server.js';
export { NbdValidationError, validateExportName, validateExportSpec } from './validation.js';
export { localFs, type ExportFs } from './fs.js';

const host = z
  .string()
  .regex(/^[A-Za-z0-9.:-]+$/, 'must be an IP address or host name')
  .default('127.0.0.1');
const port = z.coerce.number().int().min(1).max(65535).default(10809);

/** Backend configuration. Paths must be absolute (nbd-server re-reads its config from `/`). */
export const exportBackendConfigSchema = z.discriminatedUnion('kind', [
  z.object({
    kind: z.literal('nbdkit-dir'),
    exportsDir: targetPathSchema,
    host,
    port,
    /** Host in nbd:// URIs handed to clients (default: host). */
    uriHost: z.string().optional(),
    /** nbdkit's pid file; default DEFAULT_NBDKIT_PID_FILE. */
    pidFile: targetPathSchema.optional(),
  }),
  z.object({
    kind: z.literal('nbd-server'),
    confDir: targetPathSchema,
    host,
    port,
    uriHost: z.string().optional(),
    /** Main config (`[generic]`) we write; default `<confDir>/../volume-lifecycle.config`. */
    mainConfigPath: targetPathSchema.optional(),
    /** Default DEFAULT_NBD_SERVER_PID_FILE. */
    pidFile: targetPathSchema.optional(),
    /** Supervise (start / restart) the server; false = only write files (site reloads it). */
    manageServer: z.boolean().default(true),
  }),
]);
export type ExportBackendConfig = z.input<typeof exportBackendConfigSchema>;
export type ParsedExportBackendConfig = z.output<typeof exportBackendConfigSchema>;

export function parseExportBackendConfig(input: unknown): ParsedExportBackendConfig {
  const r = exportBackendConfigSchema.safeParse(input);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new NbdValidationError(issue?.path.join('.') || 'config', issue?.message ?? 'invalid');
  }
  return r.data;
}

/** From the app's environment config (`EXPORT_BACKEND`, `NBD_HOST`, `NBD_PORT`, `NBD_*_DIR`). */
export function exportBackendConfigFromApp(cfg: {
  EXPORT_BACKEND: ExportBackendKind;
  NBD_HOST: string;
  NBD_PORT: number;
  NBD_EXPORTS_DIR: string;
  NBD_CONF_DIR: string;
}): ParsedExportBackendConfig {
  return cfg.EXPORT_BACKEND === 'nbdkit-dir'
    ? parseExportBackendConfig({
        kind: 'nbdkit-dir',
        exportsDir: cfg.NBD_EXPORTS_DIR,
        host: cfg.NBD_HOST,
        port: cfg.NBD_PORT,
      })
    : parseExportBackendConfig({
        kind: 'nbd-server',
        confDir: cfg.NBD_CONF_DIR,
        host: cfg.NBD_HOST,
        port: cfg.NBD_PORT,
      });
}

export interface ExportBackendDeps {
  runner?: CommandRunner;
  fs?: ExportFs;
  logger?: Logger;
}

/**
 * Choose the backend by `kind`; config is parsed with zod (errors name the field). The backend's
 * `supervisor` starts/stops the server process (absent for nbd-server with manageServer=false).
 */
export function createExportBackend(
  config: ExportBackendConfig,
  deps: ExportBackendDeps = {},
): NbdkitDirBackend | NbdServerBackend {
  const c = parseExportBackendConfig(config);
  const common = { ...deps, host: c.host, port: c.port, ...(c.uriHost ? { uriHost: c.uriHost } : {}) };
  if (c.kind === 'nbdkit-dir') {
    const supervisor = new NbdkitSupervisor({
      ...deps,
      exportsDir: c.exportsDir,
      host: c.host,
      port: c.port,
      pidFile: c.pidFile ?? DEFAULT_NBDKIT_PID_FILE,
    });
    return new NbdkitDirBackend({ ...common, exportsDir: c.exportsDir, supervisor });
  }
  const supervisor = c.manageServer
    ? new NbdServerSupervisor({
        ...deps,
        confDir: c.confDir,
        host: c.host,
        port: c.port,
        mainConfigPath: c.mainConfigPath ?? path.join(path.dirname(c.confDir), 'volume-lifecycle.config'),
        pidFile: c.pidFile ?? DEFAULT_NBD_SERVER_PID_FILE,
      })
    : undefined;
  return new NbdServerBackend({ ...common, confDir: c.confDir, ...(supervisor ? { supervisor } : {}) });
}

export const DEFAULT_NBDKIT_PID_FILE = '/run/volume-lifecycle/nbdkit.pid';
export const DEFAULT_NBD_SERVER_PID_FILE = '/run/volume-lifecycle/nbd-server.pid';

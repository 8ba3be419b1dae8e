import { isIPv4, isIPv6 } from 'node:net';
import { z } from 'zod';
import { productionChecks, productionEnvShape, resolveSecretFiles } from './production.js';
import { EXPORT_BACKENDS } from '../domain/mapping.js';

/**
 * All configuration comes from the environment and is parsed here once, with zod, so a bad value
 * stops start-up with a message naming the variable instead of failing later in a random place.
 */
const port = z.coerce.number().int().min(1).max(65535);
/** `<ip>:<port>` or `[<ipv6>]:<port>`: an IP literal, as the Temporal core parses a SocketAddr. */
const socketAddress = z.string().refine((v) => {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(v);
  if (!m) return false;
  const n = Number(m[3]);
  return (m[1] !== undefined ? isIPv6(m[1]) : isIPv4(m[2]!)) && n >= 1 && n <= 65535;
}, 'must be <ip>:<port> with an IP address, not a host name (e.g. 127.0.0.1:9464, 0.0.0.0:9464, [::1]:9464)');
const bool = z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1');

export const envSchema = z.object({
  TEMPORAL_ADDRESS: z.string().default('127.0.0.1:7233'),
  TEMPORAL_NAMESPACE: z.string().default('default'),
  /** Prefix of every task queue: `<prefix>-control`, `<prefix>-host-<applianceVmId>`. */
  TASK_QUEUE_PREFIX: z
    .string()
    .regex(/^[a-z0-9][a-z0-9-]*$/, 'must be lower-case letters, digits and "-"')
    .default('volume-lifecycle'),

  DB_HOST: z.string().default('127.0.0.1'),
  DB_PORT: port.default(3306),
  DB_USER: z.string().default('root'),
  DB_PASSWORD: z.string().default(''),
  DB_NAME: z
    .string()
    .regex(/^[A-Za-z0-9_]{1,64}$/, 'must be letters, digits and "_"')
    .default('volume_lifecycle'),
  DB_POOL_SIZE: z.coerce.number().int().min(1).max(500).default(10),
  /**
   * The migration engine's database on the same server (`migratekit_oma`), whose
   * device_mappings, nbd_exports and ossea_volumes rows every saga keeps as the old daemon did
   * (src/engine-contract). Unset: there is no engine database (the demo).
   */
  ENGINE_DB_NAME: z
    .string()
    .regex(/^[A-Za-z0-9_]{1,64}$/, 'must be letters, digits and "_"')
    .optional(),

  CLOUDSTACK_URL: z.string().url().default('http://127.0.0.1:8080/client/api'),
  CLOUDSTACK_API_KEY: z.string().default(''),
  CLOUDSTACK_SECRET_KEY: z.string().default(''),

  APPLIANCE_VM_ID: z.string().uuid().optional(),
  /**
   * Every appliance VM id at this site, comma-separated (APPLIANCE_VM_ID is always one of them).
   * The old contract's `attach {vm_id}` means "onto the appliance" only for these ids; any
   * other VM id means "give the volume to that VM" (failover).
   */
  APPLIANCE_VM_IDS: z
    .string()
    .default('')
    .transform((v) =>
      v
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean),
    )
    .pipe(z.array(z.string().uuid('must be a comma-separated list of VM UUIDs'))),
  EXPORT_BACKEND: z.enum(EXPORT_BACKENDS).default('nbdkit-dir'),
  NBD_HOST: z.string().default('127.0.0.1'),
  NBD_PORT: port.default(10809),
  NBD_EXPORTS_DIR: z.string().default('/run/volume-lifecycle/exports'),
  NBD_CONF_DIR: z.string().default('/etc/nbd-server/conf.d'),
  /** Host put in nbd:// URIs handed to replication jobs (default NBD_HOST). */
  NBD_URI_HOST: z.string().optional(),
  /** Start and supervise the NBD server from the host worker. */
  NBD_MANAGE_SERVER: bool.default(true),
  SYSFS_ROOT: z.string().default('/sys'),
  DEV_ROOT: z.string().default('/dev'),
  CORRELATION_TIMEOUT_MS: z.coerce.number().int().min(100).default(60_000),

  API_HOST: z.string().default('127.0.0.1'),
  API_PORT: port.default(8090),
  API_TOKEN: z.string().default(''),
  /**
   * Accept tokenless mutations on /api/v1 (the old daemon's contract: its client cannot send
   * headers) from loopback peers while the API listens on a loopback address. Turn off when a
   * reverse proxy on this machine forwards remote callers to the API.
   */
  API_V1_TRUST_LOOPBACK: bool.default(true),
  RECONCILE_INTERVAL: z.string().default('5m'),
  METRICS_PORT: port.optional(),
  /** Where a worker serves the Temporal core's Prometheus metrics (`/metrics`); off when unset. */
  WORKER_METRICS_ADDRESS: socketAddress.optional(),
  DRY_RUN: bool.default(false),
  /** Reliability suite only (src/worker/failpoints.ts): never set in production. */
  FAILPOINTS_DIR: z.string().min(1).optional(),
  /** TLS, API key, secret files, drain time (./production.ts). */
  ...productionEnvShape,
});

export type AppConfig = z.output<typeof envSchema>;

export class ConfigError extends Error {
  constructor(public readonly issues: { field: string; message: string }[]) {
    super(`invalid configuration: ${issues.map((i) => `${i.field}: ${i.message}`).join('; ')}`);
    this.name = 'ConfigError';
  }
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): AppConfig {
  // `X_FILE` secrets are read first, so their values are parsed like `X` itself.
  const secrets = resolveSecretFiles(env);
  const r = envSchema.superRefine(productionChecks).safeParse(secrets.env);
  const issues = [
    ...secrets.issues,
    ...(r.success ? [] : r.error.issues.map((i) => ({ field: i.path.join('.'), message: i.message }))),
  ];
  if (!r.success || issues.length) throw new ConfigError(issues);
  return r.data;
}

import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import type { AppConfig } from './index.js';

/**
 * Settings a production install needs beyond the development defaults: TLS and an API key for
 * Temporal, TLS and a password file for MySQL, secrets read from files (never argv, never the
 * logs), and how long a worker drains on SIGTERM. Merged into `envSchema` (./index.ts), so they
 * are parsed with it and a bad value is named like any other.
 */
const bool = z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1');
/** An env file line `X=` means "not set", as a commented-out line does. */
const unsetIfEmpty = (v: unknown) => (v === '' ? undefined : v);
const absFile = z
  .string()
  .refine((p) => path.isAbsolute(p) && !p.includes('\0'), 'must be an absolute file path');
const hostName = z
  .string()
  .regex(/^[A-Za-z0-9.-]{1,253}$/, 'must be a DNS name (letters, digits, "." and "-")');
/** `500ms`, `30s`, `5m`, `1h` → milliseconds. */
export function parseDuration(v: string): number | undefined {
  const m = /^(\d{1,9})(ms|s|m|h)$/.exec(v.trim());
  if (!m) return undefined;
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 'ms' | 's' | 'm' | 'h'];
}
const duration = z.string().transform((v, ctx) => {
  const ms = parseDuration(v);
  if (ms === undefined) {
    ctx.addIssue({ code: 'custom', message: 'must be a duration like 500ms, 30s, 5m or 1h' });
    return z.NEVER;
  }
  return ms;
});

export const productionEnvShape = {
  /** TLS to Temporal. Unset: on when a CA, a client certificate or an API key is given. */
  TEMPORAL_TLS: z.preprocess(unsetIfEmpty, bool.optional()),
  /** PEM CA bundle that signed the server's certificate (default: the system's CAs). */
  TEMPORAL_TLS_CA_FILE: z.preprocess(unsetIfEmpty, absFile.optional()),
  /** PEM client certificate and key, for servers that require mutual TLS. */
  TEMPORAL_TLS_CERT_FILE: z.preprocess(unsetIfEmpty, absFile.optional()),
  TEMPORAL_TLS_KEY_FILE: z.preprocess(unsetIfEmpty, absFile.optional()),
  /** Name to check the server's certificate against when it differs from TEMPORAL_ADDRESS's host. */
  TEMPORAL_TLS_SERVER_NAME: z.preprocess(unsetIfEmpty, hostName.optional()),
  /** Temporal Cloud style API key (prefer TEMPORAL_API_KEY_FILE). */
  TEMPORAL_API_KEY: z.preprocess(unsetIfEmpty, z.string().optional()),

  /** TLS to MySQL. Unset: on when a CA or client certificate is given. */
  DB_TLS: z.preprocess(unsetIfEmpty, bool.optional()),
  DB_TLS_CA_FILE: z.preprocess(unsetIfEmpty, absFile.optional()),
  DB_TLS_CERT_FILE: z.preprocess(unsetIfEmpty, absFile.optional()),
  DB_TLS_KEY_FILE: z.preprocess(unsetIfEmpty, absFile.optional()),

  /**
   * On SIGTERM a worker stops polling and lets in-flight activities finish for this long; what
   * is still running then is cancelled and its attempt fails, so the server retries it on the
   * next worker (the successor, for a host queue). Keep systemd's TimeoutStopSec above it.
   */
  WORKER_SHUTDOWN_GRACE: z.preprocess(unsetIfEmpty, duration.default(30_000)),
  /** Reported to Temporal as the workers' build id; default: the release's version. */
  WORKER_BUILD_ID: z.preprocess(
    unsetIfEmpty,
    z
      .string()
      .regex(/^[A-Za-z0-9._+~-]{1,255}$/, 'must be letters, digits and . _ + ~ -')
      .optional(),
  ),
};

type ProductionEnv = {
  [K in keyof typeof productionEnvShape]?: z.output<(typeof productionEnvShape)[K]>;
};

/** Cross-field rules, named on the variable to change. */
export function productionChecks(v: ProductionEnv, ctx: z.RefinementCtx): void {
  const pair = (cert: keyof ProductionEnv, key: keyof ProductionEnv) => {
    if (v[cert] && !v[key]) ctx.addIssue({ code: 'custom', path: [key], message: `required with ${cert}` });
    if (v[key] && !v[cert]) ctx.addIssue({ code: 'custom', path: [cert], message: `required with ${key}` });
  };
  pair('TEMPORAL_TLS_CERT_FILE', 'TEMPORAL_TLS_KEY_FILE');
  pair('DB_TLS_CERT_FILE', 'DB_TLS_KEY_FILE');
  if (v.TEMPORAL_TLS === false) {
    for (const k of ['TEMPORAL_TLS_CA_FILE', 'TEMPORAL_TLS_CERT_FILE', 'TEMPORAL_API_KEY'] as const)
      if (v[k])
        ctx.addIssue({
          code: 'custom',
          path: ['TEMPORAL_TLS'],
          message: `is false but ${k} is set (an API key or certificate needs TLS)`,
        });
  }
  if (v.DB_TLS === false)
    for (const k of ['DB_TLS_CA_FILE', 'DB_TLS_CERT_FILE'] as const)
      if (v[k]) ctx.addIssue({ code: 'custom', path: ['DB_TLS'], message: `is false but ${k} is set` });
}

/**
 * Secrets that may come from a file instead of the environment (`X_FILE=/etc/…` instead of
 * `X=…`): the file is read at start, one trailing newline dropped. Setting both is refused.
 */
export const SECRET_FILE_VARIABLES = [
  'DB_PASSWORD',
  'CLOUDSTACK_API_KEY',
  'CLOUDSTACK_SECRET_KEY',
  'API_TOKEN',
  'TEMPORAL_API_KEY',
] as const;

export interface ConfigIssue {
  field: string;
  message: string;
}

/** `env` with every `X_FILE` replaced by `X` = the file's content; problems named by variable. */
export function resolveSecretFiles(
  env: NodeJS.ProcessEnv,
  read: (file: string) => string = (f) => readFileSync(f, 'utf8'),
): { env: NodeJS.ProcessEnv; issues: ConfigIssue[] } {
  const out: NodeJS.ProcessEnv = { ...env };
  const issues: ConfigIssue[] = [];
  for (const name of SECRET_FILE_VARIABLES) {
    const fileVar = `${name}_FILE`;
    const file = env[fileVar];
    delete out[fileVar];
    if (file === undefined || file === '') continue;
    if (env[name]) {
      issues.push({ field: fileVar, message: `set either ${name} or ${fileVar}, not both` });
      continue;
    }
    if (!path.isAbsolute(file)) {
      issues.push({ field: fileVar, message: 'must be an absolute file path' });
      continue;
    }
    let text: string;
    try {
      text = read(file);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      issues.push({ field: fileVar, message: `cannot read ${file}: ${e.code ?? e.message}` });
      continue;
    }
    const value = text.replace(/\r?\n$/, '');
    if (!value) issues.push({ field: fileVar, message: `${file} is empty` });
    else out[name] = value;
  }
  return { env: out, issues };
}

/** A file setting that cannot be used: thrown at start, naming the variable. */
export class SettingFileError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
    this.name = 'SettingFileError';
  }
}

function readSetting(field: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new SettingFileError(field, `cannot read ${file}: ${e.code ?? e.message}`);
  }
}

function certificates(field: string, file: string, pem: Buffer): X509Certificate[] {
  const blocks = pem.toString('utf8').match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g);
  if (!blocks) throw new SettingFileError(field, `${file} holds no PEM certificate`);
  return blocks.map((b) => {
    try {
      return new X509Certificate(b);
    } catch (err) {
      throw new SettingFileError(field, `${file}: not a valid certificate (${(err as Error).message})`);
    }
  });
}

export interface TlsMaterial {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

/**
 * Read and check a CA / certificate / key triple before any connection uses it, so a wrong file
 * is named at start instead of surfacing as a handshake failure: every file parses as PEM, the
 * certificate is within its validity period and the key is the certificate's.
 */
export function readTlsMaterial(
  names: { ca: string; cert: string; key: string },
  files: { ca?: string | undefined; cert?: string | undefined; key?: string | undefined },
  now = new Date(),
): TlsMaterial {
  const out: TlsMaterial = {};
  if (files.ca) {
    out.ca = readSetting(names.ca, files.ca);
    certificates(names.ca, files.ca, out.ca);
  }
  if (files.cert && files.key) {
    out.cert = readSetting(names.cert, files.cert);
    out.key = readSetting(names.key, files.key);
    const [leaf] = certificates(names.cert, files.cert, out.cert);
    let key;
    try {
      key = createPrivateKey(out.key);
    } catch (err) {
      throw new SettingFileError(
        names.key,
        `${files.key}: not a valid private key (${(err as Error).message})`,
      );
    }
    if (!leaf!.checkPrivateKey(key))
      throw new SettingFileError(
        names.key,
        `${files.key} is not the key of the certificate in ${files.cert}`,
      );
    if (new Date(leaf!.validTo) < now)
      throw new SettingFileError(names.cert, `${files.cert} expired on ${leaf!.validTo}`);
    if (new Date(leaf!.validFrom) > now)
      throw new SettingFileError(names.cert, `${files.cert} is not valid before ${leaf!.validFrom}`);
  }
  return out;
}

export type TemporalTlsSettings = Partial<
  Pick<
    AppConfig,
    | 'TEMPORAL_TLS'
    | 'TEMPORAL_TLS_CA_FILE'
    | 'TEMPORAL_TLS_CERT_FILE'
    | 'TEMPORAL_TLS_KEY_FILE'
    | 'TEMPORAL_TLS_SERVER_NAME'
    | 'TEMPORAL_API_KEY'
  >
>;

export function temporalTlsEnabled(cfg: TemporalTlsSettings): boolean {
  return (
    cfg.TEMPORAL_TLS ??
    Boolean(cfg.TEMPORAL_TLS_CA_FILE || cfg.TEMPORAL_TLS_CERT_FILE || cfg.TEMPORAL_API_KEY)
  );
}

export function readTemporalTls(cfg: TemporalTlsSettings): TlsMaterial | undefined {
  if (!temporalTlsEnabled(cfg)) return undefined;
  return readTlsMaterial(
    { ca: 'TEMPORAL_TLS_CA_FILE', cert: 'TEMPORAL_TLS_CERT_FILE', key: 'TEMPORAL_TLS_KEY_FILE' },
    { ca: cfg.TEMPORAL_TLS_CA_FILE, cert: cfg.TEMPORAL_TLS_CERT_FILE, key: cfg.TEMPORAL_TLS_KEY_FILE },
  );
}

type DbTlsSettings = Partial<
  Pick<AppConfig, 'DB_TLS' | 'DB_TLS_CA_FILE' | 'DB_TLS_CERT_FILE' | 'DB_TLS_KEY_FILE'>
>;

export function dbTlsEnabled(cfg: DbTlsSettings): boolean {
  return cfg.DB_TLS ?? Boolean(cfg.DB_TLS_CA_FILE || cfg.DB_TLS_CERT_FILE);
}

/**
 * mysql2 pool options for DB TLS: `createPool(cfg, dbPoolTlsOptions(cfg))`. The server's
 * certificate is always verified (against DB_TLS_CA_FILE, else the system's CAs).
 */
export function dbPoolTlsOptions(cfg: DbTlsSettings): {
  ssl?: { ca?: Buffer; cert?: Buffer; key?: Buffer; rejectUnauthorized: true };
} {
  if (!dbTlsEnabled(cfg)) return {};
  const m = readTlsMaterial(
    { ca: 'DB_TLS_CA_FILE', cert: 'DB_TLS_CERT_FILE', key: 'DB_TLS_KEY_FILE' },
    { ca: cfg.DB_TLS_CA_FILE, cert: cfg.DB_TLS_CERT_FILE, key: cfg.DB_TLS_KEY_FILE },
  );
  return { ssl: { ...m, rejectUnauthorized: true } };
}

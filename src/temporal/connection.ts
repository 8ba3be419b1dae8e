import { Client, Connection } from '@temporalio/client';
import type { AppConfig } from '../config/index.js';
import { readTemporalTls, temporalTlsEnabled, type TemporalTlsSettings } from '../config/production.js';
import { probeTemporal } from './probe.js';

/**
 * How every process reaches Temporal: plaintext by default (the dev server), or TLS with a
 * private CA, a client certificate (mutual TLS) and/or an API key. The same options serve the
 * client (here) and the workers' NativeConnection (src/worker/temporal.ts).
 */
export type TemporalSettings = Pick<AppConfig, 'TEMPORAL_ADDRESS' | 'TEMPORAL_NAMESPACE'> &
  TemporalTlsSettings;

export interface TemporalConnectionOptions {
  address: string;
  tls?: {
    serverRootCACertificate?: Buffer;
    clientCertPair?: { crt: Buffer; key: Buffer };
    serverNameOverride?: string;
  };
  apiKey?: string;
}

/** Thrown when Temporal cannot be reached or refuses us; the message says why and what to set. */
export class TemporalConnectError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TemporalConnectError';
  }
}

/** Reads (and checks) the certificate files: a wrong file is named here, before any handshake. */
export function temporalConnectionOptions(cfg: TemporalSettings): TemporalConnectionOptions {
  const opts: TemporalConnectionOptions = { address: cfg.TEMPORAL_ADDRESS };
  if (temporalTlsEnabled(cfg)) {
    const m = readTemporalTls(cfg) ?? {};
    opts.tls = {
      ...(m.ca ? { serverRootCACertificate: m.ca } : {}),
      ...(m.cert && m.key ? { clientCertPair: { crt: m.cert, key: m.key } } : {}),
      ...(cfg.TEMPORAL_TLS_SERVER_NAME ? { serverNameOverride: cfg.TEMPORAL_TLS_SERVER_NAME } : {}),
    };
  }
  if (cfg.TEMPORAL_API_KEY) opts.apiKey = cfg.TEMPORAL_API_KEY;
  return opts;
}

/** The same handshake the SDK is about to make, answered in plain words (see probe.ts). */
export async function checkTemporalEndpoint(opts: TemporalConnectionOptions): Promise<string | undefined> {
  const r = await probeTemporal({
    address: opts.address,
    ...(opts.tls
      ? {
          tls: {
            ...(opts.tls.serverRootCACertificate ? { ca: opts.tls.serverRootCACertificate } : {}),
            ...(opts.tls.clientCertPair
              ? { cert: opts.tls.clientCertPair.crt, key: opts.tls.clientCertPair.key }
              : {}),
            serverName: opts.tls.serverNameOverride,
          },
        }
      : {}),
  });
  return r.ok ? undefined : r.problem;
}

/**
 * Connect with `connect`, explaining a failure: with TLS the handshake is checked first (a
 * refused certificate is otherwise a bare "transport error" or a 10 s deadline); a failure
 * after that is probed the same way, and gRPC's authentication answers are named.
 */
export async function connectExplained<T>(
  opts: TemporalConnectionOptions,
  connect: () => Promise<T>,
): Promise<T> {
  const what = `Temporal at ${opts.address}${opts.tls ? ' (TLS)' : ''}`;
  if (opts.tls) {
    const problem = await checkTemporalEndpoint(opts);
    if (problem) throw new TemporalConnectError(`cannot connect to ${what}: ${problem}`);
  }
  try {
    return await connect();
  } catch (err) {
    const msg = (err as Error).message;
    if (/UNAUTHENTICATED|PERMISSION_DENIED|Request unauthorized|\b16\b.*unauth/i.test(msg))
      throw new TemporalConnectError(
        `${what} refused our credentials${opts.apiKey ? ' (TEMPORAL_API_KEY / TEMPORAL_API_KEY_FILE)' : ''}: ${msg}`,
        { cause: err },
      );
    const problem = await checkTemporalEndpoint(opts);
    throw new TemporalConnectError(`cannot connect to ${what}: ${problem ?? msg}`, { cause: err });
  }
}

export async function connectClient(cfg: TemporalSettings) {
  const opts = temporalConnectionOptions(cfg);
  const connection = await connectExplained(opts, () => Connection.connect(opts));
  return { connection, client: new Client({ connection, namespace: cfg.TEMPORAL_NAMESPACE }) };
}

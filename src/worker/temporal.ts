import { NativeConnection } from '@temporalio/worker';
import {
  connectExplained,
  temporalConnectionOptions,
  type TemporalSettings,
} from '../temporal/connection.js';

/** The workers' connection: the client's options (TLS, API key), failures explained alike. */
export function connectNative(cfg: TemporalSettings): Promise<NativeConnection> {
  const opts = temporalConnectionOptions(cfg);
  return connectExplained(opts, () => NativeConnection.connect(opts));
}

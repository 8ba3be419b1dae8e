import { Client, Connection } from '@temporalio/client';
import type { AppConfig } from '../config/index.js';

export async function connectClient(cfg: Pick<AppConfig, 'TEMPORAL_ADDRESS' | 'TEMPORAL_NAMESPACE'>) {
  const connection = await Connection.connect({ address: cfg.TEMPORAL_ADDRESS });
  return { connection, client: new Client({ connection, namespace: cfg.TEMPORAL_NAMESPACE }) };
}

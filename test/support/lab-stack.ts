import { startLabStack as start, type LabStack } from '../../harness/lab/stack.js';
import { freshDatabase } from './db.js';

export type { LabStack };

/** The lab stack on a fresh database of its own. */
export async function startLabStack(
  tag: string,
  opts: { correlationTimeoutMs?: number; controlWorker?: 'in-process' | 'process' } = {},
): Promise<LabStack> {
  return start({ db: await freshDatabase(tag), tag, ...opts });
}

import { startLabStack as start, type LabStack } from '../../harness/lab/stack.js';
import { freshDatabase } from './db.js';
import { freshEngineDatabase, type EngineDb } from './engine-db.js';

export type { LabStack };

/**
 * The lab stack on a fresh database of its own; with `engineDb`, the migration engine's database
 * beside it (its rows then follow ours, and assertConsistent checks that they do).
 */
export async function startLabStack(
  tag: string,
  opts: { correlationTimeoutMs?: number; controlWorker?: 'in-process' | 'process'; engineDb?: boolean } = {},
): Promise<LabStack & { engineDb?: EngineDb }> {
  const { engineDb: withEngine, ...rest } = opts;
  const engineDb = withEngine ? await freshEngineDatabase(tag) : undefined;
  const s = await start({
    db: await freshDatabase(tag),
    tag,
    ...rest,
    ...(engineDb ? { engine: engineDb.rows } : {}),
  }).catch(async (err: unknown) => {
    await engineDb?.close();
    throw err;
  });
  if (!engineDb) return s;
  const close = s.close;
  return Object.assign(s, {
    engineDb,
    close: async () => {
      await close();
      await engineDb.close();
    },
  });
}

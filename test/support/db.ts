import { randomBytes } from 'node:crypto';
import type { Pool } from 'mysql2/promise';
import { loadConfig } from '../../src/config/index.js';
import { createPool, dropDatabase, ensureDatabase } from '../../src/db/pool.js';
import { migrateUp } from '../../src/db/migrator.js';

/** A fresh, migrated database on the real server for one test file; dropped by `close()`. */
export async function freshDatabase(
  tag: string,
): Promise<{ pool: Pool; name: string; close: () => Promise<void> }> {
  const base = loadConfig();
  const name = `vl_test_${tag}_${randomBytes(3).toString('hex')}`.slice(0, 64);
  const cfg = { ...base, DB_NAME: name, DB_POOL_SIZE: 20 };
  await ensureDatabase(cfg);
  const pool = createPool(cfg);
  await migrateUp(pool);
  return {
    pool,
    name,
    close: async () => {
      await pool.end();
      await dropDatabase(cfg);
    },
  };
}

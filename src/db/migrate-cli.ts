// `npm run migrate -- up|down|status` against the configured database.
import { dbPoolTlsOptions } from '../config/production.js';
import { loadConfig } from '../config/index.js';
import { createPool, ensureDatabase } from './pool.js';
import { createMigrator } from './migrator.js';

const cmd = process.argv[2] ?? 'up';
const cfg = loadConfig();
await ensureDatabase(cfg);
const pool = createPool(cfg, dbPoolTlsOptions(cfg));
try {
  const m = createMigrator(pool, (s) => console.log(s));
  if (cmd === 'up')
    console.log(
      'applied:',
      (await m.up()).map((x) => x.name),
    );
  else if (cmd === 'down')
    console.log(
      'reverted:',
      (await m.down()).map((x) => x.name),
    );
  else if (cmd === 'status') console.log({ executed: await m.executed(), pending: await m.pending() });
  else throw new Error(`unknown command ${cmd}: use up, down or status`);
} finally {
  await pool.end();
}

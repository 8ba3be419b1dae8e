// `volume-lifecycle migrate [up|status]`: the database migrations on the control host, with the
// production connection settings (DB_TLS*, DB_PASSWORD_FILE); the installer runs `up`.
import { loadConfig } from '../config/index.js';
import { createMigrator } from '../db/migrator.js';
import { openDatabase } from '../worker/database.js';

const cmd = process.argv[2] ?? 'up';
if (!['up', 'status'].includes(cmd)) {
  console.error(`unknown command ${cmd}: use up or status`);
  process.exit(2);
}
const cfg = loadConfig();
const pool = await openDatabase(cfg, { create: cmd === 'up' });
try {
  const m = createMigrator(pool);
  if (cmd === 'up') {
    const applied = (await m.up()).map((x) => x.name);
    console.log(applied.length ? `applied: ${applied.join(', ')}` : 'database already migrated');
  } else {
    const [executed, pending] = [await m.executed(), await m.pending()];
    console.log(`executed: ${executed.map((x) => x.name).join(', ') || '-'}`);
    console.log(`pending: ${pending.map((x) => x.name).join(', ') || '-'}`);
    if (pending.length) process.exitCode = 1;
  }
} finally {
  await pool.end();
}

import type { Pool, RowDataPacket } from 'mysql2/promise';
import { Umzug, type UmzugStorage } from 'umzug';
import { migrations, type ServerFlavor, type SqlStatement } from './migrations/index.js';

/** umzug keeps its ledger in `schema_migrations`; each migration is a pair of SQL lists. */
class MysqlStorage implements UmzugStorage {
  constructor(private readonly pool: Pool) {}
  private async ensureTable(): Promise<void> {
    await this.pool.query(
      `CREATE TABLE IF NOT EXISTS schema_migrations (
         name VARCHAR(255) NOT NULL PRIMARY KEY,
         applied_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
       ) ENGINE=InnoDB`,
    );
  }
  async logMigration({ name }: { name: string }): Promise<void> {
    await this.ensureTable();
    await this.pool.query('INSERT INTO schema_migrations (name) VALUES (?)', [name]);
  }
  async unlogMigration({ name }: { name: string }): Promise<void> {
    await this.ensureTable();
    await this.pool.query('DELETE FROM schema_migrations WHERE name = ?', [name]);
  }
  async executed(): Promise<string[]> {
    await this.ensureTable();
    const [rows] = await this.pool.query<RowDataPacket[]>('SELECT name FROM schema_migrations ORDER BY name');
    return rows.map((r) => String(r.name));
  }
}

async function serverFlavor(pool: Pool): Promise<ServerFlavor> {
  const [rows] = await pool.query<RowDataPacket[]>('SELECT VERSION() AS v');
  return /mariadb/i.test(String(rows[0]?.v)) ? 'mariadb' : 'mysql';
}

async function run(pool: Pool, statements: SqlStatement[]): Promise<void> {
  const flavor = await serverFlavor(pool);
  for (const sql of statements) await pool.query(typeof sql === 'string' ? sql : sql(flavor));
}

export function createMigrator(pool: Pool, log: (msg: string) => void = () => {}) {
  return new Umzug({
    migrations: migrations.map((m) => ({
      name: m.name,
      up: () => run(pool, m.up),
      down: () => run(pool, m.down),
    })),
    storage: new MysqlStorage(pool),
    logger: {
      info: (e) => log(JSON.stringify(e)),
      warn: (e) => log(JSON.stringify(e)),
      error: (e) => log(JSON.stringify(e)),
      debug: () => {},
    },
  });
}

export async function migrateUp(pool: Pool): Promise<string[]> {
  const done = await createMigrator(pool).up();
  return done.map((m) => m.name);
}

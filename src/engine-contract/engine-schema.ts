import type { Pool, RowDataPacket } from 'mysql2/promise';
import { ENGINE_DB_NAME } from './engine-rows.js';

/**
 * Whether the engine's database is one we can keep (`volumectl doctor`, and so the installer):
 * its tables are there, the columns we write and read have the production schema's types, the
 * keys we rely on are unique, and our MySQL user may do what the sagas do — tried inside a
 * transaction that is rolled back, so nothing is changed. And, with no ENGINE_DB_NAME, whether
 * this server has a database that looks like the engine's.
 */

/** The columns we write or read, by table, with the type families the production schema has. */
export const ENGINE_COLUMNS: Record<string, Record<string, readonly string[]>> = {
  device_mappings: {
    id: ['varchar'],
    vm_context_id: ['varchar'],
    volume_uuid: ['varchar'],
    vm_id: ['varchar'],
    operation_mode: ['enum'],
    cloudstack_device_id: ['int'],
    requires_device_correlation: ['tinyint'],
    device_path: ['varchar'],
    cloudstack_state: ['varchar'],
    linux_state: ['varchar'],
    size: ['bigint'],
    last_sync: ['timestamp', 'datetime'],
    created_at: ['timestamp', 'datetime'],
    updated_at: ['timestamp', 'datetime'],
    ossea_snapshot_id: ['varchar'],
    snapshot_created_at: ['timestamp', 'datetime'],
    snapshot_status: ['varchar'],
    persistent_device_name: ['varchar'],
    symlink_path: ['varchar'],
  },
  nbd_exports: {
    vm_context_id: ['varchar'],
    volume_id: ['varchar'],
    vm_disk_id: ['bigint'],
    device_mapping_uuid: ['varchar'],
    export_name: ['varchar'],
    port: ['bigint', 'int'],
    device_path: ['longtext', 'varchar', 'text'],
    config_path: ['longtext', 'varchar', 'text'],
    status: ['varchar', 'enum'],
    created_at: ['datetime', 'timestamp'],
    updated_at: ['datetime', 'timestamp'],
  },
  ossea_volumes: {
    vm_context_id: ['varchar'],
    volume_id: ['longtext', 'varchar'],
    device_path: ['longtext', 'varchar', 'text'],
    status: ['varchar'],
    updated_at: ['datetime', 'timestamp'],
  },
};

/** Keys our writes look rows up by and the engine's code relies on being unique. */
const UNIQUE: [table: string, column: string][] = [
  ['device_mappings', 'volume_uuid'],
  ['device_mappings', 'device_path'],
  ['nbd_exports', 'export_name'],
];

/** What each saga does to each table, tried on no row. */
const PRIVILEGES: [table: string, what: string, sql: (t: string) => string][] = [
  ['device_mappings', 'SELECT', (t) => `SELECT 1 FROM ${t} LIMIT 0`],
  ['device_mappings', 'INSERT', (t) => `INSERT INTO ${t} SELECT * FROM ${t} WHERE 1 = 0`],
  ['device_mappings', 'UPDATE', (t) => `UPDATE ${t} SET vm_id = vm_id WHERE 1 = 0`],
  ['device_mappings', 'DELETE', (t) => `DELETE FROM ${t} WHERE 1 = 0`],
  ['nbd_exports', 'SELECT', (t) => `SELECT 1 FROM ${t} LIMIT 0`],
  ['nbd_exports', 'INSERT', (t) => `INSERT INTO ${t} SELECT * FROM ${t} WHERE 1 = 0`],
  ['nbd_exports', 'UPDATE', (t) => `UPDATE ${t} SET port = port WHERE 1 = 0`],
  ['nbd_exports', 'DELETE', (t) => `DELETE FROM ${t} WHERE 1 = 0`],
  ['ossea_volumes', 'SELECT', (t) => `SELECT 1 FROM ${t} LIMIT 0`],
  ['ossea_volumes', 'UPDATE', (t) => `UPDATE ${t} SET status = status WHERE 1 = 0`],
];

export interface EngineSchemaReport {
  ok: boolean;
  /** One sentence per problem, each saying what to do. */
  problems: string[];
}

export async function checkEngineDatabase(pool: Pool, database: string): Promise<EngineSchemaReport> {
  if (!ENGINE_DB_NAME.test(database))
    return { ok: false, problems: [`ENGINE_DB_NAME "${database}" is not a database name`] };
  const problems: string[] = [];
  const [cols] = await pool.query<RowDataPacket[]>(
    `SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS
      WHERE TABLE_SCHEMA = ? AND TABLE_NAME IN (?)`,
    [database, Object.keys(ENGINE_COLUMNS)],
  );
  const have = new Map<string, Map<string, string>>();
  for (const c of cols) {
    const t = String(c.TABLE_NAME);
    if (!have.has(t)) have.set(t, new Map());
    have.get(t)!.set(String(c.COLUMN_NAME), String(c.DATA_TYPE).toLowerCase());
  }
  if (have.size === 0) {
    const [dbs] = await pool.query<RowDataPacket[]>(
      'SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?',
      [database],
    );
    return {
      ok: false,
      problems: [
        dbs.length
          ? `database ${database} has none of the engine's tables (device_mappings, nbd_exports, ossea_volumes), or this user may not see them: is ENGINE_DB_NAME the engine's database?`
          : `database ${database} does not exist on this server: set ENGINE_DB_NAME to the migration engine's database (migratekit_oma), or unset it`,
      ],
    };
  }
  for (const [table, columns] of Object.entries(ENGINE_COLUMNS)) {
    const got = have.get(table);
    if (!got) {
      problems.push(`table ${database}.${table} is missing: the engine's schema is older or another one`);
      continue;
    }
    const missing = Object.keys(columns).filter((c) => !got.has(c));
    if (missing.length)
      problems.push(
        `${database}.${table} lacks column(s) ${missing.join(', ')}: upgrade the engine's schema`,
      );
    for (const [c, types] of Object.entries(columns)) {
      const t = got.get(c);
      if (t && !types.includes(t))
        problems.push(`${database}.${table}.${c} is ${t}, not ${types.join(' or ')}`);
    }
  }
  const [keys] = await pool.query<RowDataPacket[]>(
    `SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.STATISTICS
      WHERE TABLE_SCHEMA = ? AND NON_UNIQUE = 0 AND SEQ_IN_INDEX = 1`,
    [database],
  );
  const unique = new Set(keys.map((k) => `${String(k.TABLE_NAME)}.${String(k.COLUMN_NAME)}`));
  for (const [t, c] of UNIQUE)
    if (have.has(t) && !unique.has(`${t}.${c}`))
      problems.push(
        `${database}.${t}.${c} has no UNIQUE key: the engine's schema requires one, and our writes look rows up by it`,
      );

  if (problems.length === 0) {
    const conn = await pool.getConnection();
    try {
      await conn.beginTransaction();
      for (const [table, what, sql] of PRIVILEGES) {
        try {
          await conn.query(sql(`\`${database}\`.\`${table}\``));
        } catch (err) {
          const code = (err as { code?: string }).code ?? '';
          problems.push(
            /ACCESS_DENIED/.test(code)
              ? `this MySQL user may not ${what} ${database}.${table}: GRANT SELECT, INSERT, UPDATE, DELETE ON ${database}.device_mappings, and the same on nbd_exports, and SELECT, UPDATE ON ${database}.ossea_volumes`
              : `${what} on ${database}.${table} failed: ${(err as Error).message}`,
          );
        }
      }
    } finally {
      await conn.rollback().catch(() => {});
      conn.release();
    }
  }
  return { ok: problems.length === 0, problems };
}

/** Databases on this server holding the engine's three tables: what ENGINE_DB_NAME could name. */
export async function findEngineDatabases(pool: Pool): Promise<string[]> {
  const [rows] = await pool.query<RowDataPacket[]>(
    `SELECT TABLE_SCHEMA FROM information_schema.TABLES WHERE TABLE_NAME IN ('device_mappings', 'nbd_exports', 'ossea_volumes')
      GROUP BY TABLE_SCHEMA HAVING COUNT(DISTINCT TABLE_NAME) = 3`,
  );
  return rows.map((r) => String(r.TABLE_SCHEMA));
}

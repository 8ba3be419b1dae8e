import mysql, { type Pool, type PoolOptions } from 'mysql2/promise';
import type { AppConfig } from '../config/index.js';

export type DbConfig = Pick<
  AppConfig,
  'DB_HOST' | 'DB_PORT' | 'DB_USER' | 'DB_PASSWORD' | 'DB_NAME' | 'DB_POOL_SIZE'
>;

export function createPool(cfg: DbConfig, extra: Partial<PoolOptions> = {}): Pool {
  return mysql.createPool({
    host: cfg.DB_HOST,
    port: cfg.DB_PORT,
    user: cfg.DB_USER,
    password: cfg.DB_PASSWORD,
    database: cfg.DB_NAME,
    connectionLimit: cfg.DB_POOL_SIZE,
    // DATETIME(3) columns are stored in UTC; keep mysql2 from shifting them to local time.
    timezone: 'Z',
    dateStrings: false,
    supportBigNumbers: true,
    bigNumberStrings: false,
    ...extra,
  });
}

/** Run one statement on the server without a database selected (create/drop the database). */
async function adminQuery(cfg: DbConfig, sql: string): Promise<void> {
  const conn = await mysql.createConnection({
    host: cfg.DB_HOST,
    port: cfg.DB_PORT,
    user: cfg.DB_USER,
    password: cfg.DB_PASSWORD,
  });
  try {
    await conn.query(sql);
  } finally {
    await conn.end();
  }
}

function databaseName(cfg: DbConfig): string {
  // Validated again here: the name is interpolated as an identifier.
  if (!/^[A-Za-z0-9_]{1,64}$/.test(cfg.DB_NAME)) throw new Error('DB_NAME: invalid database name');
  return cfg.DB_NAME;
}

/** Create the database if it does not exist. */
export async function ensureDatabase(cfg: DbConfig): Promise<void> {
  await adminQuery(
    cfg,
    `CREATE DATABASE IF NOT EXISTS \`${databaseName(cfg)}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`,
  );
}

export async function dropDatabase(cfg: DbConfig): Promise<void> {
  await adminQuery(cfg, `DROP DATABASE IF EXISTS \`${databaseName(cfg)}\``);
}

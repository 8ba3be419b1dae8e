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

/** Create the database if it does not exist (identifier validated by the config schema). */
export async function ensureDatabase(cfg: DbConfig): Promise<void> {
  if (!/^[A-Za-z0-9_]{1,64}$/.test(cfg.DB_NAME)) throw new Error(`DB_NAME: invalid database name`);
  const conn = await mysql.createConnection({
    host: cfg.DB_HOST,
    port: cfg.DB_PORT,
    user: cfg.DB_USER,
    password: cfg.DB_PASSWORD,
  });
  try {
    await conn.query(
      `CREATE DATABASE IF NOT EXISTS \`${cfg.DB_NAME}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`,
    );
  } finally {
    await conn.end();
  }
}

export async function dropDatabase(cfg: DbConfig): Promise<void> {
  if (!/^[A-Za-z0-9_]{1,64}$/.test(cfg.DB_NAME)) throw new Error(`DB_NAME: invalid database name`);
  const conn = await mysql.createConnection({
    host: cfg.DB_HOST,
    port: cfg.DB_PORT,
    user: cfg.DB_USER,
    password: cfg.DB_PASSWORD,
  });
  try {
    await conn.query(`DROP DATABASE IF EXISTS \`${cfg.DB_NAME}\``);
  } finally {
    await conn.end();
  }
}

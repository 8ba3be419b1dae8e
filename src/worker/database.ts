import mysql, { type Pool } from 'mysql2/promise';
import type { AppConfig } from '../config/index.js';
import { dbPoolTlsOptions } from '../config/production.js';
import { createPool, ensureDatabase, type DbConfig } from '../db/pool.js';

type DbSettings = DbConfig &
  Partial<Pick<AppConfig, 'DB_TLS' | 'DB_TLS_CA_FILE' | 'DB_TLS_CERT_FILE' | 'DB_TLS_KEY_FILE'>>;

/**
 * The database pool of a worker or tool, over TLS when DB_TLS* is set (certificates checked at
 * start, named when wrong). `create` makes the database first if it is missing.
 */
export async function openDatabase(cfg: DbSettings, opts: { create: boolean }): Promise<Pool> {
  const tls = dbPoolTlsOptions(cfg);
  if (opts.create) {
    if (!tls.ssl) await ensureDatabase(cfg);
    else {
      // src/db/pool.ts's ensureDatabase has no TLS option: the same statement, over TLS.
      if (!/^[A-Za-z0-9_]{1,64}$/.test(cfg.DB_NAME)) throw new Error('DB_NAME: invalid database name');
      const conn = await mysql.createConnection({
        host: cfg.DB_HOST,
        port: cfg.DB_PORT,
        user: cfg.DB_USER,
        password: cfg.DB_PASSWORD,
        ssl: tls.ssl,
      });
      try {
        await conn.query(
          `CREATE DATABASE IF NOT EXISTS \`${cfg.DB_NAME}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`,
        );
      } finally {
        await conn.end();
      }
    }
  }
  return createPool(cfg, tls);
}

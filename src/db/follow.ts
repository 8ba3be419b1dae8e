import type { Pool, PoolConnection } from 'mysql2/promise';

/**
 * Rows elsewhere that must follow ours in the same transaction: the migration engine's view of
 * each volume (src/engine-contract/engine-rows.ts) in the database it shares with us. `around`
 * runs one write of our rows and brings those rows up to date before the transaction commits, so
 * no reader ever sees the two disagree. src/db knows only this interface.
 */
export interface RowFollower {
  around<T>(tx: PoolConnection, volumeIds: readonly string[], write: () => Promise<T>): Promise<T>;
}

/**
 * Run `fn` in one transaction on a connection of its own: committed if it returns, else rolled
 * back. READ COMMITTED: a lookup of a row that is not there takes no gap lock, so writers of
 * different volumes (each inserting its own rows) never deadlock on each other's gaps.
 */
export async function inTransaction<T>(pool: Pool, fn: (tx: PoolConnection) => Promise<T>): Promise<T> {
  const conn = await pool.getConnection();
  try {
    await conn.query('SET TRANSACTION ISOLATION LEVEL READ COMMITTED');
    await conn.beginTransaction();
    const result = await fn(conn);
    await conn.commit();
    return result;
  } catch (err) {
    await conn.rollback().catch(() => {});
    throw err;
  } finally {
    conn.release();
  }
}

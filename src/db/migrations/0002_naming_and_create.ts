import type { SqlMigration } from './index.js';

/**
 * VM names compare in the database exactly as in the code: byte for byte, trailing spaces
 * included. `utf8mb4_bin` is a PAD SPACE collation (`'pgtest3 ' = 'pgtest3'` in its UNIQUE
 * index); the NO PAD binary collation is `utf8mb4_nopad_bin` on MariaDB and `utf8mb4_0900_bin`
 * on MySQL 8. And `refused`: an operation a check turned down before it changed anything; the
 * `create` operation, whose volume id is unknown (NULL) until CloudStack has created it.
 */
const enumOf = (values: readonly string[]) => values.map((v) => `'${v}'`).join(',');
/**
 * The lists as they were when this migration shipped, frozen: a migration is history. A later
 * value comes with a migration of its own (and reaches databases migrated before it); the
 * migrations test checks the columns against the code's lists after the last one.
 */
const STATUSES_0002 = [
  'running',
  'completed',
  'failed',
  'compensated',
  'refused',
  'needs_attention',
  'cancelled',
];
const TYPES_0002 = ['create', 'attach', 'detach', 'failover', 'failback', 'delete', 'repair'];

export const namingAndCreate: SqlMigration = {
  name: '0002_naming_and_create',
  up: [
    (server) =>
      `ALTER TABLE device_mappings MODIFY source_vm_name VARCHAR(255) CHARACTER SET utf8mb4
         COLLATE ${server === 'mariadb' ? 'utf8mb4_nopad_bin' : 'utf8mb4_0900_bin'} NOT NULL`,
    `ALTER TABLE volume_operations MODIFY status ENUM(${enumOf(STATUSES_0002)}) NOT NULL`,
    `ALTER TABLE volume_operations MODIFY type ENUM(${enumOf(TYPES_0002)}) NOT NULL`,
    'ALTER TABLE volume_operations MODIFY volume_id CHAR(36) NULL',
    // The engine's snapshot bookkeeping (one CloudStack snapshot per volume, grouped by the
    // engine's VM context), which the old daemon kept on its mapping rows.
    `CREATE TABLE volume_snapshots (
       volume_id CHAR(36) NOT NULL PRIMARY KEY,
       vm_context_id VARCHAR(191) NOT NULL,
       snapshot_id VARCHAR(191) NOT NULL,
       snapshot_name VARCHAR(255) NULL,
       disk_id VARCHAR(64) NULL,
       snapshot_status VARCHAR(50) NOT NULL DEFAULT 'ready',
       created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
       updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
       KEY ix_snapshots_context (vm_context_id)
     ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
  ],
  down: [
    'DROP TABLE IF EXISTS volume_snapshots',
    "DELETE FROM volume_operation_steps WHERE operation_id IN (SELECT operation_id FROM volume_operations WHERE type = 'create' OR volume_id IS NULL)",
    "DELETE FROM volume_operations WHERE type = 'create' OR volume_id IS NULL",
    'ALTER TABLE volume_operations MODIFY volume_id CHAR(36) NOT NULL',
    `ALTER TABLE volume_operations MODIFY type
       ENUM('attach','detach','failover','failback','delete','repair') NOT NULL`,
    "UPDATE volume_operations SET status = 'failed' WHERE status = 'refused'",
    `ALTER TABLE volume_operations MODIFY status
       ENUM('running','completed','failed','compensated','needs_attention','cancelled') NOT NULL`,
    'ALTER TABLE device_mappings MODIFY source_vm_name VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL',
  ],
};

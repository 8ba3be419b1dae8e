import { OPERATION_STATUSES } from '../../domain/operations.js';
import type { SqlMigration } from './index.js';

/**
 * VM names compare in the database exactly as in the code: byte for byte, trailing spaces
 * included. `utf8mb4_bin` is a PAD SPACE collation (`'pgtest3 ' = 'pgtest3'` in its UNIQUE
 * index); the NO PAD binary collation is `utf8mb4_nopad_bin` on MariaDB and `utf8mb4_0900_bin`
 * on MySQL 8. And `refused`: an operation a check turned down before it changed anything.
 */
const enumOf = (values: readonly string[]) => values.map((v) => `'${v}'`).join(',');

export const namingRule: SqlMigration = {
  name: '0002_naming_rule',
  up: [
    (server) =>
      `ALTER TABLE device_mappings MODIFY source_vm_name VARCHAR(255) CHARACTER SET utf8mb4
         COLLATE ${server === 'mariadb' ? 'utf8mb4_nopad_bin' : 'utf8mb4_0900_bin'} NOT NULL`,
    `ALTER TABLE volume_operations MODIFY status ENUM(${enumOf(OPERATION_STATUSES)}) NOT NULL`,
  ],
  down: [
    `ALTER TABLE volume_operations MODIFY status
       ENUM('running','completed','failed','compensated','needs_attention','cancelled') NOT NULL`,
    'ALTER TABLE device_mappings MODIFY source_vm_name VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL',
  ],
};

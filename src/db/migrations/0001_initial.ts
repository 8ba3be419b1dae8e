import type { SqlMigration } from './index.js';

export const initial: SqlMigration = {
  name: '0001_initial',
  up: [
    // Desired state of every volume the appliance manages. persistent_device_name is UNIQUE (the
    // seed's plain index allowed duplicates) and NULL only for rows adopted from the old daemon
    // until reconciliation names them. `version` is the compare-and-swap guard against writers
    // outside Temporal.
    `CREATE TABLE device_mappings (
       id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
       volume_id CHAR(36) NOT NULL,
       source_vm_name VARCHAR(255) NOT NULL,
       disk_index INT UNSIGNED NOT NULL,
       appliance_vm_id CHAR(36) NOT NULL,
       location ENUM('appliance','target','detached') NOT NULL DEFAULT 'detached',
       target_vm_id CHAR(36) NULL,
       device_path VARCHAR(64) NULL,
       virtio_serial CHAR(20) NOT NULL,
       size_bytes BIGINT UNSIGNED NOT NULL,
       persistent_device_name VARCHAR(64) NULL,
       mapper_path VARCHAR(128) NULL,
       dm_state ENUM('linear','error','absent') NOT NULL DEFAULT 'absent',
       last_operation_id VARCHAR(64) NULL,
       created_by_operation_id VARCHAR(64) NULL,
       version INT UNSIGNED NOT NULL DEFAULT 0,
       created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
       updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
       UNIQUE KEY uq_mappings_volume (volume_id),
       UNIQUE KEY uq_mappings_persistent_name (persistent_device_name),
       UNIQUE KEY uq_mappings_source_disk (source_vm_name, disk_index),
       KEY ix_mappings_appliance (appliance_vm_id),
       KEY ix_mappings_device (device_path)
     ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
    `CREATE TABLE nbd_exports (
       id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
       export_name VARCHAR(96) NOT NULL,
       volume_id CHAR(36) NOT NULL,
       target_path VARCHAR(128) NOT NULL,
       config_path VARCHAR(512) NOT NULL,
       backend ENUM('nbdkit-dir','nbd-server') NOT NULL,
       status ENUM('active','error') NOT NULL DEFAULT 'active',
       created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
       updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
       UNIQUE KEY uq_exports_name (export_name),
       UNIQUE KEY uq_exports_volume (volume_id),
       CONSTRAINT fk_exports_volume FOREIGN KEY (volume_id) REFERENCES device_mappings (volume_id)
     ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
    // The audit trail: one row per operation (workflow run), one per saga step and per
    // compensation. Kept after the volume is deleted and after Temporal's retention expires.
    `CREATE TABLE volume_operations (
       operation_id VARCHAR(64) NOT NULL PRIMARY KEY,
       workflow_id VARCHAR(128) NOT NULL,
       run_id VARCHAR(64) NULL,
       type ENUM('attach','detach','failover','failback','delete','repair') NOT NULL,
       volume_id CHAR(36) NOT NULL,
       vm_id CHAR(36) NULL,
       status ENUM('running','completed','failed','compensated','needs_attention','cancelled') NOT NULL,
       request JSON NULL,
       response JSON NULL,
       error TEXT NULL,
       started_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
       updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
       finished_at DATETIME(3) NULL,
       KEY ix_ops_volume (volume_id, started_at),
       KEY ix_ops_status (status, started_at),
       KEY ix_ops_type (type, started_at)
     ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
    `CREATE TABLE volume_operation_steps (
       id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
       operation_id VARCHAR(64) NOT NULL,
       seq INT UNSIGNED NOT NULL,
       step VARCHAR(64) NOT NULL,
       phase ENUM('forward','compensation','operator') NOT NULL,
       status ENUM('started','completed','failed','skipped') NOT NULL,
       error TEXT NULL,
       details JSON NULL,
       started_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
       finished_at DATETIME(3) NULL,
       UNIQUE KEY uq_steps (operation_id, seq),
       CONSTRAINT fk_steps_operation FOREIGN KEY (operation_id) REFERENCES volume_operations (operation_id)
     ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
    `CREATE TABLE reconcile_runs (
       id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
       workflow_id VARCHAR(128) NOT NULL,
       run_id VARCHAR(64) NOT NULL,
       appliance_vm_id CHAR(36) NOT NULL,
       dry_run BOOLEAN NOT NULL,
       status ENUM('running','completed','failed') NOT NULL,
       findings INT UNSIGNED NOT NULL DEFAULT 0,
       repairs INT UNSIGNED NOT NULL DEFAULT 0,
       started_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
       finished_at DATETIME(3) NULL,
       UNIQUE KEY uq_reconcile_run (run_id),
       KEY ix_reconcile_appliance (appliance_vm_id, started_at)
     ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
    `CREATE TABLE reconcile_findings (
       id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
       reconcile_run_id BIGINT UNSIGNED NOT NULL,
       kind VARCHAR(64) NOT NULL,
       volume_id CHAR(36) NULL,
       subject VARCHAR(255) NOT NULL,
       decision ENUM('repair','report','busy','dry-run') NOT NULL,
       outcome VARCHAR(32) NULL,
       remedy TEXT NULL,
       details JSON NULL,
       created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
       KEY ix_findings_run (reconcile_run_id),
       CONSTRAINT fk_findings_run FOREIGN KEY (reconcile_run_id) REFERENCES reconcile_runs (id)
     ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
  ],
  down: [
    'DROP TABLE IF EXISTS reconcile_findings',
    'DROP TABLE IF EXISTS reconcile_runs',
    'DROP TABLE IF EXISTS volume_operation_steps',
    'DROP TABLE IF EXISTS volume_operations',
    'DROP TABLE IF EXISTS nbd_exports',
    'DROP TABLE IF EXISTS device_mappings',
  ],
};

import type { SqlMigration } from './index.js';

/**
 * What the engine's view of a volume needs and our row did not keep: the CloudStack device id
 * of its current attachment (the old daemon's `cloudstack_device_id`, 0 for a root disk), set
 * by the step that records where the volume is. NULL while detached or not known (rows written
 * before this migration, until their next move).
 */
export const engineView: SqlMigration = {
  name: '0003_engine_view',
  up: ['ALTER TABLE device_mappings ADD COLUMN cloudstack_device_id INT UNSIGNED NULL AFTER target_vm_id'],
  down: ['ALTER TABLE device_mappings DROP COLUMN cloudstack_device_id'],
};

/**
 * What a persistent name becomes on the appliance: its dm device and its NBD export. No
 * dependencies, so the workflow bundle can use it; names reach it validated (naming.ts).
 */
export const EXPORT_PREFIX = 'migration-vol-';

/** dm UUID prefix of the devices we create: ownership is explicit, never guessed from names. */
export const DM_UUID_PREFIX = 'VOLLIFE-';

export const exportNameOf = (persistentName: string): string => EXPORT_PREFIX + persistentName;

export const mapperPathOf = (persistentName: string): string => `/dev/mapper/${persistentName}`;

/**
 * The name the migration engine knows a volume's export by. Its code takes the volume id from an
 * export name by stripping the prefix (and from that, the VMware disk key the replication writes
 * to), so every export is also served under this name, over the same dm device, and /api/v1
 * reports it (docs/engine-contract.md).
 */
export const engineExportNameOf = (volumeId: string): string => EXPORT_PREFIX + volumeId.toLowerCase();

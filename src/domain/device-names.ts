/**
 * What a persistent name becomes on the appliance: its dm device and its NBD export. No
 * dependencies, so the workflow bundle can use it; names reach it validated (naming.ts).
 */
export const EXPORT_PREFIX = 'migration-vol-';

export const exportNameOf = (persistentName: string): string => EXPORT_PREFIX + persistentName;

export const mapperPathOf = (persistentName: string): string => `/dev/mapper/${persistentName}`;

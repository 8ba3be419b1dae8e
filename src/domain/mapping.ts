/**
 * The vocabulary of a volume's recorded state, defined once: the types, the zod enums of the
 * API and the activities, and the database's ENUM columns (checked by the migrations test) all
 * come from these lists. Dependency-free, so the workflow bundle uses it too.
 */

/** Where a volume is now, as the database records it (desired state for the device layer). */
export const VOLUME_LOCATIONS = ['appliance', 'target', 'detached'] as const;
export type VolumeLocation = (typeof VOLUME_LOCATIONS)[number];

/** What the dm device should be: linear over the current device, an error target, or gone. */
export const DM_STATES = ['linear', 'error', 'absent'] as const;
export type DmState = (typeof DM_STATES)[number];

/** How the appliance serves its exports: nbdkit over a directory of symlinks, or nbd-server conf.d. */
export const EXPORT_BACKENDS = ['nbdkit-dir', 'nbd-server'] as const;
export type ExportBackendKind = (typeof EXPORT_BACKENDS)[number];

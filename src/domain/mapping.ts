/** Where a volume is now, as the database records it (desired state for the device layer). */
export type VolumeLocation = 'appliance' | 'target' | 'detached';

/** What the dm device should be: linear over the current device, an error target, or gone. */
export type DmState = 'linear' | 'error' | 'absent';
